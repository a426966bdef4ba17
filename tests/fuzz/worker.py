"""Run fuzz cases of the converter and report each as a JSON line (run in a subprocess).

    python -m fuzz.worker --fixtures DIR --reader bin --seed 0 --first 0 --count 50

(with ``tests/`` on PYTHONPATH). Before each case a line ``{"begin": index}`` is printed and
flushed, so that if the case kills the process (a signal), the caller knows which one did. After
it, one line with its outcome:

- ``refused``: a ConversionError, and nothing was left in the output folder;
- ``loaded``: converted, and ``gptj_ggml.Model`` loads the file;
- ``error``: any other exception (a bug: the traceback is included);
- ``unloadable``: converted, but the engine refuses the file (a bug: the converter must refuse it);
- ``leftover``: refused, but a file was left in the output folder (a bug);
- ``harness-error``: the case could not be made (a bug of the fuzzer).

The line also has the case's mutations, its time and the process's peak RSS so far.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from gptj_ggml import Model
from gptj_ggml.convert import convert_checkpoint
from gptj_ggml.errors import ConversionError

from .cases import READERS, make_case


def fixture_paths(folder: Path) -> dict[str, Path]:
    """The fixtures write_fixtures(folder) made, by name."""
    return {
        "safetensors": folder / "safetensors",
        "bin": folder / "bin",
        "legacy": folder / "ggml-model-f16.bin",
        "legacy-q4_0": folder / "ggml-model-q4_0.bin",
    }


def run_case(reader: str, seed: int, index: int, fixtures: dict[str, Path], work: Path) -> dict:
    started = time.perf_counter()
    try:
        case = make_case(reader, seed, index, fixtures, work)
    except Exception:  # noqa: BLE001 - a bug of the fuzzer itself, reported as such
        return {
            "case": index,
            "reader": reader,
            "seed": seed,
            "outcome": "harness-error",
            "traceback": traceback.format_exc(),
        }
    out_dir = work / "out"
    out_dir.mkdir()
    result: dict = {"case": index, "reader": reader, "seed": seed, "outtype": case.outtype, "mutations": case.mutations}
    try:
        convert_checkpoint(case.src, out_dir / "model.gguf", outtype=case.outtype)
    except ConversionError as error:
        left = sorted(path.name for path in out_dir.iterdir())
        result.update(outcome="leftover" if left else "refused", detail=str(error)[:400], left=left)
    except Exception as error:  # noqa: BLE001 - reporting it is the point
        result.update(
            outcome="error", detail=f"{type(error).__name__}: {error}"[:400], traceback=traceback.format_exc()
        )
    else:
        try:
            Model(out_dir / "model.gguf", n_threads=1)
            result.update(outcome="loaded")
        except Exception as error:  # noqa: BLE001
            result.update(outcome="unloadable", detail=f"{type(error).__name__}: {error}"[:400])
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["max_rss_mib"] = _peak_rss_mib()
    return result


def _peak_rss_mib() -> int:
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would count the parent's memory at fork.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, required=True)
    parser.add_argument("--reader", choices=READERS, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args(argv)
    fixtures = fixture_paths(args.fixtures)
    root = Path(tempfile.mkdtemp(prefix=f"fuzz-{args.reader}-"))
    # A test of the harness itself: die like a crashing converter would, at this case.
    abort_at = int(os.environ.get("GPTJ_FUZZ_ABORT_AT", "-1"))
    try:
        for index in range(args.first, args.first + args.count):
            print(json.dumps({"begin": index}), flush=True)
            if index == abort_at:
                os.abort()
            work = root / str(index)
            work.mkdir()
            print(json.dumps(run_case(args.reader, args.seed, index, fixtures, work)), flush=True)
            shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
