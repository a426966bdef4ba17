"""Train a small GPT-J on the Python standard library's sources, on the CPU, in about 15 minutes.

A real (if small) trained model for the measurements that random weights cannot give: perplexity
of quantized types, and whether the model copies from its context (the tokens a prompt-lookup
draft proposes are accepted only when the model predicts them too). The text is every machine's
own: the ``*.py`` files of ``sysconfig.get_paths()["stdlib"]`` (test folders, site-packages and
the generated ``encodings`` tables left out), split into training and held-out files by a hash of
each file's path, so the split does not depend on the order of a directory listing. The
tokenizer is GPT-J's (tests/data/gptj-tokenizer), so the model has GPT-J's 50400-token vocabulary.

Writes the Hugging Face checkpoint (model.safetensors, config.json, the tokenizer files) and its
f16 GGUF (by gptj_ggml.convert) to ``--out``, then prints the held-out perplexity under
transformers and under gptj_ggml, how often the greedy next token is the text's next token where
the text repeats an earlier n-gram and where it does not, prompt-lookup draft acceptance, and a
greedy continuation of a held-out file. A checkpoint already there with the same settings is
evaluated again without training (``--force`` retrains).

    python benchmarks/train_tiny.py [--out DIR] [--minutes 13] [--seed 0] [--n-embd 256 --n-layer 4 --n-ctx 512]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "gptj-tokenizer"
N_VOCAB = 50400  # GPT-J's embedding rows: the tokenizer's 50257 tokens, padded
END_OF_TEXT = 50256
SKIPPED_FOLDERS = {"test", "tests", "idle_test", "site-packages", "encodings", "__pycache__"}
HELD_OUT_EVERY = 20  # one file in 20 is held out
SETTINGS_FILE = "train_settings.json"


def default_out() -> Path:
    """``$XDG_CACHE_HOME/gptj_ggml/tiny-trained`` (``~/.cache`` when XDG_CACHE_HOME is unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "gptj_ggml" / "tiny-trained"


def gguf_path(out: Path) -> Path:
    return out / f"{out.name}-f16.gguf"


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the trained weights; a checkpoint with equal settings is reused."""

    n_embd: int = 256
    n_layer: int = 4
    n_ctx: int = 512
    batch_size: int = 2
    learning_rate: float = 2e-3
    minutes: float = 13.0
    seed: int = 0
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"

    @property
    def n_head(self) -> int:
        return self.n_embd // 64  # GPT-J's head size

    @property
    def rotary_dim(self) -> int:
        return 64 // 4  # GPT-J-6B rotates 64 of each head's 256 dimensions


# -- the text ------------------------------------------------------------------------------


def stdlib_split() -> tuple[list[Path], list[Path]]:
    """The standard library's source files, as (training, held-out), each sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    train, held_out = [], []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if SKIPPED_FOLDERS & set(relative.parts[:-1]):
            continue
        digest = hashlib.sha1(relative.as_posix().encode()).digest()
        (held_out if int.from_bytes(digest[:4], "little") % HELD_OUT_EVERY == 0 else train).append(path)
    return train, held_out


def load_tokenizer():
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(TOKENIZER_DIR)
    tokenizer.model_max_length = sys.maxsize  # whole files are tokenized, then cut into windows: no warning
    return tokenizer


def token_stream(tokenizer, files: Sequence[Path]) -> np.ndarray:
    """The files' tokens, each file followed by <|endoftext|>, as GPT-J's training data was joined."""
    texts = [path.read_text(encoding="utf-8", errors="replace") for path in files]
    ids: list[int] = []
    for encoded in tokenizer(texts, verbose=False)["input_ids"]:
        ids.extend(encoded)
        ids.append(END_OF_TEXT)
    return np.asarray(ids, dtype=np.int64)


# -- training ------------------------------------------------------------------------------


def learning_rate(settings: TrainSettings, progress: float) -> float:
    """Linear warm-up over the first 3% of the time, then cosine decay to a tenth of the peak."""
    warmup = 0.03
    if progress < warmup:
        return settings.learning_rate * progress / warmup
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))
    return settings.learning_rate * (0.1 + 0.9 * cosine)


