"""Mutants of real GGUF files (tests/gguf_fuzz.py: byte flips, truncations, and edits of counts,
string and array lengths, types, shapes, offsets and hyper-parameter values) are refused with
ModelFormatError, ValueError or FileNotFoundError, or load and evaluate: never a signal, another
exception type, or seconds for a file that takes milliseconds.

Each batch runs in a child process, so a crash names its case rather than stopping the run;
``GPTJ_FUZZ_SEED`` picks another seed, and benchmarks/fuzz_gguf.py runs thousands of cases."""

from __future__ import annotations

import collections
import os

import pytest

import gguf_fuzz

SEED = int(os.environ.get("GPTJ_FUZZ_SEED", "20251201"))
N_CASES = 300
#: Refusing a mutant takes milliseconds (80,000 keys took 37 s before); one that loads is also
#: evaluated, which takes up to 0.7 s here, 3 s on a busy machine. Loose bounds, for busy CI.
MAX_SECONDS_TO_REFUSE = 2.0
MAX_SECONDS_PER_CASE = 10.0


@pytest.fixture(scope="module")
def results(tiny_model_path):
    files = [tiny_model_path("f16"), tiny_model_path("q4_0")]
    return gguf_fuzz.run_in_subprocesses(files, SEED, first=0, count=N_CASES, batch=100)


def _report(failures: list[dict]) -> str:
    return "\n".join(
        f"case {r['case']} (reproduce: python tests/gguf_fuzz.py --seed {SEED} --first {r['case']} FILES): "
        f"{r['outcome']}: {r.get('mutation')}: {r.get('error', '')[-500:]}"
        for r in failures
    )


def test_every_mutant_is_refused_with_a_format_error_or_loads(results):
    assert len(results) == N_CASES
    failures = [r for r in results if not r["ok"]]
    assert not failures, _report(failures)


def test_no_mutant_takes_time_out_of_proportion_to_the_file(results):
    slow = [r for r in results if r.get("seconds", 0) > MAX_SECONDS_PER_CASE]
    slow += [r for r in results if r["outcome"] == "refused" and r["seconds"] > MAX_SECONDS_TO_REFUSE]
    assert not slow, _report(slow)


def test_the_mutations_reach_every_outcome(results):
    # A fuzz that only ever trips the first check proves little: some mutants must load.
    outcomes = collections.Counter(r["outcome"] for r in results)
    assert outcomes["refused"] > N_CASES // 2 and outcomes["loaded"] > 10, outcomes
