# The compiled cffi module (built from csrc/ by csrc/ffi_build.py).
from typing import Any

ffi: Any
lib: Any
