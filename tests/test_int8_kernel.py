"""The int8 (AVX512-VNNI) kernels for q8_0, q4_0 and k-quant products of 1-4 tokens (matvec_int8_token;
q5_K and q6_K up to 16, 4 per pass) and of 5-16 (matvec_int8), against transformers and against the
kernels they replace (switched off with set_int8_matvec_enabled: the f32 matrix-vector kernel for q8_0
and q4_0, ggml's for the k-quants)."""

from __future__ import annotations

import numpy as np
import pytest

from gptj_ggml import EvaluationError, Model
from gptj_ggml._native import core

from model_fixtures import reference_logits

# k a multiple of 32 everywhere, or an fc_out with k = 776, which q8_0's blocks of 32 do not
# divide (the converter leaves it unquantized: the int8 kernel must not take it).
TINY = {"fmt": "safetensors", "n_embd": 256, "n_head": 4, "rotary_dim": 16, "n_inner": 1024, "n_layer": 2}
SHAPES = {"multiples_of_32": TINY, "odd_inner": {**TINY, "n_inner": 776}}
# Relative max error against transformers' float32 allowed for q8_0 products whose activations
# are rounded (the AMX kernel's q8_0 tolerance, test_batch_matmul.AMX_TOLERANCE).
Q8_0_TOLERANCE = 4e-2
# 1-4 tokens: matvec_int8_token (one, several); 5-16: matvec_int8 (one and two groups of 8).
N_TOKENS = [1, 3, 4, 5, 12, 16]


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def random_ids(n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, 1000, n).tolist()


