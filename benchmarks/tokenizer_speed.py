"""Encode and decode speed of gptj_ggml's tokenizer against Hugging Face `tokenizers`, one thread each.

    python benchmarks/tokenizer_speed.py [--repeats 5]

The corpus mixes the multi-script test corpus (tests/data/tokenizer_corpus) with Python source
code from the standard library (code, comments and English docstrings), split into ~2 kB
documents as prompts would be. Both tokenizers produce the same ids (checked). "cold" is the first
pass over the corpus on a fresh tokenizer (empty piece caches), "warm" the best of the later ones.
"""

from __future__ import annotations

import os

# Before tokenizers is imported: its thread pool reads these once.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse
import inspect
import platform
import time
from collections.abc import Callable
from pathlib import Path

import tokenizers

from gptj_ggml.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FOLDER = ROOT / "tests" / "data" / "gptj-tokenizer"
CORPUS_FOLDER = ROOT / "tests" / "data" / "tokenizer_corpus"
STDLIB_MODULES = ["argparse", "inspect", "typing", "json.decoder", "email.message", "textwrap"]
DOCUMENT_CHARS = 2000


def corpus_documents() -> list[str]:
    texts = [path.read_bytes().decode("utf-8") for path in sorted(CORPUS_FOLDER.glob("*.txt"))] * 20
    for name in STDLIB_MODULES:
        module = __import__(name, fromlist=["_"])
        texts.append(inspect.getsource(module))
    documents = []
    for text in texts:
        documents.extend(text[i : i + DOCUMENT_CHARS] for i in range(0, len(text), DOCUMENT_CHARS))
    return documents


def seconds(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(first run, best of the later runs)."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times[0], min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    documents = corpus_documents()
    ours = Tokenizer.from_folder(TOKENIZER_FOLDER)
    reference = tokenizers.Tokenizer.from_file(str(TOKENIZER_FOLDER / "tokenizer.json"))

    ours_ids = [ours.encode(text, special=True) for text in documents]
    reference_ids = [reference.encode(text).ids for text in documents]
    assert ours_ids == reference_ids, "the tokenizers disagree on the benchmark corpus"
    n_tokens = sum(map(len, ours_ids))
    n_bytes = sum(len(text.encode()) for text in documents)

    # Fresh objects so that the first pass meets empty caches.
    ours = Tokenizer.from_folder(TOKENIZER_FOLDER)
    reference = tokenizers.Tokenizer.from_file(str(TOKENIZER_FOLDER / "tokenizer.json"))
    rows = []
    ours_cold, ours_warm = seconds(lambda: [ours.encode(text, special=True) for text in documents], args.repeats)
    ref_cold, ref_warm = seconds(lambda: [reference.encode(text) for text in documents], args.repeats)
    rows.append(("encode, first pass", ours_cold, ref_cold))
    rows.append(("encode, warm cache", ours_warm, ref_warm))
    whole = "".join(documents)
    rows.append(("encode, one long text",
                 *(min(seconds(run, args.repeats)) for run in (lambda: ours.encode(whole, special=True),
                                                             lambda: reference.encode(whole)))))
    rows.append(("decode, per document",
                 *(seconds(run, args.repeats)[1] for run in (
                     lambda: [ours.decode(ids) for ids in ours_ids],
                     lambda: [reference.decode(ids, skip_special_tokens=False) for ids in ours_ids]))))

    print(f"corpus: {len(documents)} documents, {n_bytes / 1e3:.0f} kB, {n_tokens} tokens; "
          f"{platform.processor() or platform.machine()}, tokenizers {tokenizers.__version__}, one thread each")
    print(f"{'operation':<24} {'gptj_ggml tok/s':>16} {'tokenizers tok/s':>17} {'ratio':>7}")
    for name, ours_seconds, reference_seconds in rows:
        print(f"{name:<24} {n_tokens / ours_seconds:>16,.0f} {n_tokens / reference_seconds:>17,.0f} "
              f"{reference_seconds / ours_seconds:>6.2f}x")


if __name__ == "__main__":
    main()
