"""Python's overhead per generated token: Model.generate's loop vs the same loop in C++.

Writes a random GGUF with GPT-J-6B's shapes and a few layers (a token then takes tens of
ms, as with real models), then alternates two loops with the same sampler and seed, which
yield the same tokens:

- C++: ``_core.Session.generate_loop`` -- evaluate, sample, feed back, nothing else;
- Python: ``Session.generate`` -- the same steps, plus text decoding, stop-string checks
  and timings in Python, one call into the engine per token.

Prints the median ms/token of each and the overhead, measured two ways: the difference of
the medians (noisy on a busy machine) and, within the Python runs, the wall time per token
minus the engine's own time per step (what Python adds, immune to the machine's noise).

    python benchmarks/python_overhead.py --layers 1 --tokens 48 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from random_gguf import write_random_gptj

from gptj_ggml import Model, SamplingParams

PROMPT = "The history of the transformer architecture began"


def cpp_loop(model: Model, prompt: list[int], n: int, params: SamplingParams, seed: int) -> tuple[list[int], float]:
    session = model.session()
    sampler = params.sampler(model.n_vocab, seed)
    tokens, _prompt_ms, generation_ms = session._core.generate_loop(prompt, n, sampler)
    return tokens, generation_ms / (n - 1)


def python_loop(model: Model, prompt: list[int], n: int, params: SamplingParams, seed: int) -> tuple[list[int], float, float]:
    session = model.session()
    generation = session.generate(
        prompt, max_tokens=n, seed=seed, ignore_eos=True, stop=["\n\n\n"], **{k: v for k, v in params.__dict__.items() if k != "logit_bias"}
    )
    tokens = []
    first_at = 0.0
    for token in generation:
        if not tokens:
            first_at = time.perf_counter()
        tokens.append(token.id)
    wall = (time.perf_counter() - first_at) * 1e3 / (n - 1)
    engine = generation.timings.generation_ms / (n - 1)  # measured in C++ per step
    return tokens, wall, engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dir", default=None, help="where to write the model (deleted afterwards)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = write_random_gptj(Path(folder) / "random.gguf", args.layers, "f16")
        model = Model(path, n_ctx=256, n_threads=args.threads)
        prompt = model.tokenize(PROMPT)
        eos = model.tokenizer.eos_id
        params = SamplingParams(logit_bias={eos: float("-inf")})  # the defaults; never end early
        cpp_loop(model, prompt, 4, params, 0)  # warm the page cache

        cpp, python, engine = [], [], []
        for repeat in range(args.repeats):
            # Alternate which loop runs first, so a drift in the machine's speed favours neither.
            if repeat % 2:
                py_tokens, py_ms, engine_ms = python_loop(model, prompt, args.tokens, params, seed=repeat)
                cpp_tokens, cpp_ms = cpp_loop(model, prompt, args.tokens, params, seed=repeat)
            else:
                cpp_tokens, cpp_ms = cpp_loop(model, prompt, args.tokens, params, seed=repeat)
                py_tokens, py_ms, engine_ms = python_loop(model, prompt, args.tokens, params, seed=repeat)
            assert py_tokens == cpp_tokens, "the two loops must produce the same tokens"
            cpp.append(cpp_ms)
            python.append(py_ms)
            engine.append(engine_ms)

        c, p = statistics.median(cpp), statistics.median(python)
        added = statistics.median(w - e for w, e in zip(python, engine))
        print(f"model: random GPT-J-6B shapes, {args.layers} layer(s), f16, {model.n_threads} threads; "
              f"{args.tokens} tokens x {args.repeats} runs, default sampling")
        print("| loop | ms/token (median) |")
        print("|---|---|")
        print(f"| C++ (generate_loop) | {c:.2f} |")
        print(f"| Python (Session.generate), wall | {p:.2f} |")
        print(f"| Python (Session.generate), engine's own steps | {statistics.median(engine):.2f} |")
        print(f"difference of medians: {(p / c - 1) * 100:+.2f}%")
        print(f"Python's own time per token: {added * 1e3:.0f} us = {added / statistics.median(engine) * 100:.3f}% of a step")


if __name__ == "__main__":
    main()
