"""Write a small random-weight GPT-J checkpoint in Hugging Face's layout, to try gptj_ggml
without downloading anything:

    python examples/make_tiny_model.py models/tiny
    gptj-ggml convert models/tiny -o models/tiny.gguf
    gptj-ggml run -m models/tiny.gguf -p "Once upon a time"

The weights are random, so the text is gibberish; the tokenizer is GPT-J's real one (from
tests/data/gptj-tokenizer). Needs only numpy and safetensors (no torch).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "gptj-tokenizer"


def random_gptj_state_dict(n_embd: int, n_layer: int, n_inner: int, n_vocab: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def normal(*shape: int, std: float = 0.02) -> np.ndarray:
        return (std * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)

    tensors = {"transformer.wte.weight": normal(n_vocab, n_embd)}
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        tensors[p + "ln_1.weight"] = 1.0 + normal(n_embd, std=0.1)
        tensors[p + "ln_1.bias"] = normal(n_embd)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            tensors[p + f"attn.{name}.weight"] = normal(n_embd, n_embd)
        tensors[p + "mlp.fc_in.weight"] = normal(n_inner, n_embd)
        tensors[p + "mlp.fc_in.bias"] = normal(n_inner)
        tensors[p + "mlp.fc_out.weight"] = normal(n_embd, n_inner)
        tensors[p + "mlp.fc_out.bias"] = normal(n_embd)
    tensors["transformer.ln_f.weight"] = 1.0 + normal(n_embd, std=0.1)
    tensors["transformer.ln_f.bias"] = normal(n_embd)
    tensors["lm_head.weight"] = normal(n_vocab, n_embd, std=0.5)
    tensors["lm_head.bias"] = normal(n_vocab)
    return tensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--rotary-dim", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    n_vocab, n_inner = 50400, 4 * args.n_embd
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
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": False,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
    }
    (args.folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(random_gptj_state_dict(args.n_embd, args.n_layer, n_inner, n_vocab, args.seed), args.folder / "model.safetensors")
    for name in ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / name, args.folder / name)
    print(f"wrote a random GPT-J ({args.n_layer} layers, n_embd {args.n_embd}) to {args.folder}")


if __name__ == "__main__":
    main()
