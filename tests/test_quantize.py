"""Quantized models: every type loads and stays close to f16; files follow the type policy;
quantizing an f16 GGUF equals converting straight to the type, bit for bit."""

from __future__ import annotations

import os
import stat

import gguf
import numpy as np
import pytest

from gptj_ggml import Model
from gptj_ggml.convert.gguf_input import read_gguf_header
from gptj_ggml.convert.gguf_output import FALLBACKS_KEY
from gptj_ggml.convert.quantize import quantize
from gptj_ggml.errors import ConversionError
from gptj_ggml.perplexity import log_softmax

from quant_fixtures import PROMPT, QUANT_CHECKPOINT, tensor_bytes, tensor_types

T = gguf.GGMLQuantizationType

# Mean KL(f16 || type) over PROMPT's 96 positions, in nats. Measured on this random model:
# bf16 1e-5, q8_0 1e-4, q6_K 7e-4, q5_K/q5_1/q5_0 2-3e-3, q4_K/iq4_nl/q4_1/q4_0 0.008-0.011,
# q3_K 0.027, q2_K 0.09. Each bound is about 3x the measurement: loose enough for another
# platform's rounding, tight enough that a type one step worse (roughly 4x the KL per bit
# lost) or a mis-ordered block would fail.
KL_BOUNDS = {
    "bf16": 5e-5, "q8_0": 5e-4, "q6_K": 2.5e-3, "q5_1": 8e-3, "q5_0": 1e-2, "q5_K": 8e-3,
    "q4_1": 3e-2, "q4_0": 3.5e-2, "q4_K": 3e-2, "iq4_nl": 3e-2, "q3_K": 8e-2, "q2_K": 0.3,
}  # fmt: skip
#: Types whose blocks gguf-py's reference quantizers (numpy, independent of ggml) produce.
REFERENCE_TYPES = {"bf16": T.BF16, "q8_0": T.Q8_0, "q5_1": T.Q5_1, "q5_0": T.Q5_0, "q4_1": T.Q4_1, "q4_0": T.Q4_0}


def mean_kl(reference: np.ndarray, other: np.ndarray) -> float:
    log_p, log_q = log_softmax(reference), log_softmax(other)
    return float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean())


@pytest.mark.parametrize("outtype", list(KL_BOUNDS))
def test_every_type_loads_and_its_logits_stay_close_to_f16(outtype, quant_logits):
    logits = quant_logits(outtype)
    assert logits.shape == (len(PROMPT), 50400)
    assert np.isfinite(logits).all()
    assert mean_kl(quant_logits("f16"), logits) <= KL_BOUNDS[outtype]


def test_more_bits_give_smaller_divergence(quant_logits):
    f16 = quant_logits("f16")
    ladder = ["bf16", "q8_0", "q6_K", "q5_K", "q4_K", "q3_K", "q2_K"]
    kls = [mean_kl(f16, quant_logits(outtype)) for outtype in ladder]
    assert kls == sorted(kls)


@pytest.mark.parametrize("outtype", ["q4_0", "q4_K", "q2_K", "q8_0", "bf16"])
def test_tensor_types_follow_the_policy(outtype, quant_model_path):
    types = tensor_types(quant_model_path(outtype))
    base = {"q4_0": T.Q4_0, "q4_K": T.Q4_K, "q2_K": T.Q2_K, "q8_0": T.Q8_0, "bf16": T.BF16}[outtype]
    assert all(t == T.F32 for name, t in types.items() if name.endswith(".bias") or "norm" in name)
    assert types["blk.1.ffn_down.weight"] == base
    assert types["output.weight"] == (T.Q6_K if outtype in ("q4_0", "q4_K", "q2_K") else base)
    assert types["token_embd.weight"] == (T.Q4_K if outtype == "q2_K" else base)


def test_pure_gives_every_matrix_the_type(quant_model_path):
    types = tensor_types(quant_model_path("q4_0", pure=True))
    assert types["output.weight"] == types["token_embd.weight"] == types["blk.0.attn_q.weight"] == T.Q4_0


@pytest.mark.parametrize("outtype", list(REFERENCE_TYPES))
def test_quantized_blocks_equal_gguf_reference_quantizer(outtype, quant_model_path, tiny_gptj_reference):
    ours = tensor_bytes(quant_model_path(outtype))
    weights = tiny_gptj_reference(**QUANT_CHECKPOINT)
    for gguf_name, hf_name in (("blk.0.attn_q.weight", "transformer.h.0.attn.q_proj.weight"),
                               ("blk.1.ffn_down.weight", "transformer.h.1.mlp.fc_out.weight")):  # fmt: skip
        expected = gguf.quants.quantize(weights[hf_name].float().numpy(), REFERENCE_TYPES[outtype])
        assert ours[gguf_name] == (int(REFERENCE_TYPES[outtype]), expected.tobytes()), gguf_name


