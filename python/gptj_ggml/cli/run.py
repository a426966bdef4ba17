"""``gptj-ggml run``: stream a completion to stdout, then print timings to stderr.

With ``-i`` it is a conversation: each line read from stdin is appended to the transcript
(prompt, earlier lines and replies, as token ids) and the reply streams to stdout. The
session keeps the transcript in its cache, so each turn evaluates only its new tokens.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from ..errors import ContextFullError
from .cache_flags import add_cache_flags, cache_options_from_args
from .formatting import busy_cores_warning, format_bytes, peak_rss_bytes
from .lookup_flag import add_lookup_flag, lookup_from_args
from .sampling_flags import add_sampling_flags, sampling_from_args

if TYPE_CHECKING:
    from ..generation import Generation
    from ..session import Session

_CONTEXT_POLICIES = ("error", "stop", "shift")


def add_run(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="generate text from a prompt",
        description="Generate a continuation of PROMPT with a GPT-J GGUF model, streaming it to stdout; "
        "timings and peak memory go to stderr. With -i, read lines from stdin until end of input, "
        "each one a turn appended to the conversation, and stream a reply to each.",
    )
    parser.add_argument("-m", "--model", required=True, help="the .gguf model file")
    parser.add_argument("-p", "--prompt", default=None, help="the text to continue (with -i: the conversation's start)")
    parser.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="read turns from stdin, one per line, reusing the session between them",
    )
    parser.add_argument(
        "--chat",
        action="store_true",
        help="a conversation through the chat template: each line read from stdin is a user message "
        "(-p is then the system message)",
    )
    parser.add_argument(
        "--chat-template",
        metavar="NAME|FILE",
        default=None,
        help="with --chat: a named template (plain, gpt4all-j, dolly-v1, alpaca, pygmalion) or a file of Jinja "
        "source (default: the model's own, else plain)",
    )
    parser.add_argument("-n", "--max-tokens", type=int, default=128, help="the most tokens to generate (128)")
    parser.add_argument(
        "-t",
        "--threads",
        type=int,
        default=None,
        help="threads (default: up to the physical cores, fewer while other processes keep them busy)",
    )
    parser.add_argument("--ctx", type=int, default=None, help="context size in tokens (default: the model's)")
    parser.add_argument(
        "--context-full",
        choices=_CONTEXT_POLICIES,
        default=None,
        help="when the completion fills the context: error (the default) stops with an error, stop ends it there, "
        "shift drops the oldest half of the tokens after the first --keep and goes on (not with -i, where a "
        "conversation ends when it fills the context)",
    )
    parser.add_argument(
        "--keep", type=int, default=0, metavar="N", help="with --context-full shift: keep the first N tokens (0)"
    )
    parser.add_argument(
        "--no-mmap",
        action="store_true",
        help="copy the weights into memory (huge pages) instead of mapping the file: slower load; faster tokens "
        "when the page cache holds the file in small pages",
    )
    add_cache_flags(parser)
    sampling = add_sampling_flags(parser)
    sampling.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, printed)")
    parser.add_argument("--stop", action="append", default=[], help="stop at this text (repeatable)")
    parser.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-text")
    add_lookup_flag(parser, "; the timings then count the drafted and accepted tokens")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .._native import core
    from ..chat import resolve_template
    from ..model import Model
    from .run_chat import converse_with_template

    if args.prompt is None and not (args.interactive or args.chat):
        raise ValueError("run needs a prompt (-p TEXT), or -i / --chat to read turns from stdin")
    if args.chat_template is not None and not args.chat:
        raise ValueError("--chat-template needs --chat")
    lookup = lookup_from_args(args)  # checked before the model loads
    if (args.interactive or args.chat) and args.context_full is not None:
        raise ValueError(
            "--context-full is for a single completion; with -i a conversation ends when it fills the context"
        )
    cache = cache_options_from_args(args)  # checked before the model loads
    model = Model(args.model, n_ctx=args.ctx, n_threads=args.threads, mmap=not args.no_mmap, **cache)
    if args.threads is not None:
        warning = busy_cores_warning(args.threads, core.physical_core_count())
        if warning:
            print(warning, file=sys.stderr)
    session = model.session()
    if not 0 <= args.keep <= session.n_ctx - 2:
        raise ValueError(
            f"--keep must be from 0 to {session.n_ctx - 2} (the context, {session.n_ctx}, minus 2), got {args.keep}"
        )
    options = {**_generate_options(args), "lookup": lookup}
    if args.chat:
        template = resolve_template(args.chat_template) if args.chat_template else model.chat_template
        status = converse_with_template(session, template, args.prompt, options)
    elif args.interactive:
        status = _converse(session, args.prompt or "", options)
    else:
        context = {"on_context_full": args.context_full or "error", "n_keep": args.keep}
        status = _complete(session, args.prompt, {**options, **context})
    print(
        f"memory:     peak RSS {format_bytes(peak_rss_bytes())} (model file {format_bytes(os.path.getsize(model.path))}, "
        f"KV cache {format_bytes(session.kv_cache_bytes)} {session.cache_type})",
        file=sys.stderr,
    )
    return status


def _generate_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_tokens": args.max_tokens,
        "sampling": sampling_from_args(args),
        "seed": args.seed,
        "stop": args.stop,
        "ignore_eos": args.ignore_eos,
    }


def _complete(session: Session, prompt: str, options: dict[str, Any]) -> int:
    generation = session.generate(prompt, **options)
    _write(prompt)
    try:
        for token in generation:
            _write(token.text)
    except ContextFullError:
        # generation.py's advice names the Python argument (on_context_full); here it is a flag.
        _write("\n")
        raise ContextFullError(
            f"the context is full ({session.n_ctx} tokens); pass --context-full shift to drop old tokens and go on, "
            "--context-full stop to end there, or a larger --ctx"
        ) from None
    _write("\n")
    print(generation.timings, file=sys.stderr)
    print(f"finish:     {generation.finish_reason}, seed {generation.seed}, {_threads_text(session)}", file=sys.stderr)
    return 0


def _converse(session: Session, prompt: str, options: dict[str, Any]) -> int:
    tokenizer = session.model.tokenizer
    transcript = tokenizer.encode(prompt) if prompt else []
    _write(prompt)
    ask = sys.stdin.isatty()  # no "> " between turns when the input is a file or a pipe
    # A fixed seed would repeat the same random choices each turn; one seed per turn, derived
    # from the given one, keeps a run reproducible.
    seed = options.pop("seed")
    separator, turn = _line_break_after(prompt), 0
    _write(separator)
    while True:
        line = read_turn(ask)
        if not line:
            return 0
        turn += 1
        ids = transcript + tokenizer.encode(separator + line)
        if len(ids) >= session.n_ctx:
            raise ContextFullError(_context_full_message(session.n_ctx))
        generation = session.generate(
            ids, seed=None if seed is None else seed + turn - 1, on_context_full="stop", **options
        )
        tokens = []
        for token in generation:
            tokens.append(token)
            _write(token.text)
        reply = [token.id for token in tokens]
        if generation.finish_reason == "stop" and tokens and tokenizer.decode([tokens[-1].id]) != tokens[-1].text:
            # A stop string cut the last token: the transcript keeps the text that was shown.
            reply[-1:] = tokenizer.encode(tokens[-1].text)
        transcript = ids + reply
        # The line break before the next user line goes out now, so that the turn's statistics
        # on stderr (the same terminal) start on a line of their own; the transcript gets it
        # with that line, once.
        separator = _line_break_after(line + "".join(token.text for token in tokens))
        _write(separator)
        _report_turn(turn, generation)
        if generation.finish_reason == "context":
            raise ContextFullError(_context_full_message(session.n_ctx))


def read_turn(ask: bool) -> str:
    """The next line of stdin ("" at its end), after a "> " prompt on stderr when asked to."""
    if ask:
        print("> ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline()


def _line_break_after(text_so_far: str) -> str:
    """What goes before the next user line so that it starts on a line of its own, in the output
    and in the transcript alike: what is shown is what the model reads."""
    return "\n" if text_so_far and not text_so_far.endswith("\n") else ""


def _threads_text(session: Session) -> str:
    if not session.adaptive_threads:
        return f"{session.n_threads} thread{'s' if session.n_threads > 1 else ''}"
    return f"up to {session.n_threads} threads (adaptive; the last step used {session.n_threads_last_used})"


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _report_turn(turn: int, generation: Generation) -> None:
    timings = generation.timings
    per_token = "-" if math.isnan(timings.ms_per_token) else f"{timings.ms_per_token:.2f}"
    lookup = (
        f"{timings.accepted_tokens} of {timings.drafted_tokens} drafted accepted; " if timings.drafted_tokens else ""
    )
    print(
        f"[turn {turn}: {timings.prompt_tokens} tokens evaluated, {timings.reused_tokens} reused, "
        f"{timings.prompt_ms:.1f} ms; {timings.generated_tokens} generated, {per_token} ms/token; "
        f"{lookup}{generation.finish_reason}]",
        file=sys.stderr,
    )


def _context_full_message(n_ctx: int) -> str:
    return f"the conversation fills the context ({n_ctx} tokens); start again with a larger --ctx"