def train(settings: TrainSettings, train_ids: np.ndarray, out: Path) -> dict:
    """Train for ``settings.minutes`` of wall time, save the checkpoint to ``out``; return the statistics."""
    import torch
    from transformers import GPTJConfig, GPTJForCausalLM

    torch.manual_seed(settings.seed)
    config = GPTJConfig(
        vocab_size=N_VOCAB, n_positions=settings.n_ctx, n_embd=settings.n_embd, n_layer=settings.n_layer,
        n_head=settings.n_head, rotary_dim=settings.rotary_dim, n_inner=4 * settings.n_embd,
        tie_word_embeddings=False, bos_token_id=END_OF_TEXT, eos_token_id=END_OF_TEXT,
        attn_implementation="sdpa",
    )  # fmt: skip
    model = GPTJForCausalLM(config)

    # The LM head over 50400 tokens is ~90% of each step's time at this size, and the training text
    # uses only ~18k of them. The head is trained over those alone; a token the text never shows
    # would only be pushed down by a full softmax, so its row stays zero and it gets one shared bias
    # (see _unseen_bias) when the checkpoint is saved.
    used, counts = np.unique(train_ids, return_counts=True)
    to_used = np.full(N_VOCAB, -1, dtype=np.int64)
    to_used[used] = np.arange(len(used))
    used_t = torch.from_numpy(used)
    head_weight = torch.nn.Parameter(torch.randn(len(used), settings.n_embd) * config.initializer_range)
    head_bias = torch.nn.Parameter(torch.zeros(len(used)))

    # Weight decay on the matrices only: decaying norm gains towards 0, or biases, only fights the data.
    matrices = [p for p in model.transformer.parameters() if p.dim() == 2] + [head_weight]
    others = [p for p in model.transformer.parameters() if p.dim() != 2] + [head_bias]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}],
        lr=settings.learning_rate, betas=(0.9, 0.95),
    )  # fmt: skip

    rng = np.random.default_rng(settings.seed)
    window = settings.n_ctx + 1
    budget = 60.0 * settings.minutes
    tokens_per_step = settings.batch_size * settings.n_ctx
    step, losses, start = 0, [], time.perf_counter()
    last_report = start
    print(
        f"training: {sum(p.numel() for p in model.transformer.parameters()) / 1e6:.1f} M parameters in the "
        "embedding and layers, "
        f"LM head over {len(used)} of {N_VOCAB} tokens; {len(train_ids) / 1e6:.2f} M training tokens; "
        f"{tokens_per_step} tokens per step; {settings.minutes:g} minutes",
        flush=True,
    )
    while (elapsed := time.perf_counter() - start) < budget:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(settings, elapsed / budget)
        offsets = rng.integers(0, len(train_ids) - window, settings.batch_size)
        batch = torch.from_numpy(np.stack([train_ids[o : o + window] for o in offsets]))
        hidden = model.transformer(input_ids=batch[:, :-1]).last_hidden_state
        logits = torch.nn.functional.linear(hidden, head_weight, head_bias)
        targets = torch.from_numpy(to_used[batch[:, 1:].numpy()])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(used)), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(matrices + others, 1.0)
        optimizer.step()
        step += 1
        losses.append(loss.item())
        now = time.perf_counter()
        if now - last_report >= 30 or step == 1:
            last_report = now
            recent = losses[-20:]
            print(
                f"step {step:5d}  loss {sum(recent) / len(recent):.3f}  lr {optimizer.param_groups[0]['lr']:.2e}  "
                f"{step * tokens_per_step / (now - start):.0f} tokens/s so far  {(now - start) / 60:.1f} min",
                flush=True,
            )
    seconds = time.perf_counter() - start

    floor = _unseen_bias(logits.detach(), n_singletons=int((counts == 1).sum()), n_tokens=len(train_ids))
    with torch.no_grad():
        model.lm_head.weight.copy_(_full_head(head_weight.detach(), used_t, 0.0))
        model.lm_head.bias.copy_(_full_head(head_bias.detach(), used_t, floor))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for source in TOKENIZER_DIR.iterdir():
        shutil.copy(source, out / source.name)
    recent = losses[-50:]
    return {
        "steps": step,
        "tokens_seen": step * tokens_per_step,
        "train_seconds": round(seconds, 1),
        "tokens_per_second": round(step * tokens_per_step / seconds, 1),
        "final_train_loss": round(sum(recent) / len(recent), 4),
        "head_tokens": len(used),
        "unseen_token_bias": round(floor, 4),
    }