def test_quantize_f16_gguf_equals_convert_to_q4_0_bit_for_bit(quant_model_path, tmp_path):
    requantized = quantize(quant_model_path("f16"), tmp_path / "q4_0.gguf", "q4_0")
    assert tensor_bytes(requantized) == tensor_bytes(quant_model_path("q4_0"))
    assert Model(requantized).metadata == Model(quant_model_path("q4_0")).metadata


def test_the_quantized_file_has_the_mode_the_umask_gives(quant_model_path, tmp_path):
    previous = os.umask(0o027)
    try:
        out = quantize(quant_model_path("f16"), tmp_path / "q8_0.gguf", "q8_0")
    finally:
        os.umask(previous)

    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~0o027  # not the temporary file's 0o600


def test_metadata_records_the_file_type(quant_model_path):
    metadata = Model(quant_model_path("q4_K")).metadata
    assert metadata["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q4_K_S)
    assert metadata["general.quantization_version"] == 2


def test_rows_that_do_not_fit_the_blocks_fall_back_and_the_file_says_so(tiny_gptj_dir, tmp_path):
    from gptj_ggml.convert import convert_checkpoint

    # n_embd 64: rows of 64 values do not fit q4_K's 256-value blocks; ffn_down's rows (256) do.
    out = convert_checkpoint(tiny_gptj_dir(fmt="bin-f16"), tmp_path / "q4_K.gguf", outtype="q4_K")
    types = tensor_types(out)
    assert types["blk.0.attn_q.weight"] == T.Q5_0
    assert types["blk.0.ffn_down.weight"] == T.Q4_K
    assert types["output.weight"] == T.Q8_0  # q6_K wanted, 64 does not fit 256 either
    fallbacks = read_gguf_header(out).fields[FALLBACKS_KEY].value
    assert "blk.0.attn_q.weight: q4_K -> q5_0 (rows of 64 values; q4_K blocks hold 256)" in fallbacks
    assert not any("ffn_down" in line for line in fallbacks)
    f16 = Model(convert_checkpoint(tiny_gptj_dir(fmt="bin-f16"), tmp_path / "f16.gguf")).logits(PROMPT[:32])
    assert mean_kl(f16, Model(out).logits(PROMPT[:32])) <= KL_BOUNDS["q4_K"]


def test_quantizing_a_quantized_file_names_the_tensor(quant_model_path, tmp_path):
    with pytest.raises(ConversionError, match=r"tensor token_embd\.weight is q4_0; quantize from an f32, f16 or bf16"):
        quantize(quant_model_path("q4_0"), tmp_path / "q8_0.gguf", "q8_0")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_quantize_leaves_no_file(quant_model_path, tmp_path, monkeypatch):
    from gptj_ggml._native import core

    calls = []

    def fail_on_third_tensor(type, rows, n_threads=0):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(type, rows, n_threads)

    real = core.quantize_rows
    monkeypatch.setattr(core, "quantize_rows", fail_on_third_tensor)
    with pytest.raises(KeyboardInterrupt):
        quantize(quant_model_path("f16"), tmp_path / "q4_0.gguf", "q4_0")
    assert list(tmp_path.iterdir()) == []


def test_unknown_type_is_a_clear_error(quant_model_path, tmp_path):
    with pytest.raises(ConversionError, match="unknown type 'q3_0', expected one of f32, f16, bf16, q8_0"):
        quantize(quant_model_path("f16"), tmp_path / "x.gguf", "q3_0")


def test_quantize_rows_checks_the_row_length_before_ggml():
    from gptj_ggml._native import core

    with pytest.raises(ValueError, match="rows of 64 values cannot be quantized to q4_K, whose blocks hold 256"):
        core.quantize_rows(int(T.Q4_K), np.zeros((4, 64), np.float32))
    with pytest.raises(ValueError, match=r"cannot quantize to ggml type 16 \(iq2_xxs\)"):
        core.quantize_rows(int(T.IQ2_XXS), np.zeros((4, 256), np.float32))
    with pytest.raises(ValueError, match="expects a 2-D array"):
        core.quantize_rows(int(T.Q8_0), np.zeros(64, np.float32))


def test_gguf_header_reader_agrees_with_gguf_py(quant_model_path):
    path = quant_model_path("q4_K")
    ours = read_gguf_header(path)
    reference = gguf.GGUFReader(path)
    assert [(t.name, t.type, t.offset, t.nbytes) for t in ours.tensors] == [
        (t.name, t.tensor_type, t.data_offset, t.n_bytes) for t in reference.tensors
    ]
    assert {k: v.value for k, v in ours.fields.items()} == {
        k: f.contents() for k, f in reference.fields.items() if not k.startswith("GGUF.")
    }