def assert_same_greedy_tokens(ours: np.ndarray, f32: np.ndarray) -> None:
    """The greedy next token after every position is the f32 kernel's, wherever the f32 kernel's
    best token leads its runner-up by more than twice the largest logit difference (the tiny
    random models have near ties: there even the f32 kernel and transformers disagree); elsewhere
    our token is within that difference of the f32 kernel's best."""
    slack = 2 * float(np.abs(ours - f32).max())
    top2 = np.sort(f32, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > slack
    np.testing.assert_array_equal(ours.argmax(axis=-1)[clear], f32.argmax(axis=-1)[clear])
    chosen = np.take_along_axis(f32, ours.argmax(axis=-1)[..., None], axis=-1)[..., 0]
    assert np.all(f32.max(axis=-1) - chosen <= slack)


@pytest.fixture
def f32_matvec_only():
    """The int8 kernel and AMX off: products of up to 16 tokens take the f32 matrix-vector kernel."""
    core.set_int8_matvec_enabled(False)
    core.set_amx_enabled(False)
    yield
    core.set_int8_matvec_enabled(True)
    core.set_amx_enabled(True)


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("n_tokens", N_TOKENS)
def test_int8_products_match_transformers(shapes, n_tokens, tiny_model_path, hf_model):
    ids = random_ids(n_tokens, seed=n_tokens + 20)
    ours = Model(tiny_model_path("q8_0", **SHAPES[shapes])).logits(ids)
    reference = reference_logits(hf_model(**SHAPES[shapes]), ids)
    assert relative_error(ours, reference) <= Q8_0_TOLERANCE


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0"])
@pytest.mark.parametrize("n_tokens", N_TOKENS)
def test_rounding_the_activations_adds_little_to_the_weights_error(
    outtype, n_tokens, tiny_model_path, hf_model, request
):
    # Measured (relative max error against transformers): q8_0 1.4-2.2e-2 against the f32
    # kernel's 1.0-1.5e-2. For q4_K the comparison is ggml's kernel (activations rounded per 256).
    ids = random_ids(n_tokens, seed=n_tokens + 30)
    path = tiny_model_path(outtype, **TINY)
    reference = reference_logits(hf_model(**TINY), ids)
    with_int8 = relative_error(Model(path, repack=False).logits(ids), reference)
    request.getfixturevalue("f32_matvec_only")
    f32 = relative_error(Model(path, repack=False).logits(ids), reference)
    assert with_int8 <= f32 + 1e-2


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_K", "q5_K", "q6_K"])
@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("n_tokens", N_TOKENS)
def test_int8_and_f32_kernels_agree(outtype, shapes, n_tokens, tiny_model_path, request):
    ids = random_ids(n_tokens, seed=n_tokens + 40)
    path = tiny_model_path(outtype, **SHAPES[shapes])
    # repack=False: the file's layout in both runs (ggml's repacked matrices keep its kernels).
    with_int8 = Model(path, repack=False).logits(ids)
    request.getfixturevalue("f32_matvec_only")
    f32 = Model(path, repack=False).logits(ids)
    if outtype in ("q5_K", "q6_K") or (outtype == "q4_K" and n_tokens <= 4):
        # ggml's k-quant kernels, the reference here, round the activations per 256 as
        # matvec_int8_token does (q5_K and q6_K for all of 1-16 tokens, 4 per pass): the same
        # integer sums, scaled in another order (3e-7 apart after one product), except where that
        # order moves a later layer's activation across a rounding boundary: one 8-bit step of one value, measured up to 7.4e-3 on these models
        # for 1-4 tokens; more positions meet more such steps (1.15e-2 at 16 tokens, q5_K).
        assert relative_error(with_int8, f32) <= (1e-2 if n_tokens <= 4 else 2e-2)
        assert_same_greedy_tokens(with_int8, f32)
        return
    # q4_K's 8-token-slot kernel rounds per 32, ggml's per 256.
    assert relative_error(with_int8, f32) <= (4e-2 if outtype == "q4_K" else 2e-2)
    assert_same_greedy_tokens(with_int8, f32)
    if core.int8_matvec_available():
        assert not np.array_equal(with_int8, f32)  # the int8 kernel did run


@pytest.mark.parametrize("n_tokens", [1, 3, 12])
@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_K", "q5_K", "q6_K"])
def test_int8_logits_do_not_depend_on_the_thread_count(outtype, n_tokens, tiny_model_path):
    ids = random_ids(n_tokens, seed=3)
    path = tiny_model_path(outtype, **TINY)
    one = Model(path, n_threads=1, repack=False).logits(ids)
    for n_threads in (2, 3, 5):
        np.testing.assert_array_equal(Model(path, n_threads=n_threads, repack=False).logits(ids), one)


# fc_in with 105 rows (6 runs of 16, then 9): 8 threads leave one thread no rows and the last 9,
# which the kernels' stripes of 4 rows split 3, 3, 3 and none (one thread: 27, 27, 27, 24);
# fc_out's k = 105 stays unquantized.
ODD_ROWS = {**TINY, "n_inner": 105}


@pytest.mark.parametrize("n_tokens", [1, 2, 3, 12])
@pytest.mark.parametrize("outtype", ["f32", "q8_0", "q4_0"])
def test_rows_left_over_by_the_thread_split_are_computed(outtype, n_tokens, tiny_model_path, hf_model, request):
    ids = random_ids(n_tokens, seed=n_tokens + 40)
    path = tiny_model_path(outtype, **ODD_ROWS)
    one = Model(path, n_threads=1, repack=False).logits(ids)
    for n_threads in (2, 8):
        np.testing.assert_array_equal(Model(path, n_threads=n_threads, repack=False).logits(ids), one)
    if outtype == "f32":  # the f32 kernel, which the quantized types are checked against below
        assert relative_error(one, reference_logits(hf_model(**ODD_ROWS), ids)) <= 1e-3
    else:  # against the f32 kernel on the same weights: only the activations' rounding apart
        request.getfixturevalue("f32_matvec_only")
        assert relative_error(one, Model(path, n_threads=1, repack=False).logits(ids)) <= Q8_0_TOLERANCE


def test_int8_decoding_of_several_tokens_after_a_prompt_matches_the_f32_kernel(tiny_model_path, request):
    path = tiny_model_path("q8_0", **TINY)
    prompt, step = random_ids(30, seed=5), random_ids(8, seed=6)

    def step_logits() -> np.ndarray:
        session = Model(path).session()
        session.evaluate(prompt)
        return session.evaluate(step)

    with_int8 = step_logits()
    request.getfixturevalue("f32_matvec_only")
    f32 = step_logits()
    assert relative_error(with_int8, f32) <= 2e-2
    assert_same_greedy_tokens(with_int8, f32)


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_K", "q5_K", "q6_K"])
def test_one_token_steps_match_the_f32_kernel_and_transformers(outtype, tiny_model_path, hf_model, request):
    # Generation's path: a prompt batch, then one token per evaluation (matvec_int8_token).
    ids = random_ids(24, seed=7)
    path = tiny_model_path(outtype, **TINY)

    def step_logits() -> np.ndarray:
        # repack=True, the default: where the int8 kernels run, these types stay in the file's layout.
        session = Model(path).session()
        session.evaluate(ids[:16])
        return np.stack([session.evaluate([token]) for token in ids[16:]])

    with_int8 = step_logits()
    reference = reference_logits(hf_model(**TINY), ids)[16:]
    request.getfixturevalue("f32_matvec_only")
    f32 = step_logits()
    assert relative_error(with_int8, f32) <= 2e-2
    assert_same_greedy_tokens(with_int8, f32)
    assert relative_error(with_int8, reference) <= relative_error(f32, reference) + 1e-2
    if core.int8_matvec_available():
        assert not np.array_equal(with_int8, f32)  # the int8 kernel did run


@pytest.mark.skipif(not core.int8_matvec_available(), reason="this CPU has no AVX512-VNNI")
@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_K"])
def test_quantized_weights_are_not_repacked_where_the_int8_kernels_run(outtype, tiny_model_path, request):
    assert core.keeps_file_layout(outtype)
    assert Model(tiny_model_path(outtype, **TINY)).repacked_bytes == 0
    request.getfixturevalue("f32_matvec_only")  # int8 off: ggml's repacked kernels are the faster again
    assert not core.keeps_file_layout(outtype)


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_K", "q5_K", "q6_K"])
def test_a_nan_activation_gives_nan_logits_not_numbers(outtype, quant_model_path, tmp_path):
    # Rounding to integers must not turn a NaN activation into a plausible number; the final
    # norm's NaN reaches the output matrix (of the file's type: --pure) directly.
    from gguf_edit import with_a_nan_activation

    path = with_a_nan_activation(quant_model_path(outtype, pure=True), tmp_path / "nan.gguf")
    with pytest.raises(EvaluationError, match="the model produced NaN logits"):
        Model(path, repack=False).complete([1, 2, 3], max_tokens=2)
