"""The converter refuses exactly what the engine refuses to load, so every file it writes loads.

One set of rules: GptjHparams.check mirrors csrc/gptj/hparams.cpp and TokenizerData.check mirrors
csrc/gptj/tokenizer/vocab.cpp. For each rule a checkpoint that breaks it is refused with a
ConversionError naming the field; and, as properties, for hyper-parameters and vocabularies
around the rules' edges the converter accepts a checkpoint if and only if the engine loads the
file written from it without the converter's checks (the engine as the reference).
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptj_ggml import Model
from gptj_ggml.convert import convert_checkpoint, expected_tensors, read_checkpoint, read_hparams, read_tokenizer
from gptj_ggml.convert import hparams as hparams_module
from gptj_ggml.convert.converter import plan_tensors
from gptj_ggml.convert.gguf_output import write_gguf
from gptj_ggml.convert.quant_types import OUTTYPES
from gptj_ggml.convert.tokenizer_data import TokenizerData
from gptj_ggml.errors import ConversionError, GptjError

from fuzz.fixtures import VOCAB_SIZE, config, write_checkpoint, write_tokenizer

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("rules") / "checkpoint", "safetensors")


def _checkpoint(folder: Path, **overrides) -> Path:
    """A checkpoint whose tensors have the shapes of config() with ``overrides`` (whatever the rules say)."""
    folder.mkdir(parents=True)
    settings_ = {**config(), **overrides}
    (folder / "config.json").write_text(json.dumps(settings_))
    write_tokenizer(folder)
    n_embd, n_inner = settings_["n_embd"], settings_["n_inner"] or 4 * settings_["n_embd"]
    shapes = {
        "n_embd": n_embd,
        "n_inner": n_inner,
        "vocab_size": settings_["vocab_size"],
        "n_layer": settings_["n_layer"],
    }
    rng = np.random.default_rng(0)
    weights = {
        spec.hf_name: (0.05 * rng.standard_normal(spec.shape)).astype(np.float16)
        for spec in expected_tensors(_Shapes(**shapes))
    }
    safetensors.numpy.save_file(weights, folder / "model.safetensors")
    return folder


class _Shapes:
    """What expected_tensors reads of the hyper-parameters."""

    def __init__(self, n_embd: int, n_inner: int, vocab_size: int, n_layer: int) -> None:
        self.n_embd, self.n_inner, self.vocab_size, self.n_layer = n_embd, n_inner, vocab_size, n_layer


def _engine_loads(path: Path) -> bool:
    try:
        Model(path, n_threads=1)
    except GptjError:
        return False
    return True


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"n_head": 3}, "n_embd 32 is not a multiple of n_head 3"),
        ({"rotary_dim": 7}, "rotary_dim 7 must be even and at most the head size 16"),
        ({"rotary_dim": 18}, "rotary_dim 18 must be even and at most the head size 16"),
        ({"rotary_dim": 0}, "rotary_dim is 0, expected an integer from 1 to 16777216"),
        ({"n_positions": 2**24 + 1}, "n_positions is 16777217, expected an integer from 1 to 16777216"),
        ({"n_layer": 0}, "n_layer is 0, expected an integer from 1"),
        ({"n_head": -2}, "n_head is -2, expected an integer from 1"),
        ({"layer_norm_epsilon": float("nan")}, r"layer_norm_epsilon is nan, expected a number in \(0, 1\)"),
        ({"layer_norm_epsilon": float("inf")}, r"layer_norm_epsilon is inf"),
        ({"layer_norm_epsilon": -1e-5}, r"layer_norm_epsilon is -1e-05"),
        ({"layer_norm_epsilon": 0}, r"layer_norm_epsilon is 0"),
        ({"layer_norm_epsilon": 1.0}, r"layer_norm_epsilon is 1\.0"),
        ({"layer_norm_epsilon": 1e-50}, r"layer_norm_epsilon is 1e-50"),  # 0 as the float32 the file stores
        ({"layer_norm_epsilon": 0.99999999}, r"layer_norm_epsilon is 0\.99999999"),  # 1.0 as a float32
    ],
)
def test_a_config_breaking_an_engine_rule_is_refused_naming_the_field(tmp_path, overrides, match):
    folder = _checkpoint(tmp_path / "checkpoint", **overrides)
    with pytest.raises(ConversionError, match=rf"config\.json: {match}"):
        convert_checkpoint(folder, tmp_path / "model.gguf")


@pytest.mark.parametrize(
    "overrides",
    [{"n_positions": 2**24}, {"layer_norm_epsilon": 0.5}, {"rotary_dim": 16}, {"n_head": 1, "rotary_dim": 2}],
)
def test_a_config_at_the_edge_of_the_rules_converts_and_loads(tmp_path, overrides):
    folder = _checkpoint(tmp_path / "checkpoint", **overrides)
    assert _engine_loads(convert_checkpoint(folder, tmp_path / "model.gguf"))


def test_vocab_size_past_the_engine_bound_is_refused(tmp_path, base):
    folder = Path(shutil.copytree(base, tmp_path / "checkpoint"))
    settings_ = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**settings_, "vocab_size": 2**24 + 1}))
    with pytest.raises(ConversionError, match="vocab_size is 16777217, expected an integer from 1 to 16777216"):
        convert_checkpoint(folder, tmp_path / "model.gguf")


_EPSILONS = [1e-5, 0.5, 0.0, -1e-5, float("nan"), float("inf"), 1e-50, 1e-45, 1.0, 0.99999999, 1e300]


@_SETTINGS
@given(
    n_embd=st.sampled_from([1, 2, 6, 8, 16, 24, 32]),
    n_head=st.sampled_from([1, 2, 3, 4, 8, 0]),
    rotary_dim=st.integers(-1, 34),
    n_inner=st.sampled_from([1, 8, 48]),
    n_positions=st.sampled_from([1, 64, 2**24, 2**24 + 1, 0]),
    n_layer=st.sampled_from([1, 2]),
    epsilon=st.sampled_from(_EPSILONS),
)
def test_the_converter_accepts_hyper_parameters_exactly_when_the_engine_loads_them(
    tmp_path_factory, monkeypatch, n_embd, n_head, rotary_dim, n_inner, n_positions, n_layer, epsilon
):
    tmp_path = tmp_path_factory.mktemp("hparams")
    folder = _checkpoint(
        tmp_path / "checkpoint", n_embd=n_embd, n_head=n_head, rotary_dim=rotary_dim, n_inner=n_inner,
        n_positions=n_positions, n_layer=n_layer, layer_norm_epsilon=epsilon,
    )  # fmt: skip
    try:
        accepted = _engine_loads(convert_checkpoint(folder, tmp_path / "checked.gguf"))
        assert accepted, "the converter wrote a file the engine refuses"
    except ConversionError:
        accepted = False

    # The reference: the same file written without the converter's checks, loaded by the engine.
    with monkeypatch.context() as patch:
        patch.setattr(hparams_module.GptjHparams, "check", lambda self, source, field_names=None: None)
        try:
            unchecked = convert_checkpoint(folder, tmp_path / "unchecked.gguf")
        except (ConversionError, OverflowError, ValueError, struct.error):  # no float32 or uint32 form
            engine_loads = False
        else:
            engine_loads = _engine_loads(unchecked)
    assert accepted == engine_loads
    shutil.rmtree(tmp_path)


def test_a_merge_of_an_unknown_token_is_refused(tmp_path, base):
    folder = Path(shutil.copytree(base, tmp_path / "checkpoint"))
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["model"]["merges"].append("x z")  # "x" and "z" are byte tokens, "xz" is not a token
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ConversionError, match=r"tokenizer\.json: merge 40 \(x z\) needs the token xz, which is not"):
        convert_checkpoint(folder, tmp_path / "model.gguf")


@pytest.mark.parametrize(
    ("token", "match"),
    [("a\u0000b", r"token 300 \('a\\x00b'\) is not text"), ("\ud800", r"token 300 \('\\ud800'\) is not text")],
)
def test_a_token_no_gguf_string_can_hold_is_refused(tmp_path, base, token, match):
    folder = Path(shutil.copytree(base, tmp_path / "checkpoint"))
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"][token] = 300
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ConversionError, match=match):
        convert_checkpoint(folder, tmp_path / "model.gguf")


def test_a_bos_token_outside_the_vocabulary_is_refused(tmp_path, base):
    folder = Path(shutil.copytree(base, tmp_path / "checkpoint"))
    special = json.loads((folder / "special_tokens_map.json").read_text())
    (folder / "special_tokens_map.json").write_text(json.dumps({**special, "bos_token": "<s>"}))
    with pytest.raises(ConversionError, match="the bos token <s> is not in the vocabulary"):
        convert_checkpoint(folder, tmp_path / "model.gguf")


def test_a_legacy_tensor_named_twice_is_refused(tmp_path, base):
    from fuzz.fixtures import write_legacy

    path = write_legacy(tmp_path / "ggml-model-f16.bin", base)
    data = path.read_bytes()
    name = b"transformer.ln_f.weight"
    start = data.index(name) - 12 - 4  # n_dims, name length, type, one dim
    end = data.index(name) + len(name) + 4 * 32  # its 32 float32 values
    path.write_bytes(data + data[start:end])
    with pytest.raises(ConversionError, match=r"tensor transformer\.ln_f\.weight appears twice"):
        convert_checkpoint(path, tmp_path / "model.gguf")


# The vocabulary: TokenizerData.check against the engine's Vocab, through a written file.

_ODD_TOKENS = ["", " ", "a b", "a\u0000", "\ud800", "é", "Ġthe", "zz", "\u2028"]
_ODD_MERGES = ["h e", "x z", "q u", "h  e", "he", " h", "h ", "t he", "zz yy", "Ġ the", "a\u0000 b", "Ġ Ġ"]


@pytest.fixture(scope="module")
def toy_model(base):
    """(hparams, tokenizer data, tensors) of the tiny checkpoint, to write files from directly."""
    hparams = read_hparams(base)
    return hparams, read_tokenizer(base, hparams.vocab_size), plan_tensors(base, read_checkpoint(base), hparams, "f16")


@_SETTINGS
@given(
    replaced=st.lists(st.tuples(st.integers(0, VOCAB_SIZE - 1), st.sampled_from(_ODD_TOKENS)), max_size=2),
    merges=st.lists(st.tuples(st.integers(0, 45), st.sampled_from(_ODD_MERGES)), max_size=2),
    token_type=st.sampled_from([None, 0, 6, 7, -1]),
    bos=st.sampled_from([None, 0, -1, VOCAB_SIZE - 1, VOCAB_SIZE, -2]),
)
def test_the_converter_accepts_a_vocabulary_exactly_when_the_engine_loads_it(
    tmp_path_factory, toy_model, replaced, merges, token_type, bos
):
    hparams, original, tensors = toy_model
    data = TokenizerData(list(original.tokens), list(original.token_types), list(original.merges), original.bos_id,
                         original.eos_id)  # fmt: skip
    for token_id, token in replaced:
        data.tokens[token_id] = token
    for rank, merge in merges:
        data.merges.insert(min(rank, len(data.merges)), merge)
    if token_type is not None:
        data.token_types[5] = token_type
    if bos is not None:
        data.bos_id = bos
    try:
        data.check(Path("vocab"))
        accepted = True
    except ConversionError:
        accepted = False

    path = tmp_path_factory.mktemp("vocab") / "model.gguf"
    try:
        write_gguf(path, hparams, data, OUTTYPES["f16"].file_type, tensors)
    except (UnicodeEncodeError, OverflowError, ValueError, struct.error):  # a token or id no GGUF file holds
        engine_loads = False
    else:
        engine_loads = _engine_loads(path)
    # The engine reads GGUF strings as C strings: a token or merge with a NUL loads cut short.
    # The converter refuses those, so it alone may refuse what loads.
    has_nul = any("\0" in token for _, token in replaced) or any("\0" in merge for _, merge in merges)
    assert accepted == engine_loads or (has_nul and not accepted), (accepted, engine_loads)
    path.unlink(missing_ok=True)


def test_the_engine_reference_refuses_a_merge_the_converter_refuses(toy_model, tmp_path):
    # A direct check of the reference used above: "x z" (no "xz" token) fails to load.
    hparams, original, tensors = toy_model
    data = TokenizerData(list(original.tokens), list(original.token_types), [*original.merges, "x z"], 0, 0)
    write_gguf(tmp_path / "model.gguf", hparams, data, OUTTYPES["f16"].file_type, tensors)
    with pytest.raises(GptjError, match="needs the token 'xz'"):
        Model(tmp_path / "model.gguf")
    assert math.isfinite(hparams.layer_norm_epsilon)
