"""Fuzzing each converter reader: a damaged input is refused with a ConversionError, or it gives a
file that gptj_ggml.Model loads; never a crash, another exception, or a file the engine refuses.

The cases (tests/fuzz/cases.py) mutate tiny real checkpoints: config.json fields, tokenizer
entries, safetensors header JSON, pickle strides and opcodes of a .bin, legacy header integers,
and plain byte flips and truncations. Each reader's cases run in a subprocess, so a crash is
reported with its case instead of taking pytest down. A longer run: benchmarks/fuzz_convert.py.
"""

from __future__ import annotations

import pytest

from fuzz.cases import READERS
from fuzz.fixtures import write_fixtures
from fuzz.runner import reproduce_command, run_batch

CASES_PER_READER = 100
SEED = 0


@pytest.fixture(scope="module")
def fuzz_fixtures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-fixtures")
    write_fixtures(folder)
    return folder


@pytest.mark.parametrize("reader", READERS)
def test_damaged_inputs_are_refused_or_convert_to_a_loadable_file(fuzz_fixtures, reader):
    batch = run_batch(fuzz_fixtures, reader, SEED, first=0, count=CASES_PER_READER)

    report = "\n".join(
        f"case {bad['case']}: {bad['outcome']}: {bad.get('detail')}\n  mutations: {bad.get('mutations')}\n"
        f"  {reproduce_command(bad)}\n{bad.get('traceback', '')}"
        for bad in batch.bad
    )
    assert not batch.bad, f"fixtures in {fuzz_fixtures}\n{report}"
    assert len(batch.results) == CASES_PER_READER
    outcomes = {result["outcome"] for result in batch.results}
    assert outcomes == {"refused", "loaded"}, "the mutations should give both refused and valid inputs"
    # Time and memory in proportion to these kilobyte-sized inputs.
    slowest = max(batch.results, key=lambda result: result["seconds"])
    assert slowest["seconds"] < 5, slowest
    assert max(result["max_rss_mib"] for result in batch.results) < 512


def test_a_case_that_kills_the_worker_is_reported_with_its_number(fuzz_fixtures, monkeypatch):
    monkeypatch.setenv("GPTJ_FUZZ_ABORT_AT", "3")

    batch = run_batch(fuzz_fixtures, "config", SEED, first=0, count=6)

    assert [result["case"] for result in batch.results] == [0, 1, 2]
    assert batch.crashed_case == 3
    assert [bad["outcome"] for bad in batch.bad] == ["crash"]
