"""Write a small random-weight GPT-J checkpoint in Hugging Face's layout, to try gptj_ggml
without downloading anything:

    python examples/make_tiny_model.py models/tiny
    gptj-ggml convert models/tiny -o models/tiny.gguf
    gptj-ggml run -m models/tiny.gguf -p "Once upon a time"

The weights are random, so the text is gibberish; the tokenizer is GPT-J's real one (from
tests/data/gptj-tokenizer). Needs only numpy and safetensors (no torch). Large shapes (GPT-J-6B's:
``--n-embd 4096 --n-head 16 --rotary-dim 64 --n-layer 28 --dtype float16``) are written a layer at a
time into shards, so memory holds one layer, not the model.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "gptj-tokenizer"


def random_gptj_groups(
    n_embd: int, n_layer: int, n_inner: int, n_vocab: int, seed: int, dtype: np.dtype = np.float32
) -> Iterator[dict[str, np.ndarray]]:
    """The checkpoint's tensors in groups (the embedding, each layer, the head), drawn in one fixed
    order from one seed: a group at a time in memory, so GPT-J-6B's shapes fit in little RAM."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int, std: float = 0.02) -> np.ndarray:
        return (std * rng.standard_normal(shape, dtype=np.float32)).astype(dtype)

    yield {"transformer.wte.weight": normal(n_vocab, n_embd)}
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        layer = {p + "ln_1.weight": 1.0 + normal(n_embd, std=0.1), p + "ln_1.bias": normal(n_embd)}
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            layer[p + f"attn.{name}.weight"] = normal(n_embd, n_embd)
        layer[p + "mlp.fc_in.weight"] = normal(n_inner, n_embd)
        layer[p + "mlp.fc_in.bias"] = normal(n_inner)
        layer[p + "mlp.fc_out.weight"] = normal(n_embd, n_inner)
        layer[p + "mlp.fc_out.bias"] = normal(n_embd)
        yield layer
    yield {
        "transformer.ln_f.weight": 1.0 + normal(n_embd, std=0.1),
        "transformer.ln_f.bias": normal(n_embd),
        "lm_head.weight": normal(n_vocab, n_embd, std=0.5),
        "lm_head.bias": normal(n_vocab),
    }


def random_gptj_state_dict(n_embd: int, n_layer: int, n_inner: int, n_vocab: int, seed: int) -> dict[str, np.ndarray]:
    """All of random_gptj_groups' tensors in one dict (for small shapes)."""
    tensors: dict[str, np.ndarray] = {}
    for group in random_gptj_groups(n_embd, n_layer, n_inner, n_vocab, seed):
        tensors.update(group)
    return tensors


def write_checkpoint(folder: Path, groups: Iterator[dict[str, np.ndarray]], n_groups: int, one_file: bool) -> None:
    """model.safetensors, or (``one_file`` False) a shard per group and Hugging Face's index of
    them, each shard written as soon as its group is drawn."""
    if one_file:
        tensors: dict[str, np.ndarray] = {}
        for group in groups:
            tensors.update(group)
        save_file(tensors, folder / "model.safetensors")
        return
    weight_map, total = {}, 0
    for index, group in enumerate(groups, start=1):
        name = f"model-{index:05d}-of-{n_groups:05d}.safetensors"
        save_file(group, folder / name)
        weight_map.update(dict.fromkeys(group, name))
        total += sum(t.nbytes for t in group.values())
        print(f"wrote {name} ({index}/{n_groups})", flush=True)
    index_file = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index_file, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--rotary-dim", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-inner", type=int, default=None, help="feed-forward width (default: 4 x n_embd)")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    args = parser.parse_args()

    n_vocab, n_inner = 50400, args.n_inner or 4 * args.n_embd
    args.folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["GPTJForCausalLM"],
        "model_type": "gptj",
        "vocab_size": n_vocab,
        "n_positions": 2048,
        "n_embd": args.n_embd,
        "n_layer": args.n_layer,
        "n_head": args.n_head,
        "rotary_dim": args.rotary_dim,
        "n_inner": args.n_inner,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": False,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
    }
    (args.folder / "config.json").write_text(json.dumps(config, indent=2))
    dtype = np.dtype(args.dtype)
    groups = random_gptj_groups(args.n_embd, args.n_layer, n_inner, n_vocab, args.seed, dtype)
    # One layer of GPT-J-6B is 0.8 GB in float32: beyond ~1 GB in all, a shard per group keeps one in memory.
    n_params = 2 * n_vocab * args.n_embd + args.n_layer * (4 * args.n_embd**2 + 2 * args.n_embd * n_inner)
    write_checkpoint(args.folder, groups, args.n_layer + 2, one_file=n_params * dtype.itemsize < 2**30)
    for name in ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / name, args.folder / name)
    print(f"wrote a random GPT-J ({args.n_layer} layers, n_embd {args.n_embd}) to {args.folder}")


if __name__ == "__main__":
    main()