def _unseen_bias(logits, n_singletons: int, n_tokens: int) -> float:
    """The bias that gives the tokens never seen in training, together, Good-Turing's share of the text.

    The share of held-out tokens that training never showed is about the share of training tokens
    seen once (n_singletons / n_tokens). With the seen tokens' partition function Z (the median of
    the last batch's logsumexp), ``n_unseen * exp(b) / (Z + n_unseen * exp(b)) = share`` gives b.
    """
    import torch

    n_unseen = N_VOCAB - logits.shape[-1]
    share = max(n_singletons, 1) / n_tokens
    log_z = float(torch.logsumexp(logits.reshape(-1, logits.shape[-1]), dim=-1).median())
    return log_z + math.log(share / (1 - share)) - math.log(n_unseen)


def _full_head(trained, used, fill: float):
    """The trained rows (or entries) of the head at their token ids, ``fill`` everywhere else."""
    import torch

    full = torch.full((N_VOCAB, *trained.shape[1:]), fill, dtype=trained.dtype)
    full[used] = trained
    return full


# -- evaluation ----------------------------------------------------------------------------


def transformers_perplexity(out: Path, chunks: list[list[int]]) -> float:
    """exp(mean NLL) of the saved checkpoint under transformers, on the chunks gptj_ggml.perplexity scores."""
    import torch
    from transformers import GPTJForCausalLM

    model = GPTJForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for chunk in chunks:
            ids = torch.tensor([chunk])
            logits = model(input_ids=ids).logits[0, :-1].double()
            total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            n += len(chunk) - 1
    return math.exp(total / n)


@dataclass
class CopyCounts:
    """Greedy next-token hits at positions whose next token repeats an earlier n-gram, and at the others."""

    repeated: int = 0
    repeated_hits: int = 0
    novel: int = 0
    novel_hits: int = 0


@dataclass
class LookupCounts:
    """Prompt-lookup drafts: the token after the last earlier occurrence of the context's last tokens."""

    positions: int = 0
    drafts: int = 0
    draft_is_next: int = 0  # the text goes on as the draft says
    model_takes_draft: int = 0  # the model's greedy token is the draft: greedy verification accepts it


def count_copies(ids: Sequence[int], predicted: Sequence[int], n: int, counts: CopyCounts) -> None:
    """Add one chunk's positions to ``counts``.

    ``predicted[k - 1]`` is the model's greedy token for ``ids[k]``. The target ``ids[k]`` repeats an
    n-gram when ``ids[k - n + 1 : k + 1]`` occurred, whole, before position k.
    """
    seen: set[tuple[int, ...]] = set()
    for k in range(1, len(ids)):
        gram = tuple(ids[k - n + 1 : k + 1]) if k >= n - 1 else None
        hit = predicted[k - 1] == ids[k]
        if gram is not None and gram in seen:
            counts.repeated += 1
            counts.repeated_hits += hit
        else:
            counts.novel += 1
            counts.novel_hits += hit
        if gram is not None:
            seen.add(gram)


def count_lookups(ids: Sequence[int], predicted: Sequence[int], n: int, counts: LookupCounts) -> None:
    """Add one chunk's prompt-lookup drafts (match on the last ``n`` tokens) to ``counts``."""
    last_end: dict[tuple[int, ...], int] = {}
    for k in range(n, len(ids)):
        # An occurrence ending at k - 2 or before has its next token inside ids[: k]: usable for target k.
        if k - 2 >= n - 1:
            last_end[tuple(ids[k - n - 1 : k - 1])] = k - 2
        counts.positions += 1
        end = last_end.get(tuple(ids[k - n : k]))
        if end is None:
            continue
        draft = ids[end + 1]
        counts.drafts += 1
        counts.draft_is_next += draft == ids[k]
        counts.model_takes_draft += predicted[k - 1] == draft


