"""Run batches of fuzz cases in a subprocess (fuzz.worker) and collect what each gave.

A case that crashes the converter (a signal, an abort) takes down only its worker: the batch
reports which case was running, and the caller goes on from the next one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
#: What a case may give; anything else is a bug (see fuzz.worker).
GOOD_OUTCOMES = ("refused", "loaded")


@dataclass
class Batch:
    reader: str
    seed: int
    first: int
    count: int
    results: list[dict] = field(default_factory=list)
    #: The case that was running when the worker died (None: it finished its batch).
    crashed_case: int | None = None
    returncode: int = 0
    stderr: str = ""

    @property
    def bad(self) -> list[dict]:
        """The results that are bugs, and a pseudo-result for a crash."""
        bad = [result for result in self.results if result.get("outcome") not in GOOD_OUTCOMES]
        if self.crashed_case is not None:
            bad.append({"case": self.crashed_case, "reader": self.reader, "seed": self.seed, "outcome": "crash",
                        "detail": f"worker exit code {self.returncode}; stderr: {self.stderr[-1500:]}"})  # fmt: skip
        return bad


def run_batch(fixtures: Path, reader: str, seed: int, first: int, count: int, timeout: float = 600) -> Batch:
    """Cases ``first`` .. ``first + count - 1`` of ``reader`` in one worker process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "fuzz.worker", "--fixtures", str(fixtures), "--reader", reader,
               "--seed", str(seed), "--first", str(first), "--count", str(count)]  # fmt: skip
    batch = Batch(reader, seed, first, count)
    try:
        process = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
        stdout, batch.stderr, batch.returncode = process.stdout, process.stderr, process.returncode
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
        batch.stderr, batch.returncode = f"timed out after {timeout} s", -9
    running = None
    for line in stdout.splitlines():
        record = json.loads(line)
        if "begin" in record:
            running = record["begin"]
        else:
            batch.results.append(record)
            running = None
    if batch.returncode != 0 or running is not None:
        batch.crashed_case = running if running is not None else first + len(batch.results)
    return batch


def reproduce_command(result: dict) -> str:
    """The command that runs this one case again."""
    return (f"PYTHONPATH=tests python -m fuzz.worker --fixtures FIXTURES --reader {result['reader']} "
            f"--seed {result['seed']} --first {result['case']} --count 1")  # fmt: skip
