"""``python -m gptj_ggml run | info | bench`` in a sub-process, on a tiny converted model.

The engine commands run the installed package (they need the compiled extension).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gptj_ggml import SamplingParams

from checkpoints import TOKENIZER_DIR
from model_fixtures import reference_greedy

REPO = Path(__file__).resolve().parent.parent
N_EMBD, N_HEAD, N_LAYER, ROTARY_DIM, N_VOCAB = 64, 4, 2, 8, 50400  # make_tiny_gptj's defaults
N_FF = 4 * N_EMBD


def _run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gptj_ggml", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )


def _assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def model_f16(tiny_model_path) -> Path:
    return tiny_model_path("f16")


def test_version_prints_the_program_and_package_version():
    import gptj_ggml

    result = _run_cli("--version")

    assert (result.returncode, result.stdout) == (0, f"gptj-ggml {gptj_ggml.__version__}\n")


@pytest.mark.parametrize("command", ["convert", "quantize", "run", "info", "bench", "perplexity", "serve"])
def test_each_command_has_help(command):
    result = _run_cli(command, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: gptj-ggml {command}")


@pytest.mark.parametrize(
    "args",
    [
        ["run", "-m", "{missing}", "-p", "Hello"],
        ["info", "{missing}"],
        ["bench", "{missing}", "-p", "8", "-n", "4"],
        ["serve", "{missing}"],
    ],
    ids=["run", "info", "bench", "serve"],
)
def test_a_missing_model_is_one_error_line_and_exit_code_1(args, tmp_path):
    missing = str(tmp_path / "missing.gguf")
    result = _run_cli(*(arg.format(missing=missing) for arg in args))

    _assert_one_error_line(result, missing)


def test_run_streams_text_then_timings_and_peak_memory(model_f16):
    result = _run_cli("run", "-m", str(model_f16), "-p", "Once upon a time", "-n", "5", "--temp", "0", "-t", "1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time")
    assert re.search(r"^load: +[\d.]+ ms$", result.stderr, re.MULTILINE)
    assert re.search(r"^prompt: +[\d.]+ ms for 4 tokens \([\d.]+ tokens/s", result.stderr, re.MULTILINE)
    assert re.search(
        r"^generation: +[\d.]+ ms for 4 tokens \([\d.]+ ms/token, [\d.]+ tokens/s\)", result.stderr, re.MULTILINE
    )
    assert re.search(r"^total: +[\d.]+ ms$", result.stderr, re.MULTILINE)
    assert re.search(
        r"^memory: +peak RSS [\d.]+ MiB \(model file [\d.]+ MiB, KV cache [\d.]+ [KM]iB f16\)$",
        result.stderr,
        re.MULTILINE,
    )


def test_run_into_a_closed_pipe_ends_quietly_with_the_sigpipe_code_141(model_f16):
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head -c 10` does once it has read enough
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gptj_ggml", "run", "-m", str(model_f16), "-p", "Hello", "-n", "20", "-t", "1"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)

    assert (result.returncode, result.stderr) == (141, "")


def test_run_without_a_prompt_or_i_is_one_error_line(model_f16):
    _assert_one_error_line(_run_cli("run", "-m", str(model_f16)), "-p")


def _run_past_the_context(model: Path, *flags: str) -> subprocess.CompletedProcess:
    # 2 prompt tokens and up to 60 new ones in a context of 32.
    return _run_cli("run", "-m", str(model), "-p", "Hi there", "--ctx", "32", "-n", "60", "--temp", "0",
                    "--ignore-eos", "-t", "1", *flags)  # fmt: skip


def test_run_into_a_full_context_is_one_error_line_naming_the_context_full_flag(model_f16):
    result = _run_past_the_context(model_f16)

    _assert_one_error_line(result, "the context is full (32 tokens)", "--context-full shift", "--ctx")
    assert result.stdout.startswith("Hi there") and result.stdout.endswith("\n")


def test_run_context_full_stop_ends_the_completion_at_the_context(model_f16):
    result = _run_past_the_context(model_f16, "--context-full", "stop")

    assert result.returncode == 0, result.stderr
    assert re.search(r"^finish: +context,", result.stderr, re.MULTILINE)


def test_run_context_full_shift_keep_generates_what_the_python_api_does(model_f16):
    from gptj_ggml import Model

    expected = Model(model_f16, n_ctx=32, n_threads=1).complete(
        "Hi there", max_tokens=60, temperature=0, ignore_eos=True, on_context_full="shift", n_keep=1
    )

    result = _run_past_the_context(model_f16, "--context-full", "shift", "--keep", "1")

    assert result.returncode == 0, result.stderr
    assert expected.finish_reason == "length" and len(expected.tokens) == 60
    assert result.stdout == "Hi there" + expected.text + "\n"


def test_run_keep_beyond_the_context_is_one_error_line(model_f16):
    _assert_one_error_line(_run_past_the_context(model_f16, "--context-full", "shift", "--keep", "31"), "--keep")


def test_run_context_full_with_i_is_one_error_line(model_f16):
    result = _run_cli("run", "-m", str(model_f16), "-i", "--context-full", "shift", stdin="Hello\n")

    _assert_one_error_line(result, "--context-full", "-i")


def test_interactive_turns_continue_the_transcript_and_evaluate_only_what_is_new(tiny_model_path, hf_model):
    import tokenizers

    reference = tokenizers.Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    prompt, turns, n_gen = "A chat.", ["Hello there, who are you?\n", "Tell me a story.\n", "Bye\n"], 5

    result = _run_cli(
        "run",
        "-m",
        str(tiny_model_path()),
        "-p",
        prompt,
        "-i",
        "-n",
        str(n_gen),
        "--temp",
        "0",
        "--repeat-penalty",
        "1",
        "--ignore-eos",
        "-t",
        "1",
        stdin="".join(turns),
    )

    assert result.returncode == 0, result.stderr
    reports = re.findall(r"^\[turn \d+: (\d+) tokens evaluated, (\d+) reused", result.stderr, re.MULTILINE)
    # The same conversation with transformers' greedy search: each line starts on a line of its
    # own, appended to the token ids of everything before it.
    transcript, shown, text_so_far, n_cached = reference.encode(prompt).ids, prompt, prompt, 0
    for turn, (evaluated, reused) in zip(turns, reports, strict=True):
        separator = "\n" if not text_so_far.endswith("\n") else ""
        transcript = transcript + reference.encode(separator + turn).ids
        assert (int(evaluated), int(reused)) == (len(transcript) - n_cached, n_cached)
        reply = reference_greedy(hf_model(), transcript, n_gen, repetition_penalty=1.0)
        transcript = transcript + reply
        # The cache now holds the whole transcript but the reply's last token (sampled, not evaluated).
        n_cached = len(transcript) - 1
        text_so_far = separator + turn + reference.decode(reply)
        shown += separator + reference.decode(reply)
    assert result.stdout == shown + ("\n" if not shown.endswith("\n") else "")


def test_interactive_turn_statistics_start_on_a_line_of_their_own(model_f16):
    # stdout and stderr on one pipe, as on a terminal.
    result = subprocess.run(
        [sys.executable, "-m", "gptj_ggml", "run", "-m", str(model_f16), "-p", "A chat.", "-i", "-n", "5",
         "--temp", "0", "--ignore-eos", "-t", "1"],
        input="Hello there\nBye\n",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout
    assert result.stdout.count("[turn ") == 2
    assert result.stdout.count("\n[turn ") == 2, result.stdout


REPEATING = "one two three four one two three four one two"


def test_run_with_lookup_prints_what_run_without_it_does_and_counts_the_drafts(model_f16):
    flags = ("run", "-m", str(model_f16), "-p", REPEATING, "-n", "24", "--temp", "0", "--ignore-eos", "-t", "1")

    plain = _run_cli(*flags)
    fast = _run_cli(*flags, "--lookup", "4")

    assert plain.returncode == fast.returncode == 0, fast.stderr
    assert fast.stdout == plain.stdout
    assert re.search(r"^lookup: +\d+ of [1-9]\d* drafted tokens accepted", fast.stderr, re.MULTILINE), fast.stderr
    assert "lookup:" not in plain.stderr


def test_interactive_turns_with_lookup_are_the_turns_without_it(model_f16):
    flags = ("run", "-m", str(model_f16), "-i", "-n", "24", "--temp", "0", "--ignore-eos", "-t", "1")
    turns = f"{REPEATING}\n{REPEATING} three\n"

    plain = _run_cli(*flags, stdin=turns)
    fast = _run_cli(*flags, "--lookup", "4", stdin=turns)

    assert plain.returncode == fast.returncode == 0, fast.stderr
    assert fast.stdout == plain.stdout
    assert re.search(r"^\[turn \d+: .* \d+ of [1-9]\d* drafted accepted; ", fast.stderr, re.MULTILINE), fast.stderr


def test_run_lookup_beyond_15_is_one_error_line_naming_the_flag(model_f16):
    _assert_one_error_line(
        _run_cli("run", "-m", str(model_f16), "-p", "hi", "--lookup", "16"), "--lookup must be <= 15"
    )


def test_info_describes_hparams_tensor_groups_tokenizer_and_metadata(model_f16):
    result = _run_cli("info", str(model_f16))

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^architecture: +gptj", out, re.MULTILINE)
    for name, value in [
        ("n_vocab", N_VOCAB),
        ("n_embd", N_EMBD),
        ("n_head", N_HEAD),
        ("n_layer", N_LAYER),
        ("n_ff", N_FF),
        ("rotary_dim", ROTARY_DIM),
    ]:
        assert re.search(rf"^  {name} +{value}$", out, re.MULTILINE), name

    def group_row(name: str, n_tensors: int, type_name: str, n_bytes: int) -> str:
        size = f"{n_bytes / 2**20:.2f} MiB" if n_bytes >= 2**20 else f"{n_bytes / 2**10:.2f} KiB"
        return rf"^{re.escape(name)} +{n_tensors} +{type_name} +[\d.]+ [KMB ]*{re.escape(size)}$"

    # f16 matrices, f32 vectors (the converter's f16 policy); 2 bytes per f16 value.
    assert re.search(group_row("token_embd", 1, "f16", N_VOCAB * N_EMBD * 2), out, re.MULTILINE)
    assert re.search(group_row("attention", 4 * N_LAYER, "f16", 4 * N_LAYER * N_EMBD * N_EMBD * 2), out, re.MULTILINE)
    assert re.search(group_row("ffn", 2 * N_LAYER, "f16", 2 * N_LAYER * N_EMBD * N_FF * 2), out, re.MULTILINE)
    assert re.search(group_row("output", 1, "f16", N_VOCAB * N_EMBD * 2), out, re.MULTILINE)
    n_vectors = N_LAYER * 4 + 3  # per layer: norm weight+bias, ffn_up/down biases; final norm w+b, output bias
    vector_bytes = 4 * (N_LAYER * (2 * N_EMBD + N_FF + N_EMBD) + 2 * N_EMBD + N_VOCAB)
    assert re.search(group_row("norms/biases", n_vectors, "f32", vector_bytes), out, re.MULTILINE)

    n_merges = len((TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()) - 1  # minus "#version"
    assert re.search(
        rf"^tokenizer: +gpt2, {N_VOCAB} tokens, bos 50256 '<\|endoftext\|>', eos 50256 "
        rf"'<\|endoftext\|>', {n_merges} merges$",
        out,
        re.MULTILINE,
    )
    assert re.search(r"^  gptj\.embedding_length += 64$", out, re.MULTILINE)


def test_info_tensors_lists_every_tensor(model_f16):
    result = _run_cli("info", str(model_f16), "--tensors")

    assert result.returncode == 0, result.stderr
    assert re.search(rf"^token_embd\.weight +f16 +{N_EMBD} x {N_VOCAB} ", result.stdout, re.MULTILINE)
    assert re.search(rf"^blk\.1\.ffn_down\.weight +f16 +{N_FF} x {N_EMBD} ", result.stdout, re.MULTILINE)


def test_info_system_names_the_ggml_version_and_library():
    pinned = re.search(r"^ggml (\S+)$", (REPO / "third_party/ggml/VERSION").read_text(), re.MULTILINE).group(1)

    result = _run_cli("info", "--system")

    assert result.returncode == 0, result.stderr
    assert re.search(rf"^ggml: +{re.escape(pinned)} \(commit \w+\)$", result.stdout, re.MULTILINE)
    library = re.search(r"^library: +(.+)$", result.stdout, re.MULTILINE).group(1)
    assert Path(library).exists()
    assert re.search(r"^build: +(libggml-python|built from a ggml source tree)", result.stdout, re.MULTILINE)
    assert re.search(r"^cores: +\d+ physical; default threads: up to \d+, fewer while", result.stdout, re.MULTILINE)
    flags = Path("/proc/cpuinfo").read_text()
    kernel = "AVX512" if "avx512f" in flags else "AVX2" if " avx2" in flags else "ggml's"
    assert re.search(rf"^matrix kernels: .*{kernel}", result.stdout, re.MULTILINE)
    attention = "gptj_ggml's AVX2 kernel for single tokens" if " avx2" in flags else "ggml's"
    assert re.search(rf"^attention: +{attention}", result.stdout, re.MULTILINE)


def test_info_without_a_model_or_system_is_a_usage_error():
    result = _run_cli("info")

    assert result.returncode == 2
    assert "give a MODEL file, --system, or both" in result.stderr


def test_bench_json_has_each_test_with_its_repetitions(model_f16):
    result = _run_cli("bench", str(model_f16), "-p", "8", "-n", "4", "-t", "1", "--reps", "2", "--json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["model"]["n_layer"] == N_LAYER and document["model"]["type"] == "f16"
    assert document["system"]["ggml_version"]
    assert document["cache"] == {"type": "f16", "flash_attn": False}
    tests = {r["test"]: r for r in document["results"]}
    assert sorted(tests) == ["pp8", "tg4"]
    assert (tests["pp8"]["n_prompt"], tests["pp8"]["n_gen"]) == (8, 0)
    assert (tests["tg4"]["n_prompt"], tests["tg4"]["n_gen"]) == (0, 4)
    for r in tests.values():
        assert r["n_threads"] == 1 and r["repetitions"] == 2 and len(r["samples_ms"]) == 2
        assert all(ms > 0 for ms in r["samples_ms"])
        n_tokens = r["n_prompt"] or r["n_gen"]
        rates = [n_tokens / ms * 1e3 for ms in r["samples_ms"]]
        assert r["tokens_per_s_mean"] == pytest.approx(sum(rates) / 2)
        assert r["tokens_per_s_stdev"] == pytest.approx(abs(rates[0] - rates[1]) / 2**0.5)


def test_bench_table_has_a_row_per_test_with_its_spread(model_f16):
    result = _run_cli("bench", str(model_f16), "-p", "8", "-n", "4", "-t", "1", "--reps", "2")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "| model | size | params | type | cache | threads | test | t/s |"
    assert all(" | f16 | 1 | " in line for line in lines[2:])
    assert [re.search(r"\| (\w+) \| [\d.]+ ± [\d.]+ \|$", line).group(1) for line in lines[2:]] == ["pp8", "tg4"]


def test_bench_rejects_a_malformed_list():
    result = _run_cli("bench", "model.gguf", "-p", "8,x")

    assert result.returncode == 2
    assert "expected comma-separated integers" in result.stderr


def test_run_has_a_flag_per_sampling_setting_with_its_default():
    from gptj_ggml.cli import build_parser
    from gptj_ggml.sampling import SETTINGS

    defaults = build_parser().parse_args(["run", "-m", "m.gguf", "-p", "hi"])
    assert {s.name: getattr(defaults, s.name) for s in SETTINGS} == SamplingParams().settings()
    flags = [arg for s in SETTINGS for arg in (f"--{s.name.replace('_', '-')}", str(s.type(s.default + 1)))]
    given = build_parser().parse_args(["run", "-m", "m.gguf", "-p", "hi", *flags])
    assert {s.name: getattr(given, s.name) for s in SETTINGS} == {s.name: s.type(s.default + 1) for s in SETTINGS}


def test_a_sampling_flag_out_of_range_is_one_error_line_naming_it(model_f16):
    _assert_one_error_line(_run_cli("run", "-m", str(model_f16), "-p", "hi", "--top-p", "2"), "top_p must be in (0, 1]")


def test_run_reports_the_adaptive_thread_count(model_f16):
    result = _run_cli("run", "-m", str(model_f16), "-p", "hi", "-n", "2")
    assert result.returncode == 0 and "(adaptive; the last step used" in result.stderr


WIDE_HEADS = {"n_embd": 128, "n_head": 4, "rotary_dim": 16}  # head_dim 32: whole q8_0 blocks


def test_run_with_a_quantized_cache_prints_what_the_python_api_generates(tiny_model_path):
    from gptj_ggml import Model

    path = tiny_model_path("f16", **WIDE_HEADS)
    result = _run_cli(
        "run", "-m", str(path), "-p", "Once upon a time", "-n", "8", "--temp", "0", "--cache-type", "q8_0"
    )

    expected = Model(path, cache_type="q8_0").complete("Once upon a time", max_tokens=8, temperature=0).text
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == "Once upon a time" + expected
    # 2 layers x 2 (K, V) x 256 positions x 128 values at 34 bytes per 32 (f16: 256 KiB).
    assert re.search(r"KV cache 136\.00 KiB q8_0\)$", result.stderr, re.MULTILINE), result.stderr


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--cache-type", "q8_0", "--no-flash-attn"], ["--cache-type q8_0 needs --flash-attn"]),
        (["--cache-type", "q4_0"], ["multiple of 32, this model's is 16"]),
    ],
    ids=["no-flash", "narrow-heads"],
)
def test_run_with_a_cache_it_cannot_have_is_one_error_line(flags, fragments, model_f16):
    _assert_one_error_line(_run_cli("run", "-m", str(model_f16), "-p", "hi", "-n", "2", *flags), *fragments)


def test_bench_reports_the_cache_it_measured(tiny_model_path):
    path = tiny_model_path("f16", **WIDE_HEADS)
    result = _run_cli("bench", str(path), "-p", "8", "-n", "4", "-t", "1", "--reps", "1", "--cache-type", "q4_0")

    assert result.returncode == 0, result.stderr
    assert all(" | q4_0 fa | 1 | " in line for line in result.stdout.strip().splitlines()[2:])