def evaluate(out: Path, settings: TrainSettings, held_out_ids: np.ndarray, tokenizer, eval_tokens: int) -> dict:
    from gptj_ggml import Model
    from gptj_ggml.perplexity import chunk_ids, perplexity

    ids = held_out_ids[:eval_tokens].tolist()
    chunks = chunk_ids(ids, settings.n_ctx)
    model = Model(gguf_path(out), n_ctx=settings.n_ctx)
    start = time.perf_counter()
    ours = perplexity(model, ids, settings.n_ctx)
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    reference = transformers_perplexity(out, chunks)
    reference_seconds = time.perf_counter() - start
    print(
        f"held-out perplexity on {ours.n_scored} tokens ({ours.n_chunks} chunks of {settings.n_ctx}): "
        f"transformers {reference:.4f} ({reference_seconds:.1f} s), gptj_ggml f16 {ours.perplexity:.4f} "
        f"({ours_seconds:.1f} s)",
        flush=True,
    )

    copies = {n: CopyCounts() for n in (2, 3, 4)}
    lookups = {n: LookupCounts() for n in (1, 2, 3)}
    for chunk in chunks:
        predicted = model.logits(chunk).argmax(axis=-1).tolist()
        for n, counts in copies.items():
            count_copies(chunk, predicted, n, counts)
        for n, counts in lookups.items():
            count_lookups(chunk, predicted, n, counts)
    print("\ngreedy next token = the text's next token, by whether that token completes an n-gram seen before it:")
    print("| n | positions repeating an n-gram | greedy hit there | other positions | greedy hit there |")
    print("|---|---|---|---|---|")
    for n, c in copies.items():
        total = c.repeated + c.novel
        print(
            f"| {n} | {c.repeated} ({100 * c.repeated / total:.1f}%) | {100 * c.repeated_hits / c.repeated:.1f}% | "
            f"{c.novel} ({100 * c.novel / total:.1f}%) | {100 * c.novel_hits / c.novel:.1f}% |"
        )
    print("\nprompt lookup (draft = the token after the last earlier occurrence of the context's last n tokens):")
    print("| match n | positions with a draft | draft = text's next token | greedy model = draft (accepted) |")
    print("|---|---|---|---|")
    for n, c in lookups.items():
        print(
            f"| {n} | {100 * c.drafts / c.positions:.1f}% | {100 * c.draft_is_next / c.drafts:.1f}% | "
            f"{100 * c.model_takes_draft / c.drafts:.1f}% |"
        )
    sample(model, out, held_out_ids, tokenizer)
    return {
        "held_out_tokens_scored": ours.n_scored,
        "perplexity_transformers": round(reference, 4),
        "perplexity_gptj_ggml_f16": round(ours.perplexity, 4),
        "copy_rates": {n: dataclasses.asdict(c) for n, c in copies.items()},
        "prompt_lookup": {n: dataclasses.asdict(c) for n, c in lookups.items()},
    }


