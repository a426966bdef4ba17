"""Write legacy GGML GPT-J files (the format of ggml's examples/gpt-j), for tests.

Written from the format's description, not from ggml's script: magic, seven int32
hyper-parameters (n_vocab, n_ctx, n_embd, n_head, n_layer, n_rot, ftype), the vocabulary
(count, then each token's byte length and raw bytes: vocab.json then added_tokens.json),
then every tensor as (n_dims, name length, ggml type, dims in ggml order, name, data).
ftype 1 stores 2-D ``*.weight`` tensors as f16 and the rest as f32; a quantized file (what
``gpt-j-quantize`` writes from the f16 file) stores those tensors quantized from their f16
values, with ftype + 1000 * 2 (the quantization version). Quantized blocks come from gguf-py's reference quantizers, which
are independent of the engine's.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf
import numpy as np
import torch

T = gguf.GGMLQuantizationType
#: ggml_ftype of each type the writer can produce.
FTYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9}
QUANT_TYPES = {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q8_0": T.Q8_0, "q5_0": T.Q5_0, "q5_1": T.Q5_1}


def gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's printable character -> byte map (the inverse of its bytes_to_unicode)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = chr(256 + extra)
            extra += 1
    return {char: byte for byte, char in chars.items()}


def write_legacy_gptj(
    path: Path,
    state_dict: dict[str, torch.Tensor],
    config: dict,
    tokenizer_dir: Path,
    ftype: str = "f16",
) -> Path:
    """Write ``state_dict`` (a transformers GPTJForCausalLM's) as a legacy GGML file of ``ftype``."""
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    added = json.loads((tokenizer_dir / "added_tokens.json").read_text(encoding="utf-8"))
    decoder = gpt2_byte_decoder()
    quant_type = QUANT_TYPES.get(ftype)
    file_ftype = FTYPES[ftype] + (2000 if quant_type is not None else 0)
    with open(path, "wb") as out:
        out.write(struct.pack("<I", 0x67676D6C))
        out.write(struct.pack("<7i", config["vocab_size"], config["n_positions"], config["n_embd"],
                              config["n_head"], config["n_layer"], config["rotary_dim"], file_ftype))  # fmt: skip
        tokens = [*vocab, *added]
        out.write(struct.pack("<i", len(tokens)))
        for token in tokens:
            raw = bytes(decoder[char] for char in token)
            out.write(struct.pack("<I", len(raw)) + raw)
        for name, tensor in state_dict.items():
            if name.endswith((".attn.bias", ".attn.masked_bias")):
                continue
            data = tensor.float().numpy()
            is_matrix = name.endswith(".weight") and data.ndim == 2
            if is_matrix and quant_type is not None:
                # gpt-j-quantize reads the f16 file: it quantizes the f16-rounded values.
                rounded = data.astype(np.float16).astype(np.float32)
                ttype, payload = quant_type, gguf.quants.quantize(rounded, quant_type).tobytes()
            elif is_matrix and ftype != "f32":
                ttype, payload = T.F16, data.astype("<f2").tobytes()
            else:
                ttype, payload = T.F32, data.astype("<f4").tobytes()
            encoded_name = name.encode()
            out.write(struct.pack("<3i", data.ndim, len(encoded_name), int(ttype)))
            out.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
            out.write(encoded_name)
            out.write(payload)
    return path
