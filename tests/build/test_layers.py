"""The C files of csrc/ call each other without a cycle (.ci/layers.py)."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, ".ci", "layers.py")


@pytest.mark.skipif(not os.path.isdir(os.path.join(REPO, "csrc")) or not os.path.exists(SCRIPT),
                    reason="not run from a source checkout (no csrc/)")
@pytest.mark.skipif(not shutil.which(os.environ.get("CC", "gcc")) or not shutil.which(os.environ.get("NM", "nm")),
                    reason="needs gcc and nm")
def test_no_call_cycle_among_c_files():
    proc = subprocess.run([sys.executable, SCRIPT, REPO], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "layers" in proc.stdout
