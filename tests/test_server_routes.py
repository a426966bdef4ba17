"""The routes beside the completions, as docs/server-contract.md fixes them: health, slots, props,
tokenize, models, metrics and the page's files."""

from __future__ import annotations

import pytest

from gptj_ggml import Model
from gptj_ggml.chat import named_template
from gptj_ggml.chat_templates import TEMPLATES
from gptj_ggml.sampling import SETTINGS, SamplingParams
from gptj_ggml.server import create_app

from server_fixtures import running_server

PROMPT = "The meaning of life is"


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f32"))


@pytest.fixture(scope="module")
def page_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("static")
    (folder / "index.html").write_text("<!doctype html><title>chat</title>")
    (folder / "app.js").write_text("console.log('chat')")
    return folder


@pytest.fixture(scope="module")
def server(model, page_dir):
    sampling = SamplingParams(temperature=0.5, top_k=10)
    app = create_app(model, n_slots=2, sampling=sampling, chat_template="alpaca", static_dir=page_dir, max_tokens=100)
    with running_server(app) as running:
        yield running


def test_health_counts_idle_and_processing_slots_and_the_queue(server):
    assert server.health() == {"status": "ok", "slots_idle": 2, "slots_processing": 0, "queued": 0}


def test_slots_say_their_state_and_how_full_their_cache_is(server, model):
    # ignore_eos: an unseeded sample may end on end-of-text before 4 tokens (seen about once in 300 runs).
    server.http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, "ignore_eos": True})

    slots = server.http.get("/slots").json()

    assert [slot["id"] for slot in slots] == [0, 1]
    assert all(slot["state"] == "idle" and slot["n_ctx"] == model.n_ctx for slot in slots)
    # The completion's slot holds its prompt and the generated tokens but the last (never evaluated).
    assert max(slot["n_past"] for slot in slots) == len(model.tokenize(PROMPT)) + 4 - 1


def test_props_give_the_context_slots_templates_and_default_settings(server, model):
    props = server.http.get("/props").json()

    assert props == {
        "model": "tiny-f32",
        "n_ctx": model.n_ctx,
        "n_slots": 2,
        "cache_type": "f16",
        "flash_attn": False,
        "chat_template": "alpaca",
        "chat_templates": list(TEMPLATES),
        "default_generation_settings": {
            **{setting.name: setting.default for setting in SETTINGS},
            "temperature": 0.5,
            "top_k": 10,
            "max_tokens": 100,
            "lookup": 0,
        },
        "api_key_required": False,
    }


def test_the_server_defaults_apply_to_requests_that_set_nothing(server, model):
    expected = model.session().complete(PROMPT, max_tokens=100, temperature=0.5, top_k=10, seed=3)

    response = server.http.post("/v1/completions", json={"prompt": PROMPT, "seed": 3}).json()

    assert response["choices"][0]["text"] == expected.text
    assert response["usage"]["completion_tokens"] == expected.timings.generated_tokens


def test_a_request_may_name_another_template(server, model):
    messages = [{"role": "user", "content": "Hi"}]
    expected = model.session().chat(messages, template="gpt4all-j", max_tokens=6, temperature=0).result()

    response = server.http.post(
        "/v1/chat/completions",
        json={"messages": messages, "chat_template": "gpt4all-j", "max_tokens": 6, "temperature": 0},
    ).json()

    assert response["choices"][0]["message"]["content"] == expected.text
    assert response["usage"]["prompt_tokens"] == len(model.tokenize(named_template("gpt4all-j").render(messages)))


def test_tokenize_and_detokenize_are_the_tokenizer(server, model):
    text = "Hello <|endoftext|> world"

    tokens = server.http.post("/tokenize", json={"content": text}).json()["tokens"]
    with_special = server.http.post("/tokenize", json={"content": text, "add_special": True}).json()["tokens"]
    content = server.http.post("/detokenize", json={"tokens": tokens}).json()["content"]

    assert tokens == model.tokenize(text)  # added tokens' text is plain text, as in prompts
    assert with_special == [model.tokenizer.bos_id, *tokens]
    assert content == text


def test_timings_report_what_the_slot_reused_and_evaluated(server, model):
    first = server.http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, "temperature": 0}).json()
    longer = PROMPT + first["choices"][0]["text"] + " and so"
    second = server.http.post("/v1/completions", json={"prompt": longer, "max_tokens": 2}).json()

    timings = second["timings"]
    assert set(timings) == {
        "prompt_n",
        "prompt_ms",
        "cached_n",
        "predicted_n",
        "predicted_ms",
        "predicted_per_second",
        "ttft_ms",
        "draft_n",
        "draft_n_accepted",
    }
    assert timings["cached_n"] >= len(model.tokenize(PROMPT))
    assert timings["cached_n"] + timings["prompt_n"] == second["usage"]["prompt_tokens"]
    assert timings["predicted_n"] == 2 and timings["ttft_ms"] > 0


def test_metrics_count_requests_tokens_reuse_and_time_to_first_token(server):
    before = server.metrics()
    response = server.http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 3}).json()
    server.http.post("/v1/completions", json={"prompt": PROMPT, "n": 0})
    after = server.metrics()

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert grew("gptj_requests_total{endpoint=/v1/completions,status=200}") == 1
    assert grew("gptj_requests_total{endpoint=/v1/completions,status=400}") == 1
    assert grew("gptj_generated_tokens_total") == 3
    timings = response["timings"]
    assert grew("gptj_prompt_tokens_total") == timings["prompt_n"]
    assert grew("gptj_prompt_tokens_reused_total") == timings["cached_n"]
    assert grew("gptj_time_to_first_token_seconds_count") == 1
    assert grew("gptj_generation_tokens_per_second_count") == 1
    assert after["gptj_queue_depth"] == 0 and after["gptj_slots_busy"] == 0 and after["gptj_slots"] == 2


def test_the_page_and_its_files_are_served_and_nothing_else(server, page_dir):
    assert server.http.get("/").text == (page_dir / "index.html").read_text()
    assert server.http.get("/static/app.js").text == (page_dir / "app.js").read_text()
    assert server.http.get("/static/../test_server_routes.py").status_code == 404
    assert server.http.get("/static/").status_code == 404  # no listing


def test_the_root_is_a_clean_404_while_the_page_is_absent(model, tmp_path):
    with running_server(create_app(model, n_slots=1, static_dir=tmp_path)) as server:
        response = server.http.get("/")

    assert response.status_code == 404 and "chat page" in response.json()["error"]["message"]
