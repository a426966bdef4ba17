"""``gptj-ggml run``: stream a completion to stdout, then print timings to stderr."""

from __future__ import annotations

import argparse
import sys

from .sampling import SamplingParams

_DEFAULT = SamplingParams()


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
    parser.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    parser.add_argument("--ctx", type=int, default=None, help="context size in tokens (default: the model's)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--temp", type=float, default=_DEFAULT.temperature, help="temperature; 0 is greedy (%(default)s)")
    sampling.add_argument("--top-k", type=int, default=_DEFAULT.top_k, help="0: off (%(default)s)")
    sampling.add_argument("--top-p", type=float, default=_DEFAULT.top_p, help="1: off (%(default)s)")
    sampling.add_argument("--min-p", type=float, default=_DEFAULT.min_p, help="0: off (%(default)s)")
    sampling.add_argument("--typical-p", type=float, default=_DEFAULT.typical_p, help="1: off (%(default)s)")
    sampling.add_argument("--repeat-penalty", type=float, default=_DEFAULT.repeat_penalty, help="1: off (%(default)s)")
    sampling.add_argument("--repeat-last-n", type=int, default=_DEFAULT.repeat_last_n, help="-1: whole context (%(default)s)")
    sampling.add_argument("--presence-penalty", type=float, default=_DEFAULT.presence_penalty, help="(%(default)s)")
    sampling.add_argument("--frequency-penalty", type=float, default=_DEFAULT.frequency_penalty, help="(%(default)s)")
    sampling.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, printed)")
    parser.add_argument("--stop", action="append", default=[], help="stop at this text (repeatable)")
    parser.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .model import Model

    model = Model(args.model, n_ctx=args.ctx, n_threads=args.threads)
    generation = model.generate(
        args.prompt,
        max_tokens=args.max_tokens,
        temperature=args.temp,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        typical_p=args.typical_p,
        repeat_penalty=args.repeat_penalty,
        repeat_last_n=args.repeat_last_n,
        presence_penalty=args.presence_penalty,
        frequency_penalty=args.frequency_penalty,
        seed=args.seed,
        stop=args.stop,
        ignore_eos=args.ignore_eos,
    )
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    for token in generation:
        sys.stdout.write(token.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    print(generation.timings, file=sys.stderr)
    print(f"finish:     {generation.finish_reason}, seed {generation.seed}, {model.n_threads} threads", file=sys.stderr)
    return 0
