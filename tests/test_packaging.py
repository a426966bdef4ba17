"""The installed package finds ggml by itself and agrees with the ggml it was built for."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import tomllib

import gptj_ggml
from gptj_ggml._native import core

ROOT = Path(__file__).resolve().parent.parent


def pinned_libggml_requirements() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = pyproject["build-system"]["requires"] + pyproject["project"]["dependencies"]
    return [r for r in requirements if r.startswith("libggml-python")]


def test_libggml_is_pinned_exactly_and_identically_for_build_and_run():
    pins = pinned_libggml_requirements()
    assert len(pins) == 2 and pins[0] == pins[1] and "==" in pins[0]
    assert pins[0] in (ROOT / "third_party" / "ggml" / "VERSION").read_text()


def test_the_ggml_in_use_is_the_pinned_release():
    pinned = pinned_libggml_requirements()[0].split("==")[1]
    assert metadata.version("libggml-python") == pinned
    assert pinned.startswith(core.ggml_version())


def test_extension_imports_from_any_directory(tmp_path):
    code = "import gptj_ggml, gptj_ggml._native as n; print(n.core.__file__); gptj_ggml.Model"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "_core" in result.stdout


def test_extension_runpath_points_at_libggml_beside_it():
    extension = Path(core.__file__)
    dynamic = subprocess.run(["readelf", "-d", str(extension)], capture_output=True, text=True, check=True).stdout
    runpath = re.search(r"R(?:UN)?PATH.*\[(.*)\]", dynamic)
    assert runpath is not None
    assert "$ORIGIN/../libggml/lib64" in runpath.group(1).split(":")

    import libggml

    if Path(libggml.__file__).parent.parent == extension.parent.parent:
        # Installed side by side (a normal venv): the loader resolves ggml through the rpath alone.
        linked = subprocess.run(["ldd", str(extension)], capture_output=True, text=True, check=True).stdout
        ggml_lines = [line for line in linked.splitlines() if "libggml" in line]
        assert len(ggml_lines) == 3 and not any("not found" in line for line in ggml_lines)


def test_public_names():
    assert {"Model", "Token", "GptjError", "ModelFormatError", "ConversionError"} <= set(gptj_ggml.__all__)


def test_dir_lists_the_public_names_and_not_the_imports():
    names = dir(gptj_ggml)

    assert set(gptj_ggml.__all__) | {"__version__"} == set(names)
    for helper in ("Any", "TYPE_CHECKING", "annotations"):
        assert not hasattr(gptj_ggml, helper), helper


def test_version_is_the_one_in_pyproject():
    assert gptj_ggml.__version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
