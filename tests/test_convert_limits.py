"""Time and memory stay in proportion to the input: a small file cannot make the converter build gigabytes.

The pickle of a .bin is bounded (bytes decompressed, opcodes, memo entries, nesting depth), JSON
files by size, and every count in config.json or a legacy header by what the file really holds:
shapes are checked one tensor at a time before anything is sized from the hyper-parameters.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from gptj_ggml.convert import convert_checkpoint, read_torch_zip, state_dict_pickle
from gptj_ggml.errors import ConversionError

from fuzz.fixtures import write_checkpoint, write_legacy
from torch_zip_writer import PickledTensor, pickle_int, pickle_str, write_torch_zip
from torch_zip_writer import state_dict_pickle as pickle_state_dict


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("limits") / "checkpoint", "safetensors")


def _bounded(function, *, seconds: float, mib: float):
    """Run ``function``; assert it took at most ``seconds`` and allocated at most ``mib`` MiB at its peak."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        function()
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        assert elapsed < seconds, f"took {elapsed:.1f} s"
        assert peak < mib, f"allocated {peak:.0f} MiB"


def _pickle_zip(path: Path, data_pkl: bytes, compression: int = zipfile.ZIP_STORED) -> Path:
    return write_torch_zip(path, data_pkl, {}, compression=compression)


def test_a_small_compressed_bin_whose_pickle_expands_past_the_bound_is_refused_cheaply(tmp_path):
    # 64 MiB of NONE opcodes deflate to ~64 KiB; read whole they would make 64 million objects.
    bomb = b"\x80\x02" + pickle.EMPTY_LIST + pickle.MARK + pickle.NONE * (64 << 20) + pickle.APPENDS + pickle.STOP
    path = _pickle_zip(tmp_path / "model.bin", bomb, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 300_000

    def read():
        with pytest.raises(ConversionError, match="data.pkl is larger than 33554432 bytes"):
            read_torch_zip(path)

    _bounded(read, seconds=10, mib=100)


def test_a_pickle_of_too_many_opcodes_is_refused_at_the_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(state_dict_pickle, "MAX_OPCODES", 1000)
    many = b"\x80\x02" + pickle.EMPTY_LIST + pickle.MARK + pickle.NONE * 2000 + pickle.APPENDS + pickle.STOP

    with pytest.raises(ConversionError, match="more than 1000 pickle opcodes"):
        read_torch_zip(_pickle_zip(tmp_path / "model.bin", many))


def test_a_pickle_of_too_many_memo_entries_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(state_dict_pickle, "MAX_MEMO_ENTRIES", 100)
    memo = (
        b"\x80\x02"
        + pickle.NONE
        + b"".join(pickle.LONG_BINPUT + struct.pack("<I", i) for i in range(200))
        + pickle.STOP
    )

    with pytest.raises(ConversionError, match="more than 100 memo entries"):
        read_torch_zip(_pickle_zip(tmp_path / "model.bin", memo))


def test_nesting_built_through_the_memo_is_refused_at_32_levels(tmp_path):
    # t0 = (); t1 = (t0,); t2 = (t1,) ...: the stack stays one deep, the object grows a level per step.
    steps = [pickle.EMPTY_TUPLE + pickle.BINPUT + b"\x00"]
    steps += [pickle.POP + pickle.BINGET + b"\x00" + pickle.TUPLE1 + pickle.BINPUT + b"\x00" for _ in range(100)]
    deep = b"\x80\x02" + b"".join(steps) + pickle.STOP

    with pytest.raises(ConversionError, match="nested more than 32 deep"):
        read_torch_zip(_pickle_zip(tmp_path / "model.bin", deep))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (pickle.EMPTY_LIST + pickle.BINPUT + b"\x00" + pickle.BINGET + b"\x00" + pickle.APPEND, "inside itself"),
        # a = []; b = [a]; then a is changed after it was stored in b (a could grow b's depth unseen).
        (
            pickle.EMPTY_LIST
            + pickle.BINPUT
            + b"\x00"
            + pickle.POP
            + pickle.EMPTY_LIST
            + pickle.BINGET
            + b"\x00"
            + pickle.APPEND
            + pickle.POP
            + pickle.BINGET
            + b"\x00"
            + pickle.NONE
            + pickle.APPEND,
            "changed after",
        ),
        (
            pickle.EMPTY_DICT
            + pickle_str("a")
            + pickle.NONE
            + pickle.SETITEM
            + pickle_str("a")
            + pickle.NONE
            + pickle.SETITEM,
            "the key 'a' is set twice",
        ),
        (pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.NONE + pickle.SETITEM, "not a plain value"),
        (pickle.GLOBAL + b"os\nsystem\n", r"uses os\.system"),
        (pickle.GLOBAL + b"torch\nFloatStorage\n" + pickle.EMPTY_TUPLE + pickle.REDUCE, "is called"),
        (pickle.LONG1 + b"\x40" + b"\x7f" * 64, "an integer of 64 bytes"),
        (pickle.BINUNICODE + struct.pack("<I", 2**31), "ends early"),
        (pickle.BINGET + b"\x07", "memo entry 7 is used before it is set"),
        (pickle.APPEND, "empty stack"),
        (b"c" + b"x" * 1000, "not terminated"),
        (pickle.NONE + pickle.NONE, "malformed stack"),
        (pickle.INST, "not one a state dict uses"),
    ],
)
def test_pickles_that_are_not_plain_state_dicts_are_refused_with_a_conversion_error(tmp_path, body, match):
    with pytest.raises(ConversionError, match=match):
        read_torch_zip(_pickle_zip(tmp_path / "model.bin", b"\x80\x02" + body + pickle.STOP))


