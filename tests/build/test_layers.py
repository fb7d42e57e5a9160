"""The C files of csrc/ call and include each other in layers, without a cycle (.ci/layers.py)."""

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


# The header rule, on a small tree of its own: dshm_lo.c (layer 0) and
# dshm_hi.c (layer 1, calls lo), their headers, and a base header.

FILES = {
    "ffi_build.py": 'CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"]\n',
    "dshm_base.h": "#ifndef B\n#define B\n#include <stdint.h>\n#endif\n",
    "dshm_lo.h": '#ifndef LO\n#define LO\n#include "dshm_base.h"\nint dshm_lo(void);\n#endif\n',
    "dshm_hi.h": '#ifndef HI\n#define HI\n#include "dshm_base.h"\n#include "dshm_lo.h"\n'
                 "static inline int dshm_hi_twice(void) { return 2 * dshm_lo(); }\nint dshm_hi(void);\n#endif\n",
    "dshm_lo.c": '#include "dshm_base.h"\n#include "dshm_lo.h"\nint dshm_lo(void) { return 1; }\n',
    "dshm_hi.c": '#include "dshm_lo.h"\n#include "dshm_hi.h"\nint dshm_hi(void) { return dshm_hi_twice(); }\n',
}


def run_on(tmp_path, **changes):
    csrc = tmp_path / "csrc"
    csrc.mkdir()
    for name, text in {**FILES, **changes}.items():
        if text is not None:
            (csrc / name).write_text(text)
    return subprocess.run([sys.executable, SCRIPT, str(tmp_path)], capture_output=True, text=True)


needs_tools = pytest.mark.skipif(
    not os.path.exists(SCRIPT) or not shutil.which(os.environ.get("CC", "gcc"))
    or not shutil.which(os.environ.get("NM", "nm")), reason="needs the script, gcc and nm")


@needs_tools
def test_headers_in_layers_pass(tmp_path):
    proc = run_on(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "headers:" in proc.stdout


@needs_tools
def test_header_of_a_higher_layer_fails(tmp_path):
    proc = run_on(tmp_path, **{"dshm_lo.c": '#include "dshm_hi.h"\nint dshm_lo(void) { return 1; }\n'})
    assert proc.returncode == 1
    assert "dshm_lo.c (layer 0) includes dshm_hi.h (layer 1): a header of a higher layer" in proc.stderr


@needs_tools
def test_header_of_the_same_layer_fails(tmp_path):
    proc = run_on(tmp_path, **{
        "dshm_side.h": '#include "dshm_base.h"\nint dshm_side(void);\n',
        "dshm_side.c": '#include "dshm_lo.h"\nint dshm_side(void) { return 3; }\n'})
    assert proc.returncode == 1
    assert "dshm_side.c (layer 0) includes dshm_lo.h (layer 0)" in proc.stderr
    assert "sideways" in proc.stderr


@needs_tools
def test_base_header_including_a_layer_header_fails(tmp_path):
    proc = run_on(tmp_path, **{"dshm_types.h": '#include "dshm_lo.h"\n'})
    assert proc.returncode == 1
    assert "dshm_types.h (a base header) includes dshm_lo.h" in proc.stderr


@needs_tools
def test_include_cycle_fails(tmp_path):
    proc = run_on(tmp_path, **{"dshm_base.h": '#include "dshm_more.h"\n', "dshm_more.h": '#include "dshm_base.h"\n'})
    assert proc.returncode == 1
    assert "include cycle: dshm_base.h -> dshm_more.h -> dshm_base.h" in proc.stderr


@needs_tools
def test_prototype_in_the_wrong_header_fails(tmp_path):
    proc = run_on(tmp_path, **{"dshm_lo.h": '#include "dshm_base.h"\nint dshm_lo(void);\nint dshm_hi(void);\n'})
    assert proc.returncode == 1
    assert "dshm_lo.h declares dshm_hi, defined in dshm_hi.c" in proc.stderr


@needs_tools
def test_missing_header_fails(tmp_path):
    proc = run_on(tmp_path, **{"dshm_hi.c": FILES["dshm_hi.c"] + '#include "dshm_gone.h"\n'})
    assert proc.returncode != 0
    assert "dshm_gone.h" in proc.stderr
