"""Prompt lookup on a model that has learned to copy: acceptance and speed, grounded vs open-ended.

Random weights never copy their context, so this runs the small GPT-J that
benchmarks/train_tiny.py trains on the standard library (its f16 GGUF), on held-out files:

- grounded prompts, where the answer is in the prompt: continue a file shown earlier in the
  prompt (its first lines repeated after it), the same with a function renamed (an edit), and
  quote a passage (a docstring, reopened after it);
- open-ended prompts: continue the start of a file, which the prompt does not contain.

Each prompt is generated without and with ``lookup`` (adaptive, at most ``--max-draft``), in
alternating order, greedy and sampled (seeded: the same tokens either way, checked). The table
gives the share of drafted tokens accepted, tokens per step, and the ratio of ms per token,
medians over prompts and rounds. With ``--cost FILE`` (benchmarks/verify_cost.py --json), each
run with lookup is also projected to GPT-J-6B's shapes: the same drafting, with the policy using
the 6B-shaped cost of verifying k tokens and each step charged that cost (a plain step = 1).

    python benchmarks/speculation.py [--model tiny.gguf] [--tokens 96] [--rounds 3] [--cost cost.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_tiny import default_out, gguf_path, stdlib_split

from gptj_ggml import Model, PromptLookup
from gptj_ggml.speculation import prompt_lookup as lookup_module


@dataclass
class Task:
    kind: str  # "grounded" or "open-ended"
    name: str
    prompt: list[int]


def tasks(model: Model, n_files: int, context: int) -> Iterator[Task]:
    """Prompts from held-out files, each at most ``context`` tokens."""
    _, held_out = stdlib_split()
    files = [p for p in held_out if 2000 < p.stat().st_size < 200_000][:n_files]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines(keepends=True)
        # A block of code from the middle of the file, where functions are.
        start = next((i for i, line in enumerate(lines) if line.startswith(("def ", "class ", "    def "))), 0)
        block = _fit(model, "".join(lines[start:]), context // 2 - 16)
        block_lines = block.splitlines(keepends=True)
        head = "".join(block_lines[:2])
        yield Task("grounded", f"repeat {path.name}", model.tokenize(block + "\n\n# The same code again:\n" + head))
        renamed = _renamed(block)
        if renamed is not None:
            old, new = renamed
            yield Task(
                "grounded",
                f"rename in {path.name}",
                model.tokenize(block + f"\n\n# The same code, with {old} renamed to {new}:\n" + head.replace(old, new)),
            )
        docstring = _docstring(text)
        if docstring:
            passage = _fit(model, docstring, context // 2 - 16)
            words = " ".join(passage.split()[:6])
            yield Task("grounded", f"quote {path.name}", model.tokenize(f'"""{passage}"""\n\n# Quoted:\n"""{words}'))
        yield Task("open-ended", f"continue {path.name}", model.tokenize(_fit(model, text, context // 2)))
        yield Task(
            "open-ended",
            f"continue {path.name} (mid)",
            model.tokenize(_fit(model, "".join(lines[start:]), context // 2)),
        )


def _fit(model: Model, text: str, n_tokens: int) -> str:
    ids = model.tokenize(text)[:n_tokens]
    return model.detokenize(ids)


def _renamed(block: str) -> tuple[str, str] | None:
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("def "):
            name = stripped[4:].split("(")[0]
            if name.isidentifier():
                return name, name + "_v2"
    return None


def _docstring(text: str) -> str | None:
    for quote in ('"""', "'''"):
        first = text.find(quote)
        if first >= 0:
            end = text.find(quote, first + 3)
            if end > first + 200:
                return text[first + 3 : end]
    return None


@dataclass
class StepLog:
    """The verifying steps of one generation: (drafted, produced) per step, as the policy ran."""

    steps: list[tuple[int, int]] = field(default_factory=list)


class _FixedCost(lookup_module.StepCost):
    """A step cost from a table of ratios (k drafted -> cost of the step vs a plain one)."""

    def __init__(self, ratios: dict[int, float]) -> None:
        super().__init__()
        self.ratios = ratios

    def observe(self, n_tokens: int, ms: float) -> None:
        pass

    def ratio(self, base_tokens: int, extra_tokens: int) -> float:
        top = max(self.ratios)
        if extra_tokens <= top:
            return self.ratios[extra_tokens]
        return self.ratios[top] + (self.ratios[top] - self.ratios[top - 1]) * (extra_tokens - top)


def _logged_run(session_factory, prompt: list[int], options: dict, cost: dict[int, float] | None) -> tuple:
    """One generation with lookup; each verifying step's (drafted, produced) is logged."""
    log = StepLog()
    original_init, original_record = lookup_module.Speculation.__init__, lookup_module.Speculation.record_step

    def init(self, options_, prompt_):
        original_init(self, options_, prompt_)
        if cost is not None:
            self.cost = _FixedCost(cost)

    def record(self, produced, n_evaluated, step_ms):
        drafted = len(self._verifying[0]) if self._verifying is not None else 0
        if n_evaluated is not None:
            log.steps.append((drafted, len(produced)))
        original_record(self, produced, n_evaluated, step_ms)

    lookup_module.Speculation.__init__, lookup_module.Speculation.record_step = init, record
    try:
        result = session_factory().complete(prompt, **options)
    finally:
        lookup_module.Speculation.__init__, lookup_module.Speculation.record_step = original_init, original_record
    return result, log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="default: train_tiny's f16 GGUF in its cache folder")
    parser.add_argument("--files", type=int, default=6, help="held-out files to draw prompts from")
    parser.add_argument("--context", type=int, default=512, help="tokens of prompt plus generation")
    parser.add_argument("--tokens", type=int, default=96, help="tokens generated per prompt")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-draft", type=int, default=8)
    parser.add_argument("--cost", type=Path, default=None, help="verify_cost.py --json output, for the 6B projection")
    parser.add_argument(
        "--cost-types", default=None, help="which types' ratios of --cost to project with (default: all)"
    )
    args = parser.parse_args()
    path = args.model or gguf_path(default_out())
    if not path.exists():
        sys.exit(f"{path} does not exist: run `python benchmarks/train_tiny.py` first (about 15 minutes)")
    model = Model(str(path), n_ctx=args.context, n_threads=args.threads)
    costs: dict[str, dict[int, float]] = {}
    if args.cost is not None:
        table = json.loads(args.cost.read_text())
        for name in args.cost_types.split(",") if args.cost_types else table:
            costs[name] = {int(k): v for k, v in table[name].items()}
    lookup = PromptLookup(max_draft=args.max_draft)
    all_tasks = list(tasks(model, args.files, args.context - args.tokens))
    # "sampled": the library's default sampler (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05), seeded.
    # "penalized": the same with repeat_penalty 1.2 over the last 64 tokens, which keeps this small
    # model out of the loops it otherwise falls into (see the "repeating itself" column).
    modes = {
        "greedy": {"temperature": 0.0},
        "sampled": {"seed": 1},
        "penalized": {"seed": 1, "repeat_penalty": 1.2},
    }
    rows = []
    for mode, sampling in modes.items():
        for kind in ("grounded", "open-ended"):
            speedups, accepted, drafted, steps, produced, same = [], 0, 0, 0, 0, True
            looping = generated = 0
            projected = {name: [0.0, 0.0] for name in costs}  # plain steps, charged cost
            for task in (t for t in all_tasks if t.kind == kind):
                options = {"max_tokens": args.tokens, "ignore_eos": True, **sampling}
                session = model.session  # a fresh session (cache) per run: nothing reused across them
                for round_index in range(args.rounds):
                    order = ["plain", "lookup"] if round_index % 2 == 0 else ["lookup", "plain"]
                    timings = {}
                    for which in order:
                        if which == "plain":
                            plain = session().complete(task.prompt, **options)
                            timings["plain"] = plain.timings.ms_per_token
                        else:
                            fast, log = _logged_run(session, task.prompt, {**options, "lookup": lookup}, None)
                            timings["lookup"] = fast.timings.ms_per_token
                    same = same and fast.tokens == plain.tokens
                    speedups.append(timings["plain"] / timings["lookup"])
                    if round_index == 0:
                        drafted += fast.timings.drafted_tokens
                        accepted += fast.timings.accepted_tokens
                        steps += len(log.steps)
                        produced += sum(n for _, n in log.steps)
                        looping += _self_repeats(plain.tokens)
                        generated += len(plain.tokens)
                        for name, cost in costs.items():
                            _, plog = _logged_run(session, task.prompt, {**options, "lookup": lookup}, cost)
                            projected[name][0] += sum(n for _, n in plog.steps)
                            projected[name][1] += sum(cost.get(d, cost[max(cost)]) for d, _ in plog.steps)
            rows.append(
                (
                    mode,
                    kind,
                    accepted / drafted if drafted else 0.0,
                    produced / steps if steps else 1.0,
                    statistics.median(speedups),
                    {name: plain_steps / charged for name, (plain_steps, charged) in projected.items()},
                    looping / generated if generated else 0.0,
                    same,
                )
            )
    print(
        f"\n{path.name}: {model.n_layer} layers, n_embd {model.n_embd}, {args.threads} threads, {args.tokens} tokens per prompt, "
        f"{len(all_tasks)} prompts from {args.files} held-out files, {args.rounds} rounds, lookup max_draft {args.max_draft}"
    )
    header = "| sampling | prompts | drafts accepted | tokens per step | ms/token speedup (this model) |"
    header += "".join(f" projected, 6B shapes {name} |" for name in costs)
    header += " output repeating itself | same tokens |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for mode, kind, rate, per_step, speedup, projected, looping, same in rows:
        line = f"| {mode} | {kind} | {rate:.0%} | {per_step:.2f} | {speedup:.2f}x |"
        line += "".join(f" {projected[name]:.2f}x |" for name in costs)
        print(line + f" {looping:.0%} | {'yes' if same else 'NO'} |")


def _self_repeats(tokens: list[int], n: int = 6) -> int:
    """Generated positions whose last n tokens already occurred earlier in the generated text (a
    model stuck in a loop: there drafts are right almost always, which flatters lookup)."""
    seen: set[tuple[int, ...]] = set()
    count = 0
    for end in range(n, len(tokens) + 1):
        gram = tuple(tokens[end - n : end])
        count += gram in seen
        seen.add(gram)
    return count


if __name__ == "__main__":
    main()
