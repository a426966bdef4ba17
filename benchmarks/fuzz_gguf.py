"""The long run of the GGUF fuzz: thousands of mutants of the tiny test models, each opened and
used in a child process (tests/gguf_fuzz.py says what a mutant may do).

    .venv/bin/python benchmarks/fuzz_gguf.py --cases 5000 --seed 1

Prints the count of each outcome and every failure (with the command that reproduces it), and
exits with status 1 if there was one. The suite runs 300 cases of one seed (tests/test_gguf_fuzz.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import gguf_fuzz  # after the path is set: it lives in tests/

#: The fixtures the suite mutates, and the other outtypes the engine loads.
OUTTYPES = ("f16", "q4_0", "q8_0", "f32")


def build_fixtures(folder: Path, outtypes: tuple[str, ...]) -> list[Path]:
    from gptj_ggml.convert import convert_checkpoint

    from checkpoints import make_tiny_gptj

    checkpoint = make_tiny_gptj(folder / "checkpoint")
    return [convert_checkpoint(checkpoint, folder / f"tiny-{t}.gguf", outtype=t) for t in outtypes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=200, help="cases per child process")
    parser.add_argument("--outtypes", default=",".join(OUTTYPES), help="fixtures to mutate (comma-separated)")
    parser.add_argument("--json", type=Path, help="also write every case's result here, one JSON line each")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fuzz-gguf-") as folder:
        files = build_fixtures(Path(folder), tuple(args.outtypes.split(",")))
        started = time.perf_counter()
        results = []
        for first in range(0, args.cases, args.batch * 5):  # progress every five batches
            count = min(args.batch * 5, args.cases - first)
            results += gguf_fuzz.run_in_subprocesses(files, args.seed, first, count, batch=args.batch)
            print(f"{len(results)} cases, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started

    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in results))
    outcomes = collections.Counter(r["outcome"] for r in results)
    print(f"seed {args.seed}: {len(results)} cases in {elapsed:.0f} s ({', '.join(f.name for f in files)})")
    print(f"{'outcome':<32} {'cases':>7}")
    for outcome, n in outcomes.most_common():
        print(f"{outcome:<32} {n:>7}")
    slowest = max(results, key=lambda r: r.get("seconds", 0))
    print(f"slowest case: {slowest.get('seconds')} s ({slowest['mutation']})")
    failures = [r for r in results if not r["ok"]]
    for r in failures:
        print(f"FAILED case {r['case']}: {r['outcome']}: {r.get('mutation')}: {r.get('error', '')[-800:]}")
        print(f"  reproduce: python tests/gguf_fuzz.py --seed {args.seed} --first {r['case']} FILES ({args.outtypes})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
