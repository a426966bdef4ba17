"""``gptj-ggml run``: stream a completion to stdout, then print timings to stderr."""

from __future__ import annotations

import argparse
import sys
import time


def add_run(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="generate text from a prompt",
        description="Generate a continuation of PROMPT with a GPT-J GGUF model, streaming it to stdout; "
        "timings go to stderr.",
    )
    parser.add_argument("-m", "--model", required=True, help="the .gguf model file")
    parser.add_argument("-p", "--prompt", required=True, help="the text to continue")
    parser.add_argument("-n", "--max-tokens", type=int, default=128, help="the most tokens to generate (128)")
    parser.add_argument("--temp", type=float, default=0.0, help="sampling temperature; 0 (default) is greedy")
    parser.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    parser.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    parser.add_argument("--ctx", type=int, default=None, help="context size in tokens (default: the model's)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .model import Model

    start = time.perf_counter()
    model = Model(args.model, n_ctx=args.ctx, n_threads=args.threads)
    loaded = time.perf_counter()
    prompt_ids = model.tokenize(args.prompt)

    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    first_token_at = None
    n_generated = 0
    for token in model.generate(prompt_ids, max_tokens=args.max_tokens, temperature=args.temp, seed=args.seed):
        if first_token_at is None:
            first_token_at = time.perf_counter()
        n_generated += 1
        sys.stdout.write(token.text)
        sys.stdout.flush()
    done = time.perf_counter()
    sys.stdout.write("\n")

    # The first token's time is the prompt's evaluation (plus one sampling step); the rest
    # is one evaluation per token.
    prompt_ms = ((first_token_at or done) - loaded) * 1e3
    lines = [
        f"load:       {(loaded - start) * 1e3:9.1f} ms",
        f"prompt:     {prompt_ms:9.1f} ms for {len(prompt_ids)} tokens ({len(prompt_ids) / max(prompt_ms, 1e-9) * 1e3:.1f} tokens/s)",
    ]
    if n_generated > 1:
        gen_ms = (done - first_token_at) * 1e3
        per_token = gen_ms / (n_generated - 1)
        lines.append(
            f"generation: {gen_ms:9.1f} ms for {n_generated - 1} tokens ({per_token:.2f} ms/token, {1e3 / per_token:.1f} tokens/s)"
        )
    lines.append(f"total:      {(done - start) * 1e3:9.1f} ms, {model.n_threads} threads")
    print("\n".join(lines), file=sys.stderr)
    return 0
