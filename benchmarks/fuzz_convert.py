"""Long fuzz runs of the converter's readers (the regular suite runs 100 cases of each).

Writes the tiny fixtures of tests/fuzz/fixtures.py (needs torch), then runs ``--cases`` cases of
every reader (or those of ``--readers``) in worker subprocesses, ``--batch`` cases per process, a
crashed worker being replaced from the next case on. Prints a table of outcomes per reader and
every bad case (an exception other than ConversionError, a file the engine refuses, a file left
behind, a crash) with the command that reproduces it; exits 1 if there was one.

    python benchmarks/fuzz_convert.py --cases 2000 --seed 1 [--readers bin legacy] [--batch 250]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzz.cases import READERS
from fuzz.fixtures import write_fixtures
from fuzz.runner import GOOD_OUTCOMES, reproduce_command, run_batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="cases per reader")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--readers", nargs="+", choices=READERS, default=list(READERS))
    parser.add_argument("--batch", type=int, default=250, help="cases per worker process")
    parser.add_argument("--fixtures", type=Path, default=None, help="reuse fixtures written here before")
    parser.add_argument("--json", type=Path, default=None, help="write every result here, one JSON line each")
    args = parser.parse_args()

    fixtures = args.fixtures or Path(tempfile.mkdtemp(prefix="fuzz-fixtures-"))
    if not (fixtures / "safetensors").is_dir():
        write_fixtures(fixtures)
    started = time.perf_counter()
    counts: dict[str, collections.Counter] = {reader: collections.Counter() for reader in args.readers}
    bad: list[dict] = []
    slowest: dict[str, float] = collections.defaultdict(float)
    peak_rss: dict[str, int] = collections.defaultdict(int)
    results_file = open(args.json, "w") if args.json else None  # noqa: SIM115
    for reader in args.readers:
        first = 0
        while first < args.cases:
            batch = run_batch(fixtures, reader, args.seed, first, min(args.batch, args.cases - first))
            for result in batch.results:
                counts[reader][result["outcome"]] += 1
                slowest[reader] = max(slowest[reader], result.get("seconds", 0.0))
                peak_rss[reader] = max(peak_rss[reader], result.get("max_rss_mib", 0))
                if results_file:
                    results_file.write(json.dumps(result) + "\n")
            bad += batch.bad
            if batch.crashed_case is not None:
                counts[reader]["crash"] += 1
                first = batch.crashed_case + 1
            else:
                first += batch.count
    if results_file:
        results_file.close()

    outcomes = [*GOOD_OUTCOMES, "error", "unloadable", "leftover", "harness-error", "crash"]
    print(
        f"seed {args.seed}, {args.cases} cases per reader, {time.perf_counter() - started:.0f} s, fixtures {fixtures}"
    )
    print(f"{'reader':12}" + "".join(f"{name:>14}" for name in outcomes) + f"{'slowest s':>11}{'peak MiB':>10}")
    for reader in args.readers:
        row = "".join(f"{counts[reader][name]:>14}" for name in outcomes)
        print(f"{reader:12}{row}{slowest[reader]:>11.3f}{peak_rss[reader]:>10}")
    for result in bad:
        print(f"\n{result['reader']} case {result['case']}: {result['outcome']}: {result.get('detail')}")
        print(
            f"  mutations: {result.get('mutations')}\n  {reproduce_command(result).replace('FIXTURES', str(fixtures))}"
        )
        if result.get("traceback"):
            print(result["traceback"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