def sample(model, out: Path, held_out_ids: np.ndarray, tokenizer, prompt_tokens: int = 200, new_tokens: int = 48):
    """Greedy-continue the first held-out file that is long enough; print it, and whether transformers agrees."""
    import torch
    from transformers import GPTJForCausalLM

    ends = np.flatnonzero(held_out_ids == END_OF_TEXT)
    starts = np.concatenate([[0], ends[:-1] + 1])
    first = next(s for s, e in zip(starts, ends) if e - s >= prompt_tokens + new_tokens)
    prompt = held_out_ids[first : first + prompt_tokens].tolist()
    completion = model.complete(prompt, temperature=0, max_tokens=new_tokens, ignore_eos=True)
    reference = GPTJForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = reference.generate(
            torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False, pad_token_id=END_OF_TEXT
        )[0, prompt_tokens:].tolist()
    actual = held_out_ids[first + prompt_tokens : first + prompt_tokens + new_tokens].tolist()
    same = sum(a == b for a, b in zip(completion.tokens, actual))
    print(f"\nsample: the first {prompt_tokens} tokens of a held-out file, then {new_tokens} greedy tokens")
    print("----- prompt -----")
    print(tokenizer.decode(prompt))
    print("----- greedy continuation (gptj_ggml) -----")
    print(completion.text)
    print("----- the file goes on -----")
    print(tokenizer.decode(actual))
    print("-----")
    agree = "the same tokens" if expected == completion.tokens else "different tokens"
    print(f"transformers' greedy generate gives {agree}; {same} of {new_tokens} tokens equal the file's", flush=True)


# -- the command ---------------------------------------------------------------------------


def main() -> None:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=default_out(), help="checkpoint folder (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="training wall time")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--n-embd", type=int, default=defaults.n_embd, help="a multiple of 64 (GPT-J's head size)")
    parser.add_argument("--n-layer", type=int, default=defaults.n_layer)
    parser.add_argument("--n-ctx", type=int, default=defaults.n_ctx, help="training window and n_positions")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="windows per step")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="peak AdamW rate")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--eval-tokens", type=int, default=32768, help="held-out tokens to score")
    parser.add_argument("--force", action="store_true", help="retrain even if a checkpoint with these settings exists")
    args = parser.parse_args()
    if args.n_embd % 64:
        parser.error(f"--n-embd must be a multiple of 64, got {args.n_embd}")

    import torch

    torch.set_num_threads(args.threads)
    settings = TrainSettings(
        n_embd=args.n_embd, n_layer=args.n_layer, n_ctx=args.n_ctx, batch_size=args.batch_size,
        learning_rate=args.learning_rate, minutes=args.minutes, seed=args.seed,
    )  # fmt: skip
    out: Path = args.out
    tokenizer = load_tokenizer()
    train_files, held_out_files = stdlib_split()
    start = time.perf_counter()
    train_ids = token_stream(tokenizer, train_files)
    held_out_ids = token_stream(tokenizer, held_out_files)
    print(
        f"text: {len(train_files)} training files ({len(train_ids) / 1e6:.2f} M tokens), {len(held_out_files)} "
        f"held-out files ({len(held_out_ids) / 1e6:.2f} M tokens) from {sysconfig.get_paths()['stdlib']}, "
        f"tokenized in {time.perf_counter() - start:.1f} s",
        flush=True,
    )

    settings_path = out / SETTINGS_FILE
    record = json.loads(settings_path.read_text()) if settings_path.is_file() else None
    if record and record["settings"] == dataclasses.asdict(settings) and not args.force:
        print(f"{out} already holds a checkpoint trained with these settings; not training (--force retrains)")
        stats, trained = record["training"], False
    else:
        stats, trained = train(settings, train_ids, out), True
        settings_path.write_text(json.dumps({"settings": dataclasses.asdict(settings), "training": stats}, indent=2))
    print(
        f"trained: {stats['steps']} steps, {stats['tokens_seen'] / 1e6:.2f} M tokens seen in "
        f"{stats['train_seconds'] / 60:.1f} min ({stats['tokens_per_second']:.0f} tokens/s), "
        f"final training loss {stats['final_train_loss']:.3f}",
        flush=True,
    )
    if trained or not gguf_path(out).is_file():
        from gptj_ggml.convert import convert_checkpoint

        convert_checkpoint(out, gguf_path(out), outtype="f16", progress=True)
        print(f"wrote {gguf_path(out)}")
    results = evaluate(out, settings, held_out_ids, tokenizer, args.eval_tokens)
    settings_path.write_text(
        json.dumps({"settings": dataclasses.asdict(settings), "training": stats, "evaluation": results}, indent=2)
    )
    print(f"\ncheckpoint: {out}\ngguf:       {gguf_path(out)}")


if __name__ == "__main__":
    main()
