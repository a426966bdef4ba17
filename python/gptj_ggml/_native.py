"""Loads the compiled engine (``_core``) and the ggml libraries it links.

The extension finds ggml's shared libraries through its rpath, which points at the
``libggml`` package installed beside it in the same site-packages. When the two live in
different site-packages (a ``--system-site-packages`` venv, a user install), we load the
libraries from wherever ``libggml`` is first, so the dynamic linker finds them by soname.
"""

from __future__ import annotations

import ctypes
import importlib
from pathlib import Path
from types import ModuleType

# Order matters: each library needs the ones before it.
_GGML_LIBRARIES = ("libggml-base.so.0", "libggml-cpu.so.0", "libggml.so.0")


def _preload_ggml() -> None:
    import libggml  # the libggml-python package

    root = Path(libggml.__file__).parent
    for name in _GGML_LIBRARIES:
        for folder in ("lib64", "lib"):
            path = root / folder / name
            if path.exists():
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                break


def load_core() -> ModuleType:
    try:
        return importlib.import_module("gptj_ggml._core")
    except ImportError as first_error:
        if "libggml" not in str(first_error):
            raise
        _preload_ggml()
        return importlib.import_module("gptj_ggml._core")


core = load_core()

# A cap on our kernels' instruction sets that is not understood would silently measure the wrong path.
if core.isa_cap_error():
    raise ValueError(core.isa_cap_error())
