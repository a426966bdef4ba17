"""Tiny random-weight GPT-J checkpoints in every format the converter reads (test infrastructure).

``make_tiny_gptj(folder, fmt=...)`` builds a ``transformers.GPTJForCausalLM`` with visible
random weights, saves it like the Hugging Face Hub does, and adds the real GPT-J
tokenizer files from ``tests/data/gptj-tokenizer``. ``tiny_gptj_state_dict(...)`` with the
same arguments rebuilds the same model and returns its weights as they were saved: the
independent reference tests compare against.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import transformers

DATA_DIR = Path(__file__).parent / "data"
TOKENIZER_DIR = DATA_DIR / "gptj-tokenizer"

#: The tokenizer files of the GPT-J-6B repository, as they are on the Hub.
TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
)

#: Checkpoint layouts make_tiny_gptj can write.
FORMATS = ("safetensors", "sharded-safetensors", "safetensors-bf16", "bin-f16", "bin-f32", "sharded-bin")


def make_tiny_gptj(
    folder: Path,
    *,
    fmt: str = "safetensors",
    n_embd: int = 64,
    n_head: int = 4,
    n_layer: int = 2,
    rotary_dim: int = 8,
    n_inner: int | None = None,
    n_positions: int = 256,
    vocab_size: int = 50400,
    seed: int = 0,
    tokenizer_files: tuple[str, ...] = TOKENIZER_FILES,
    config_overrides: dict[str, Any] | None = None,
) -> Path:
    """Write a random GPT-J checkpoint into ``folder`` (created if needed) and return it.

    Formats: "safetensors", "sharded-safetensors" (3+ shards with an index),
    "safetensors-bf16", "bin-f32", "bin-f16" (like the original GPT-J-6B
    ``pytorch_model.bin``: float16, with the ``attn.bias`` / ``attn.masked_bias``
    buffers), "sharded-bin" (float32 shards with ``pytorch_model.bin.index.json``).
    ``config_overrides`` are written into config.json afterwards (e.g. ``{"rotary_dim": None}``,
    which transformers itself no longer accepts, or a wrong ``model_type``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = _stored_model(fmt, _config(n_embd, n_head, n_layer, rotary_dim, n_inner, n_positions, vocab_size), seed)

    if fmt == "sharded-safetensors":
        model.save_pretrained(folder, max_shard_size=_shard_size(model, n_shards=3))
    elif fmt.startswith("safetensors"):
        model.save_pretrained(folder)
    else:
        # transformers 5 only writes safetensors: .bin checkpoints are saved by hand.
        model.config.save_pretrained(folder)
        if fmt == "bin-f16":
            state_dict = _with_original_attention_buffers(model.state_dict(), model.config)
            torch.save(state_dict, folder / "pytorch_model.bin")
        elif fmt == "bin-f32":
            torch.save(model.state_dict(), folder / "pytorch_model.bin")
        else:  # sharded-bin
            _save_sharded_bin(model.state_dict(), folder, n_shards=3)

    if config_overrides:
        config = json.loads((folder / "config.json").read_text())
        config.update(config_overrides)
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    copy_tokenizer(folder, tokenizer_files)
    return folder


def tiny_gptj_state_dict(
    *,
    fmt: str = "safetensors",
    n_embd: int = 64,
    n_head: int = 4,
    n_layer: int = 2,
    rotary_dim: int = 8,
    n_inner: int | None = None,
    n_positions: int = 256,
    vocab_size: int = 50400,
    seed: int = 0,
    **_ignored: Any,
) -> dict[str, torch.Tensor]:
    """The weights ``make_tiny_gptj`` saves for the same arguments, in their stored dtype.

    Built again from the same seed rather than read back, so a test never compares the
    converter's reading of a file with another reading of that same file. Arguments that
    only affect the files (``tokenizer_files``, ``config_overrides``) are ignored.
    """
    config = _config(n_embd, n_head, n_layer, rotary_dim, n_inner, n_positions, vocab_size)
    return {name: tensor.detach() for name, tensor in _stored_model(fmt, config, seed).state_dict().items()}


def copy_tokenizer(folder: Path, file_names: tuple[str, ...] = TOKENIZER_FILES) -> Path:
    """Copy some of GPT-J's tokenizer files into ``folder`` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for file_name in file_names:
        shutil.copy(TOKENIZER_DIR / file_name, folder / file_name)
    return folder


def _config(
    n_embd: int, n_head: int, n_layer: int, rotary_dim: int, n_inner: int | None, n_positions: int, vocab_size: int
) -> transformers.GPTJConfig:
    return transformers.GPTJConfig(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        rotary_dim=rotary_dim,
        n_inner=n_inner,
        bos_token_id=50256,
        eos_token_id=50256,
    )


def _stored_model(fmt: str, config: transformers.GPTJConfig, seed: int) -> transformers.GPTJForCausalLM:
    """A random model, in the dtype format ``fmt`` stores."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}, expected one of {FORMATS}")
    torch.manual_seed(seed)
    model = transformers.GPTJForCausalLM(config).eval()
    # Visible spread everywhere, including norms and biases, so a swapped or dropped
    # tensor changes the numbers a test looks at.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_f.weight")):
                parameter.copy_(1.0 + 0.1 * torch.randn_like(parameter))
            else:
                parameter.copy_(0.05 * torch.randn_like(parameter))
    if fmt == "bin-f16":
        return model.half()
    if fmt == "safetensors-bf16":
        return model.to(torch.bfloat16)
    return model


def _with_original_attention_buffers(
    state_dict: dict[str, torch.Tensor], config: transformers.GPTJConfig
) -> dict[str, torch.Tensor]:
    # GPT-J-6B's pytorch_model.bin (saved by transformers 4.x) holds each layer's causal
    # mask and fill value; current transformers no longer saves them.
    n = config.n_positions
    with_buffers = dict(state_dict)
    for layer in range(config.n_layer):
        with_buffers[f"transformer.h.{layer}.attn.bias"] = torch.tril(torch.ones((n, n), dtype=torch.bool)).view(
            1, 1, n, n
        )
        with_buffers[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e9)
    return with_buffers


def _shard_size(model: torch.nn.Module, n_shards: int) -> int:
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    return total // n_shards + 1


def _save_sharded_bin(state_dict: dict[str, torch.Tensor], folder: Path, n_shards: int) -> None:
    names = list(state_dict)
    per_shard = -(-len(names) // n_shards)
    weight_map = {}
    for shard in range(n_shards):
        shard_name = f"pytorch_model-{shard + 1:05d}-of-{n_shards:05d}.bin"
        shard_names = names[shard * per_shard : (shard + 1) * per_shard]
        torch.save({name: state_dict[name] for name in shard_names}, folder / shard_name)
        weight_map.update({name: shard_name for name in shard_names})
    total_size = sum(t.numel() * t.element_size() for t in state_dict.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