def test_a_state_dict_with_a_tensor_set_twice_is_refused(tmp_path):
    tensor = PickledTensor("0", (1,), (1,), numel=1)
    twice = pickle_state_dict({"w": tensor, "x": tensor}).replace(pickle_str("x"), pickle_str("w"))

    with pytest.raises(ConversionError, match="the key 'w' is set twice"):
        read_torch_zip(write_torch_zip(tmp_path / "model.bin", twice, {"0": bytes(4)}))


def test_a_deflated_storage_claiming_more_than_deflate_can_give_is_refused(tmp_path):
    path = write_torch_zip(
        tmp_path / "model.bin",
        pickle_state_dict({"w": PickledTensor("0", (4,), (1,), numel=4)}),
        {"0": bytes(16)},
        compression=zipfile.ZIP_DEFLATED,
    )
    data = bytearray(path.read_bytes())
    # Make the central directory claim a 1 GiB storage (its uncompressed-size field).
    entry = data.rindex(b"PK\x01\x02", 0, data.rindex(b"archive/data/0") + 1)
    struct.pack_into("<I", data, entry + 24, 1 << 30)
    path.write_bytes(bytes(data))

    with pytest.raises(ConversionError, match="more than deflate can give"):
        read_torch_zip(path)


def test_the_real_bound_leaves_room_for_state_dicts_far_larger_than_gpt_j(tmp_path):
    # 3000 tensors (GPT-J-6B has 285): a pickle of ~90 000 opcodes.
    tensors = {f"t{i}": PickledTensor(str(i), (1,), (1,), numel=1) for i in range(3000)}
    path = write_torch_zip(
        tmp_path / "model.bin",
        pickle_state_dict(tensors),
        {str(i): bytes(4) for i in range(3000)},
    )
    assert len(read_torch_zip(path)) == 3000


@pytest.mark.parametrize(
    ("field", "match"),
    [
        ("vocab_size", r"transformer\.wte\.weight has shape \[320, 32\], expected \[10000000, 32\]"),
        ("n_inner", r"fc_in\.weight has shape \[128, 32\], expected \[10000000, 32\]"),
        ("n_layer", r"tensor transformer\.h\.2\.ln_1\.weight is missing"),
        ("n_positions", "n_positions is 100000000, expected an integer from 1 to 16777216"),
    ],
)
def test_a_huge_count_in_config_json_is_refused_before_anything_is_sized_from_it(checkpoint, tmp_path, field, match):
    folder = Path(shutil.copytree(checkpoint, tmp_path / "checkpoint"))
    config = json.loads((folder / "config.json").read_text())
    config[field] = 10**8 if field == "n_positions" else 10**7
    (folder / "config.json").write_text(json.dumps(config))

    def convert():
        with pytest.raises(ConversionError, match=match):
            convert_checkpoint(folder, tmp_path / "out.gguf")

    _bounded(convert, seconds=5, mib=50)


def test_n_layer_of_a_million_in_a_legacy_header_is_refused_cheaply(checkpoint, tmp_path):
    path = write_legacy(tmp_path / "ggml-model-f16.bin", checkpoint)
    data = bytearray(path.read_bytes())
    struct.pack_into("<i", data, 4 + 4 * 4, 10**6)  # n_layer, the fifth header field
    path.write_bytes(bytes(data))

    def convert():
        with pytest.raises(ConversionError, match=r"tensor transformer\.h\.2\.ln_1\.weight is missing"):
            convert_checkpoint(path, tmp_path / "out.gguf")

    _bounded(convert, seconds=5, mib=50)


def test_a_legacy_vocabulary_count_larger_than_the_file_can_hold_is_refused(checkpoint, tmp_path):
    path = write_legacy(tmp_path / "ggml-model-f16.bin", checkpoint)
    data = bytearray(path.read_bytes())
    struct.pack_into("<i", data, 4, 2**24)  # n_vocab
    struct.pack_into("<i", data, 32, 2**24)  # the vocabulary's token count
    path.write_bytes(bytes(data))

    with pytest.raises(ConversionError, match="16777216 tokens need more than the"):
        convert_checkpoint(path, tmp_path / "out.gguf")


@pytest.mark.parametrize(("file_name", "size"), [("config.json", 2 << 20), ("special_tokens_map.json", 17 << 20)])
def test_json_files_far_larger_than_their_kind_are_refused_unread(checkpoint, tmp_path, file_name, size):
    folder = Path(shutil.copytree(checkpoint, tmp_path / "checkpoint"))
    document = json.loads((folder / file_name).read_text())
    document["padding"] = "x" * size
    (folder / file_name).write_text(json.dumps(document))

    with pytest.raises(ConversionError, match=f"{file_name}: larger than"):
        convert_checkpoint(folder, tmp_path / "out.gguf")


def test_pickle_int_helper_writes_what_pickle_reads():
    # The test writer's integers are those of pickle itself (an independent check of the helper).
    for value in (0, -1, 2**31 - 1, -(2**31), 2**31, 2**63, -(2**70)):
        assert pickle.loads(b"\x80\x02" + pickle_int(value) + pickle.STOP) == value
