"""Seeded mutations of the fuzz fixtures, one reader at a time.

``make_case(reader, seed, index, fixtures, work)`` copies the base input of ``reader`` into
``work`` and damages it with 1-3 mutations drawn from ``random.Random(f"{seed}:{reader}:{index}")``,
so a case is reproduced from its three numbers. Mutations aim at the structure each reader
parses (hyper-parameter fields, tokenizer entries, safetensors header JSON, pickle strides and
opcodes, legacy header integers) as well as plain byte flips and truncations.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from .fixtures import HPARAMS, VOCAB_SIZE, state_dict

READERS = ("config", "tokenizer", "safetensors", "bin", "legacy")
_OUTTYPES = (None, None, None, None, "f32", "q8_0")


@dataclass
class Case:
    reader: str
    seed: int
    index: int
    src: Path
    outtype: str | None
    mutations: list[str]


def make_case(reader: str, seed: int, index: int, fixtures: dict[str, Path], work: Path) -> Case:
    """Case ``index`` of ``reader`` for ``seed``: its mutated input lies in ``work`` (an empty folder)."""
    rng = random.Random(f"{seed}:{reader}:{index}")
    builder = _BUILDERS[reader]
    src, mutations = builder(rng, fixtures, work)
    return Case(reader, seed, index, src, rng.choice(_OUTTYPES), mutations)


# Values a field may be changed into: wrong types, edges of the engine's ranges, absurd sizes.


def odd_value(rng: random.Random) -> Any:
    return rng.choice([
        -1, 0, 1, 2, 3, 4, 7, 8, 16, 31, 32, 33, 64, 256, 2**24, 2**24 + 1, 2**31, 2**32 + 5, 2**63, 10**7, 10**30,
        -(2**63), 1.5, 1e-5, 0.0, -0.0, 1e-50, 0.9999999999, 1.0, float("nan"), float("inf"), -float("inf"), 1e300,
        "", "7", "abc", "\u0000", "\ud800", "a b", "Ġ", "<|endoftext|>", "x" * 5000, [], [1], [1, 2], ["a", "b"],
        {}, {"content": "a"}, {"a": 1}, None, True, False, [[[[[]]]]],
    ])  # fmt: skip


def nearby_int(value: int, rng: random.Random) -> int:
    return rng.choice([value + 1, value - 1, value * 2, value // 2, value + 32, 0, -value])


def flip_bytes(data: bytes, rng: random.Random, region: tuple[int, int] | None = None) -> tuple[bytes, str]:
    if not data:
        return data, "nothing to flip"
    begin, end = region or (0, len(data))
    end = max(begin + 1, min(end, len(data)))
    out = bytearray(data)
    positions = [rng.randrange(begin, end) for _ in range(rng.choice([1, 1, 2, 4, 16]))]
    for position in positions:
        out[position] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256), out[position] ^ (1 << rng.randrange(8))])
    return bytes(out), f"flipped bytes at {positions[:4]}"


def truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    cut = rng.choice([0, 1, 4, 8, len(data) // 2, len(data) - 1, rng.randrange(len(data) + 1)])
    return data[: max(0, cut)], f"truncated to {cut} bytes"


def append_garbage(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    extra = bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 64])))
    return data + extra, f"appended {len(extra)} bytes"


def edit_json(document: Any, rng: random.Random, keys: list[str] | None = None) -> tuple[Any, str]:
    """Replace, delete or add one value somewhere in ``document`` (or among ``keys`` of the top object)."""
    if keys and isinstance(document, dict) and rng.random() < 0.7:
        key = rng.choice(keys)
        action = rng.choice(["odd", "odd", "nearby", "delete"])
        if action == "delete":
            document.pop(key, None)
            return document, f"deleted {key}"
        old = document.get(key)
        value = nearby_int(old, rng) if action == "nearby" and isinstance(old, int) else odd_value(rng)
        document[key] = value
        return document, f"{key} = {value!r:.60}"
    path, node = [], document
    while isinstance(node, (dict, list)) and node and rng.random() < 0.75:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        parent, node = node, node[key]
        path.append(key)
    if not path:
        return odd_value(rng), "the whole document replaced"
    *_, key = path
    action = rng.choice(["odd", "odd", "delete", "add"])
    if action == "delete":
        del parent[key]
        return document, f"deleted {path}"[:100]
    if action == "add" and isinstance(parent, dict):
        parent[f"extra{rng.randrange(10)}"] = odd_value(rng)
        return document, f"added a key next to {path}"[:100]
    parent[key] = odd_value(rng)
    return document, f"{path} = {parent[key]!r:.60}"[:120]


def _encode(text: str) -> bytes:
    # Texts are read with surrogateescape, so that a mutation of a mutated (non-UTF-8) file still works.
    return text.encode("utf-8", "surrogateescape")


def json_text_mutation(text: str, rng: random.Random) -> tuple[bytes, str]:
    """Edits only text can make: a duplicate key, deep nesting, huge number literals, bad UTF-8, a BOM."""
    choice = rng.randrange(6)
    if choice == 0 and text.startswith("{"):
        key = rng.choice(["n_embd", "vocab_size", "model", "weight_map", "a", "dtype"])
        return _encode("{" + json.dumps(key) + ": 5, " + text[1:]), f"duplicate key {key}"
    if choice == 1:
        depth = rng.choice([50, 2000, 100000])
        return _encode(text.replace(": ", ": " + "[" * depth + "]" * depth + " and ", 1)), f"nesting {depth} deep"
    if choice == 2:
        return _encode(text.replace(": ", ": 1" + "0" * rng.choice([30, 5000]), 1)), "a huge number literal"
    if choice == 3:
        raw = _encode(text)
        position = rng.randrange(len(raw) + 1)
        return raw[:position] + b"\xff\xfe\xc3" + raw[position:], "invalid UTF-8"
    if choice == 4:
        return b"\xef\xbb\xbf" + _encode(text), "a UTF-8 BOM"
    return _encode(text.replace('"', "'", rng.randrange(1, 4))), "single quotes"


def _file_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    return rng.choice([flip_bytes, flip_bytes, truncate, append_garbage])(data, rng)


# config.json

_CONFIG_KEYS = [
    "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "rotary_dim", "n_inner", "layer_norm_epsilon",
    "model_type", "activation_function", "tie_word_embeddings", "_name_or_path",
]  # fmt: skip


def _config_case(rng: random.Random, fixtures: dict[str, Path], work: Path) -> tuple[Path, list[str]]:
    folder = Path(shutil.copytree(fixtures[rng.choice(["safetensors", "bin"])], work / "checkpoint"))
    path = folder / "config.json"
    mutations = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        kind = rng.random()
        if kind < 0.7:
            try:
                document = json.loads(text)
            except (ValueError, RecursionError):  # an earlier mutation broke it
                document = {}
            document, what = edit_json(document, rng, _CONFIG_KEYS)
            path.write_text(json.dumps(document), encoding="utf-8", errors="surrogatepass")
        elif kind < 0.85:
            data, what = json_text_mutation(text, rng)
            path.write_bytes(data)
        else:
            data, what = _file_mutation(path.read_bytes(), rng)
            path.write_bytes(data)
        mutations.append(f"config.json: {what}")
    return folder, mutations


# Tokenizer files


def _tokenizer_case(rng: random.Random, fixtures: dict[str, Path], work: Path) -> tuple[Path, list[str]]:
    folder = Path(shutil.copytree(fixtures["safetensors"], work / "checkpoint"))
    mutations = []
    if rng.random() < 0.5:
        (folder / "tokenizer.json").unlink()
        mutations.append("no tokenizer.json (vocab.json + merges.txt)")
    files = [
        name
        for name in ("tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json",
                     "tokenizer_config.json")
        if (folder / name).exists()
    ]  # fmt: skip
    for _ in range(rng.choice([1, 1, 2, 3])):
        name = rng.choice(files)
        path = folder / name
        kind = rng.random()
        if kind < 0.1:
            data, what = _file_mutation(path.read_bytes(), rng)
            path.write_bytes(data)
        elif kind < 0.2 and name != "merges.txt":
            data, what = json_text_mutation(path.read_text(encoding="utf-8", errors="surrogateescape"), rng)
            path.write_bytes(data)
        elif name == "merges.txt":
            what = _mutate_merges_txt(path, rng)
        else:
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, RecursionError):  # an earlier mutation broke it
                document = {}
            document, what = _mutate_tokenizer_json(name, document, rng)
            path.write_text(
                json.dumps(document, ensure_ascii=rng.random() < 0.5), encoding="utf-8", errors="surrogatepass"
            )
        mutations.append(f"{name}: {what}")
    return folder, mutations


def _odd_token(rng: random.Random) -> str:
    return rng.choice(
        ["", " ", "a b", "Ġthe", "he", "zz", "\u0000", "\ud800", "é", "x" * 3000, "<|endoftext|>", "\u2028"]
    )


def _mutate_vocab(vocab: dict, rng: random.Random) -> str:
    if not isinstance(vocab, dict) or not vocab:
        return "(no vocabulary to edit)"
    token = rng.choice(list(vocab))
    action = rng.randrange(5)
    if action == 0:
        vocab[token] = rng.choice([odd_value(rng), rng.choice(list(vocab.values())), VOCAB_SIZE, VOCAB_SIZE - 1, -1])
        return f"token {token!r} gets id {vocab[token]!r:.40}"
    if action == 1:
        del vocab[token]
        return f"token {token!r} removed"
    if action == 2:
        new = _odd_token(rng)
        vocab[new] = rng.choice([len(vocab), VOCAB_SIZE - 1, vocab[token], odd_value(rng)])
        return f"token {new!r:.40} added with id {vocab[new]!r:.40}"
    if action == 3:
        vocab[_odd_token(rng)] = vocab.pop(token)
        return f"token {token!r} renamed"
    vocab.clear()
    vocab["a"] = 0
    return "vocabulary replaced by one token"


def _mutate_merges(merges: list, rng: random.Random) -> str:
    if not isinstance(merges, list) or not merges:
        return "(no merges to edit)"
    index = rng.randrange(len(merges))
    action = rng.randrange(5)
    if action == 0:
        merges[index] = rng.choice(["a b c", "ab", " a", "a ", "zz yy", "t h", "Ġ Ġ", ["h", "e"], ["a b", "c"],
                                    [1, 2], ["h"], None, "h\u0000 e", odd_value(rng)])  # fmt: skip
        return f"merge {index} = {merges[index]!r:.40}"
    if action == 1:
        del merges[index]
        return f"merge {index} removed"
    if action == 2:
        other = rng.randrange(len(merges))
        merges[index], merges[other] = merges[other], merges[index]
        return f"merges {index} and {other} swapped"
    if action == 3:
        merges.insert(index, merges[index])
        return f"merge {index} repeated"
    merges.append("Ġ q")
    return "a merge appended"


def _mutate_tokenizer_json(name: str, document: Any, rng: random.Random) -> tuple[Any, str]:
    if not isinstance(document, dict) or rng.random() < 0.25:
        return edit_json(document, rng)
    if name == "tokenizer.json":
        model = document.get("model")
        choice = rng.randrange(3)
        if choice == 0 and isinstance(model, dict):
            return document, _mutate_vocab(model.get("vocab"), rng)
        if choice == 1 and isinstance(model, dict):
            return document, _mutate_merges(model.get("merges"), rng)
        entries = document.get("added_tokens")
        if isinstance(entries, list) and entries:
            entry = rng.choice(entries)
            if rng.random() < 0.3:
                entries.append(dict(entry))
                return document, "an added token listed twice"
            _, what = edit_json(entry, rng, ["id", "content", "special"])
            return document, f"added token: {what}"
        return edit_json(document, rng)
    if name in ("vocab.json", "added_tokens.json"):
        return document, _mutate_vocab(document, rng)
    keys = ["bos_token", "eos_token", "unk_token", "pad_token", "additional_special_tokens", "added_tokens_decoder",
            "chat_template"]  # fmt: skip
    return edit_json(document, rng, keys)


def _mutate_merges_txt(path: Path, rng: random.Random) -> str:
    lines = path.read_bytes().split(b"\n")
    index = rng.randrange(len(lines))
    action = rng.randrange(5)
    if action == 0:
        lines[index] = rng.choice(
            [b"a b c", b"ab", b"zz yy", b" a", b"\xff \xfe", b"h\x00 e", b"h e\r", b"#version: 0.2"]
        )
        return f"line {index} replaced"
    if action == 1:
        del lines[index]
        return f"line {index} removed"
    if action == 2:
        lines.insert(index, lines[index])
        return f"line {index} repeated"
    if action == 3:
        path.write_bytes(b"\r\n".join(lines))
        return "CRLF line ends"
    lines.insert(index, "Ġ\u2028 e".encode())
    path.write_bytes(b"\n".join(lines))
    return "a line with U+2028"


# safetensors


def _safetensors_case(rng: random.Random, fixtures: dict[str, Path], work: Path) -> tuple[Path, list[str]]:
    folder = Path(shutil.copytree(fixtures["safetensors"], work / "checkpoint"))
    path = folder / "model.safetensors"
    mutations = []
    for _ in range(rng.choice([1, 1, 2])):
        raw = path.read_bytes()
        if len(raw) < 8:
            break  # an earlier mutation cut the file
        (length,) = struct.unpack_from("<Q", raw)
        kind = rng.random()
        if kind < 0.6 and 8 + length <= len(raw):
            try:
                header = json.loads(raw[8 : 8 + length])
            except (ValueError, RecursionError):  # an earlier mutation broke it
                header = {}
            what = _mutate_safetensors_header(header, rng)
            text = json.dumps(header).encode("utf-8", "surrogatepass")
            text += b" " * rng.choice([0, 0, (8 - len(text) % 8) % 8])
            path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])
        elif kind < 0.7:
            value = rng.choice([0, 1, 2, length - 1, length + 1, len(raw), len(raw) - 8, 2**63, 2**64 - 1, 100 << 20])
            path.write_bytes(struct.pack("<Q", value % 2**64) + raw[8:])
            what = f"header length {value}"
        elif kind < 0.8:
            data, what = json_text_mutation(raw[8 : 8 + length].decode("utf-8", "surrogateescape"), rng)
            path.write_bytes(struct.pack("<Q", len(data)) + data + raw[8 + length :])
        elif kind < 0.9:
            data, what = flip_bytes(raw, rng, (0, 8 + length))
            path.write_bytes(data)
        else:
            data, what = _file_mutation(raw, rng)
            path.write_bytes(data)
        mutations.append(f"model.safetensors: {what}")
    return folder, mutations


def _mutate_safetensors_header(header: Any, rng: random.Random) -> str:
    names = [name for name in header if name != "__metadata__"] if isinstance(header, dict) else []
    if not names or rng.random() < 0.1:
        return edit_json(header, rng)[1]
    name = rng.choice(names)
    entry = header[name]
    if not isinstance(entry, dict):
        return "(entry not an object)"
    action = rng.randrange(9)
    offsets = entry.get("data_offsets")
    if action == 0 and isinstance(offsets, list) and len(offsets) == 2:
        begin, end = offsets
        shift = rng.choice([-8, -2, -1, 1, 2, 4096])
        entry["data_offsets"] = rng.choice([[begin + shift, end + shift], [end, begin], [-8, end - begin - 8],
                                            [begin, end + 2], [begin + 2, end], [0, end - begin]])  # fmt: skip
        return f"{name}: data_offsets {entry['data_offsets']}"
    if action == 1:
        other = header[rng.choice(names)]
        if isinstance(other, dict):
            entry["data_offsets"] = other.get("data_offsets")
        return f"{name}: the data_offsets of another tensor"
    if action == 2:
        shape = entry.get("shape")
        if isinstance(shape, list):
            entry["shape"] = rng.choice([shape[::-1], [*shape, 1], shape[:-1], [s * 2 for s in shape], [-s for s in shape],
                                         [float(s) for s in shape], [odd_value(rng)], []])  # fmt: skip
        return f"{name}: shape {entry.get('shape')!r:.60}"
    if action == 3:
        entry["dtype"] = rng.choice(["F32", "BF16", "F64", "I16", "U8", "F8_E4M3", "f16", "", None, 16])
        return f"{name}: dtype {entry['dtype']!r}"
    if action == 4:
        del header[name]
        return f"{name} removed"
    if action == 5:
        header[name + ".copy"] = dict(entry)
        return f"{name} copied under another name"
    if action == 6:
        header["__metadata__"] = rng.choice([{"format": "pt"}, {"format": 1}, [], "pt", None])
        return f"__metadata__ = {header['__metadata__']!r}"
    if action == 7:
        header[rng.choice(["transformer.h.9.ln_1.weight", "x", "lm_head.weight\n"])] = dict(entry)
        return "an entry added"
    return edit_json(entry, rng, ["dtype", "shape", "data_offsets"])[1]


# PyTorch .bin


def _bin_case(rng: random.Random, fixtures: dict[str, Path], work: Path) -> tuple[Path, list[str]]:
    from torch_zip_writer import PickledTensor, read_torch_zip_members, rewrite_zip, state_dict_pickle, write_torch_zip

    folder = Path(shutil.copytree(fixtures["bin"], work / "checkpoint"))
    path = folder / "pytorch_model.bin"
    kind = rng.random()
    if kind < 0.45:
        # A pickle of our own with the fixture's tensors, some laid out wrongly.
        weights = {name: value.astype(np.float16) for name, value in state_dict().items()}
        tensors = {
            name: PickledTensor(
                str(i), value.shape, tuple(s // 2 for s in value.strides), storage_class="HalfStorage", numel=value.size
            )
            for i, (name, value) in enumerate(weights.items())
        }
        storages = {str(i): value.tobytes() for i, value in enumerate(weights.values())}
        mutations = [_mutate_layout(tensors, storages, rng) for _ in range(rng.choice([1, 1, 2, 3]))]
        compression = rng.choice([0, 0, 0, 8])
        write_torch_zip(path, state_dict_pickle(tensors), storages, compression=compression)
        if compression:
            mutations.append("deflated members")
        return folder, mutations
    if kind < 0.8:
        prefix, members = read_torch_zip_members(path)
        pickle_name = f"{prefix}/data.pkl"
        data = members[pickle_name]
        action = rng.randrange(4)
        if action == 0:
            data, what = flip_bytes(data, rng)
        elif action == 1:
            position = rng.randrange(len(data))
            inserted = _random_opcodes(rng)
            data, what = (
                data[:position] + inserted + data[position:],
                f"opcodes {inserted[:12]!r} inserted at {position}",
            )
        elif action == 2:
            data, what = truncate(data, rng)
        else:
            begin = rng.randrange(len(data))
            data, what = data[:begin] + data[begin + rng.randrange(1, 40) :], f"bytes removed at {begin}"
        members[pickle_name] = data
        rewrite_zip(path, members)
        return folder, [f"data.pkl: {what}"]
    data, what = _file_mutation(path.read_bytes(), rng)
    path.write_bytes(data)
    return folder, [f"pytorch_model.bin: {what}"]


def _mutate_layout(tensors: dict, storages: dict[str, bytes], rng: random.Random) -> str:
    name = rng.choice(list(tensors))
    tensor = tensors[name]
    n_dims = len(tensor.size)
    action = rng.randrange(8)
    if action == 0:
        dim = rng.randrange(n_dims) if n_dims else 0
        stride = list(tensor.stride) or [1]
        stride[dim] = rng.choice([-1, -stride[dim], 0, 2**62, 2**63 - 1, 2**63, stride[dim] + 1, -(2**63)])
        if n_dims >= 2 and rng.random() < 0.5:
            stride[1 - dim] = -stride[dim] + rng.choice([0, 1])  # terms that cancel in the span
        tensor.stride = tuple(stride[:n_dims]) if n_dims else ()
        return f"{name}: stride {tensor.stride}"
    if action == 1:
        numel = len(storages.get(tensor.storage_key, b"")) // 2  # an earlier mutation may have renamed it
        tensor.storage_offset = rng.choice([-1, -numel, 1, numel, numel - 1, 2**62, 2**63])
        return f"{name}: storage offset {tensor.storage_offset}"
    if action == 2:
        tensor.size = tuple(rng.choice([s, s + 1, 0, -s, 2**40]) for s in tensor.size)
        return f"{name}: size {tensor.size}"
    if action == 3:
        if n_dims == 2:
            tensor.stride = (1, tensor.size[0])  # a transposed view of the storage: valid, other values
        return f"{name}: transposed strides"
    if action == 4:
        tensor.numel = rng.choice([None, tensor.numel + 1 if tensor.numel else 1, 0, -1, 2**63])
        return f"{name}: numel {tensor.numel}"
    if action == 5:
        tensor.storage_key = rng.choice([*storages, "missing", "../0", "", "0/1"])
        return f"{name}: storage key {tensor.storage_key!r}"
    if action == 6:
        tensor.storage_class = rng.choice(["FloatStorage", "BFloat16Storage", "BoolStorage", "LongStorage", "Storage"])
        return f"{name}: {tensor.storage_class}"
    key = tensor.storage_key
    if key in storages:
        storages[key] = storages[key][: rng.choice([0, 1, len(storages[key]) // 2, len(storages[key]) - 2])]
    return f"{name}: storage {key} cut short"


def _random_opcodes(rng: random.Random) -> bytes:
    pieces = []
    for _ in range(rng.randrange(1, 6)):
        pieces.append(rng.choice([
            pickle.MARK, pickle.TUPLE, pickle.EMPTY_LIST, pickle.APPEND, pickle.EMPTY_DICT, pickle.SETITEM,
            pickle.DUP, pickle.POP, pickle.REDUCE, pickle.BUILD, pickle.BINPERSID, pickle.STOP, pickle.NONE,
            pickle.BININT1 + bytes([rng.randrange(256)]), pickle.BINGET + bytes([rng.randrange(40)]),
            pickle.BINPUT + bytes([rng.randrange(40)]), pickle.LONG_BINGET + b"\xff\xff\xff\xff",
            pickle.GLOBAL + b"os\nsystem\n", pickle.GLOBAL + b"torch\nFloatStorage\n", pickle.BINUNICODE + b"\xff\xff\xff\x7f",
            pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3, pickle.EMPTY_TUPLE, pickle.POP_MARK, pickle.APPENDS,
            pickle.SETITEMS, pickle.MEMOIZE, pickle.STACK_GLOBAL, pickle.LONG1 + b"\x09" + b"\x7f" * 9, b"\x8c", b"i",
        ]))  # fmt: skip
    return b"".join(pieces)


# Legacy GGML


def legacy_layout(data: bytes) -> dict[str, Any]:
    """Byte positions of a legacy file's fields: the header, the vocabulary, each tensor's header."""
    (n_tokens,) = struct.unpack_from("<i", data, 32)
    pos, token_lengths = 36, []
    for _ in range(n_tokens):
        token_lengths.append(pos)
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 4 + length
    tensors = []
    while pos < len(data):
        n_dims, name_length, tensor_type = struct.unpack_from("<3i", data, pos)
        ne = struct.unpack_from(f"<{n_dims}i", data, pos + 12)
        block_size, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(tensor_type)]
        nbytes = int(np.prod(ne)) // block_size * type_size
        tensors.append(pos)
        pos += 12 + 4 * n_dims + name_length + nbytes
    return {"token_lengths": token_lengths, "tensors": tensors}


def legacy_layout_end(layout: dict[str, Any]) -> int:
    """The length below which the positions of ``layout`` are no longer all inside the file."""
    return layout["tensors"][-1] + 32


def _legacy_case(rng: random.Random, fixtures: dict[str, Path], work: Path) -> tuple[Path, list[str]]:
    source = fixtures[rng.choice(["legacy", "legacy", "legacy-q4_0"])]
    path = Path(shutil.copy(source, work / source.name))
    data = bytearray(path.read_bytes())
    layout = legacy_layout(bytes(data))
    mutations = []
    int32_pool = [-1, 0, 1, 2, 3, 7, 8, 31, 32, 33, 64, 256, 2**24, 2**24 + 1, 2**31 - 1, -(2**31), 1000, 1001,
                  2001, 2002, 10**6, VOCAB_SIZE, VOCAB_SIZE + 1, HPARAMS["n_layer"] + 1]  # fmt: skip
    for _ in range(rng.choice([1, 1, 2])):
        if len(data) < legacy_layout_end(layout):
            break  # an earlier mutation cut the file
        kind = rng.random()
        if kind < 0.35:
            field = rng.randrange(7)
            old = struct.unpack_from("<i", data, 4 + 4 * field)[0]
            value = rng.choice([*int32_pool, nearby_int(old, rng)])
            struct.pack_into("<i", data, 4 + 4 * field, max(-(2**31), min(2**31 - 1, value)))
            what = f"header field {field} = {value}"
        elif kind < 0.45:
            position = rng.choice([32, *rng.sample(layout["token_lengths"], 3)])
            value = rng.choice([0, 1, 5, 129, 1025, 2**31 - 1, 2**32 - 1, VOCAB_SIZE + 1])
            struct.pack_into("<I", data, position, value)
            what = f"vocabulary count or length at {position} = {value}"
        elif kind < 0.75:
            position = rng.choice(layout["tensors"])
            field = rng.randrange(5)
            value = rng.choice([*int32_pool, 0, 1, 2, 3, 4, 5, 14, 15, 99])
            struct.pack_into("<i", data, position + 4 * field, max(-(2**31), min(2**31 - 1, value)))
            what = f"tensor header at {position}, field {field} = {value}"
        else:
            mutated, what = _file_mutation(bytes(data), rng)
            data = bytearray(mutated)
        mutations.append(f"legacy: {what}")
    path.write_bytes(bytes(data))
    return path, mutations


_BUILDERS: dict[str, Callable[[random.Random, dict[str, Path], Path], tuple[Path, list[str]]]] = {
    "config": _config_case,
    "tokenizer": _tokenizer_case,
    "safetensors": _safetensors_case,
    "bin": _bin_case,
    "legacy": _legacy_case,
}
