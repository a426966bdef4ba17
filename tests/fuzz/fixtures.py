"""Tiny GPT-J checkpoints with a toy tokenizer, in every format the converter reads (fuzz and rule tests).

The fuzz cases mutate these files, so they are small enough that converting one and loading
the result takes milliseconds: a 2-layer model of width 32 and a byte-level BPE vocabulary of
a few hundred tokens, trained here on a handful of words. ``write_fixtures`` needs torch (for
``torch.save`` and the legacy writer); the fuzz worker only reads what it wrote.
"""

from __future__ import annotations

import collections
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

ENDOFTEXT = "<|endoftext|>"
EXTRA_TOKEN = "<|extratoken_1|>"
HPARAMS = {"n_embd": 32, "n_head": 2, "n_layer": 2, "rotary_dim": 8, "n_positions": 64}
#: Rows of the embedding: the toy vocabulary's tokens, then padding.
VOCAB_SIZE = 320
_WORDS = "the quick brown fox jumps over the lazy dog and then the dog sleeps while the fox runs home again"


def gpt2_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map (its bytes_to_unicode)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def toy_vocabulary(n_merges: int = 40) -> tuple[dict[str, int], list[str]]:
    """A GPT-2-style vocabulary: 256 byte tokens, then one token per merge in rank order, then <|endoftext|>.

    The merges are learnt by plain BPE on a few words, so token ids follow merge order as in GPT-2
    (what a legacy GGML file, which has no merges, relies on).
    """
    alphabet = gpt2_alphabet()
    vocab = {alphabet[byte]: token_id for token_id, byte in enumerate(sorted(alphabet, key=lambda b: ord(alphabet[b])))}
    words = collections.Counter(tuple(alphabet[byte] for byte in (" " + word).encode()) for word in _WORDS.split())
    merges = []
    for _ in range(n_merges):
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for word, count in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda pair: pairs[pair])
        merges.append(f"{best[0]} {best[1]}")
        vocab[best[0] + best[1]] = len(vocab)
        merged = collections.Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    vocab[ENDOFTEXT] = len(vocab)
    return vocab, merges


def write_tokenizer(folder: Path) -> None:
    """The toy tokenizer as a Hugging Face folder holds it (every file the converter reads)."""
    vocab, merges = toy_vocabulary()
    eot = vocab[ENDOFTEXT]
    special = {"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT}
    files: dict[str, Any] = {
        "vocab.json": vocab,
        "added_tokens.json": {EXTRA_TOKEN: eot + 1},
        "special_tokens_map.json": special,
        "tokenizer_config.json": {**special, "tokenizer_class": "GPT2Tokenizer", "chat_template": "{{ messages }}"},
        "tokenizer.json": {
            "version": "1.0",
            "added_tokens": [
                {"id": eot, "content": ENDOFTEXT, "special": True},
                {"id": eot + 1, "content": EXTRA_TOKEN, "special": False},
            ],
            "model": {"type": "BPE", "vocab": vocab, "merges": merges},
        },
    }
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def config() -> dict[str, Any]:
    """config.json of the tiny model, with the keys transformers writes for GPT-J."""
    eot = toy_vocabulary()[0][ENDOFTEXT]
    return {
        "_name_or_path": "tiny-gptj",
        "architectures": ["GPTJForCausalLM"],
        "model_type": "gptj",
        "activation_function": "gelu_new",
        "vocab_size": VOCAB_SIZE,
        **HPARAMS,
        "n_inner": None,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": False,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "torch_dtype": "float16",
    }


def state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights of every tensor, by Hugging Face name, in the order they are written."""
    n_embd, n_layer = HPARAMS["n_embd"], HPARAMS["n_layer"]
    n_inner = 4 * n_embd
    shapes: dict[str, tuple[int, ...]] = {"transformer.wte.weight": (VOCAB_SIZE, n_embd)}
    for layer in range(n_layer):
        prefix = f"transformer.h.{layer}"
        shapes.update({
            f"{prefix}.ln_1.weight": (n_embd,), f"{prefix}.ln_1.bias": (n_embd,),
            f"{prefix}.attn.q_proj.weight": (n_embd, n_embd), f"{prefix}.attn.k_proj.weight": (n_embd, n_embd),
            f"{prefix}.attn.v_proj.weight": (n_embd, n_embd), f"{prefix}.attn.out_proj.weight": (n_embd, n_embd),
            f"{prefix}.mlp.fc_in.weight": (n_inner, n_embd), f"{prefix}.mlp.fc_in.bias": (n_inner,),
            f"{prefix}.mlp.fc_out.weight": (n_embd, n_inner), f"{prefix}.mlp.fc_out.bias": (n_embd,),
        })  # fmt: skip
    shapes.update({
        "transformer.ln_f.weight": (n_embd,), "transformer.ln_f.bias": (n_embd,),
        "lm_head.weight": (VOCAB_SIZE, n_embd), "lm_head.bias": (VOCAB_SIZE,),
    })  # fmt: skip
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in shapes.items():
        values = 0.05 * rng.standard_normal(shape)
        if name.endswith(("ln_1.weight", "ln_f.weight")):
            values += 1.0
        weights[name] = values.astype(np.float32)
    return weights


def write_checkpoint(folder: Path, fmt: str, seed: int = 0) -> Path:
    """A tiny checkpoint folder (config, weights, tokenizer). ``fmt``: "safetensors" (f16) or "bin" (f16, torch.save)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config(), indent=2))
    write_tokenizer(folder)
    weights = {name: value.astype(np.float16) for name, value in state_dict(seed).items()}
    if fmt == "safetensors":
        import safetensors.numpy

        safetensors.numpy.save_file(weights, folder / "model.safetensors")
    elif fmt == "bin":
        import torch

        tensors = {name: torch.from_numpy(value) for name, value in weights.items()}
        # GPT-J-6B's .bin also holds each layer's causal-mask buffers, which the converter drops.
        n = HPARAMS["n_positions"]
        for layer in range(HPARAMS["n_layer"]):
            tensors[f"transformer.h.{layer}.attn.bias"] = torch.tril(torch.ones((n, n), dtype=torch.bool)).view(
                1, 1, n, n
            )
            tensors[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e9)
        torch.save(tensors, folder / "pytorch_model.bin")
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return folder


def write_legacy(path: Path, tokenizer_folder: Path, seed: int = 0, ftype: str = "f16") -> Path:
    """The tiny model as a legacy GGML file of ``ftype`` (tests/legacy_ggml_writer.py)."""
    import torch

    from legacy_ggml_writer import write_legacy_gptj

    weights = {name: torch.from_numpy(value) for name, value in state_dict(seed).items()}
    return write_legacy_gptj(path, weights, config(), tokenizer_folder, ftype)


def write_fixtures(folder: Path) -> dict[str, Path]:
    """Every base input of the fuzz cases, under ``folder``; returns them by name."""
    folder.mkdir(parents=True, exist_ok=True)
    safetensors_dir = write_checkpoint(folder / "safetensors", "safetensors")
    bin_dir = write_checkpoint(folder / "bin", "bin")
    legacy = write_legacy(folder / "ggml-model-f16.bin", safetensors_dir)
    legacy_q4_0 = write_legacy(folder / "ggml-model-q4_0.bin", safetensors_dir, ftype="q4_0")
    return {"safetensors": safetensors_dir, "bin": bin_dir, "legacy": legacy, "legacy-q4_0": legacy_q4_0}
