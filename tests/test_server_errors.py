"""Every error the server answers, in OpenAI's shape, and that no bad request leaves a slot busy."""

from __future__ import annotations

import math
import threading

import httpx
import openai
import pytest

from gptj_ggml import Model
from gptj_ggml.sampling import SETTINGS
from gptj_ggml.server import create_app

from server_fixtures import running_server, sse_events

API_KEY = "test-key-0123"
PROMPT = "The meaning of life is"


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f32"))


@pytest.fixture(scope="module")
def server(model):
    app = create_app(model, n_slots=2, api_key=API_KEY, max_body_bytes=4096)
    with running_server(app, api_key=API_KEY) as running:
        yield running


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


def _out_of_range(setting) -> object:
    """A value just outside the setting's range (or a non-number when its range is unbounded)."""
    if not math.isinf(setting.low):
        return setting.low - 1 if setting.low_inclusive or setting.type is int else setting.low
    if not math.isinf(setting.high):
        return setting.high + 1
    return "not a number"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_sampler_setting_is_a_request_field_checked_against_its_range(server, setting):
    response = server.http.post("/v1/completions", json={"prompt": PROMPT, setting.name: _out_of_range(setting)})

    assert_error(response, 400, setting.name)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": PROMPT, "n": 0}, "n"),
        ("/v1/completions", {"prompt": PROMPT, "n": 17}, "n"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        ("/v1/completions", {"prompt": PROMPT, "max_tokens": -1}, "max_tokens"),
        ("/v1/completions", {"prompt": PROMPT, "logprobs": 6}, "logprobs"),
        ("/v1/completions", {"prompt": PROMPT, "stop": ["x"] * 17}, "stop"),
        ("/v1/completions", {"prompt": PROMPT, "stop": [""]}, "stop"),
        ("/v1/completions", {"prompt": ["one", "two"]}, "prompt"),
        ("/v1/completions", {"prompt": [1, 2, 50400]}, "prompt"),
        ("/v1/completions", {"prompt": PROMPT, "logit_bias": {"not-an-id": 1}}, "logit_bias"),
        ("/v1/completions", {"prompt": PROMPT, "logit_bias": {"50400": 1}}, "logit_bias"),
        ("/v1/completions", {"prompt": PROMPT, "logit_bias": {"5": 101}}, "logit_bias"),
        ("/v1/completions", {"prompt": PROMPT, "echo": True}, "echo"),
        ("/v1/completions", {"prompt": PROMPT, "seed": "abc"}, "seed"),
        ("/v1/completions", {"max_tokens": 3}, "prompt"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 21}, "top_logprobs"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "chat_template": "nope"},
            "chat_template",
        ),
        # A template is chosen by name only: a path is no name.
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "chat_template": "/etc/passwd"},
            "chat_template",
        ),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "stream": "sometimes"}, "stream"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(server, path, body, param):
    assert_error(server.http.post(path, json=body), 400, param)


def test_a_body_that_is_not_json_or_not_an_object_is_a_400(server):
    assert_error(server.http.post("/v1/completions", content=b"{not json"), 400)
    assert_error(server.http.post("/v1/completions", json=[1, 2]), 400)


def test_a_prompt_that_leaves_no_room_is_a_400_with_the_counts(server, model):
    n_ctx = server.scheduler.n_ctx
    too_long = model.tokenize(" word") * n_ctx

    error = assert_error(server.http.post("/v1/completions", json={"prompt": too_long}), 400, "prompt")
    assert str(n_ctx) in error["message"] and error["code"] == "context_length_exceeded"

    messages = [{"role": "user", "content": " word" * n_ctx}]
    assert_error(server.http.post("/v1/chat/completions", json={"messages": messages}), 400, "messages")


def test_the_openai_client_raises_bad_request_naming_the_field(server):
    client = server.openai(API_KEY)

    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="tiny-f32", prompt=PROMPT, temperature=-1)

    assert raised.value.param == "temperature"


def test_no_or_a_wrong_api_key_is_a_401(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        response = httpx.post(f"{server.url}/v1/completions", json={"prompt": PROMPT}, headers=headers)
        assert_error(response, 401)
    with pytest.raises(openai.AuthenticationError):
        server.openai("wrong").models.list()
    assert_error(httpx.get(f"{server.url}/metrics"), 401)
    assert_error(httpx.get(f"{server.url}/props"), 401)


def test_health_the_page_and_its_files_need_no_key(server):
    assert httpx.get(f"{server.url}/health").status_code == 200
    # No page is installed in this test's app: / and /static answer 404, not 401.
    assert httpx.get(f"{server.url}/static/no-such-file.js").status_code == 404


def test_an_unknown_route_is_a_404(server):
    assert_error(server.http.get("/v1/nothing-here"), 404)
    assert_error(server.http.post("/v2/completions", json={}), 404)


def test_an_unknown_model_is_a_404_naming_model(server):
    assert_error(server.http.post("/v1/completions", json={"model": "gpt-4", "prompt": PROMPT}), 404, "model")
    assert_error(server.http.get("/v1/models/gpt-4"), 404, "model")
    with pytest.raises(openai.NotFoundError):
        server.openai(API_KEY).chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])


def test_a_body_over_the_limit_is_a_413_with_or_without_content_length(server):
    big = {"prompt": "x" * 5000}

    assert_error(server.http.post("/v1/completions", json=big), 413)

    def chunked():  # no Content-Length: the limit holds while reading
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    assert_error(server.http.post("/v1/completions", content=chunked()), 413)


def test_bad_requests_leave_every_slot_idle_and_the_server_answering(server):
    for body in ({"prompt": PROMPT, "n": 0}, {"prompt": [99999]}, {"messages": "no"}):
        server.http.post("/v1/completions", json=body)

    assert server.wait_until_idle()["slots_idle"] == 2
    response = server.http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2})
    assert response.status_code == 200


def test_a_full_queue_is_a_503_with_retry_after(model):
    app = create_app(model, n_slots=1, max_queue=1, n_ctx=2048)
    holding_body = {"prompt": PROMPT, "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with running_server(app) as server:
        waited = {}

        def wait_in_the_queue():
            response = httpx.post(f"{server.url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 1}, timeout=30)
            waited["status"] = response.status_code

        with server.http.stream("POST", "/v1/completions", json=holding_body) as holding:
            events = sse_events(holding)  # kept: dropping the iterator would close the stream
            next(events)  # the only slot is generating it, for seconds
            waiting = threading.Thread(target=wait_in_the_queue)
            waiting.start()
            server.wait_until(lambda h: h["queued"] == 1, "the second request to queue")

            response = server.http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 1})

            assert assert_error(response, 503)["code"] == "queue_full"
            assert int(response.headers["Retry-After"]) >= 1
            with pytest.raises(openai.InternalServerError):
                server.openai().completions.create(model="tiny-f32", prompt=PROMPT, max_tokens=1)
        # Closing the holding stream cancelled it: the waiting request got the slot.
        waiting.join(30)
        assert waited == {"status": 200}
        assert server.wait_until_idle()["slots_idle"] == 1


def test_an_engine_failure_is_that_requests_500_and_frees_its_slot(model, monkeypatch):
    app = create_app(model, n_slots=1)
    scheduler = app.state.served.scheduler
    real = scheduler._evaluator

    class BreakingEvaluator:
        """The engine's batched calls, but the 1st (the first request's prompt) and the 3rd (the
        second request's second token: its stream has already begun) fail."""

        n_batch = real.n_batch
        calls = 0

        def evaluate_and_verify(self, items):
            self.calls += 1
            if self.calls in (1, 3):
                raise RuntimeError("the engine broke")
            return real.evaluate_and_verify(items)

    monkeypatch.setattr(scheduler, "_evaluator", BreakingEvaluator())
    with running_server(app) as server:
        assert_error(server.http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4}), 500)

        with server.http.stream(
            "POST", "/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, "stream": True}
        ) as r:
            events = list(sse_events(r))
        assert events[0]["choices"][0]["text"] and events[-2]["error"]["type"] == "server_error"
        assert events[-1] == "[DONE]"

        assert server.wait_until_idle()["slots_idle"] == 1
        assert server.http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}).status_code == 200


def test_cors_is_off_unless_an_origin_is_given(model):
    preflight = {"Origin": "http://page.example", "Access-Control-Request-Method": "POST"}
    with running_server(create_app(model, n_slots=1)) as server:
        response = httpx.options(f"{server.url}/v1/completions", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    app = create_app(model, n_slots=1, api_key=API_KEY, cors_origins=["http://page.example"])
    with running_server(app, api_key=API_KEY) as server:
        response = httpx.options(f"{server.url}/v1/completions", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "http://page.example"
        other = httpx.options(f"{server.url}/v1/completions", headers={**preflight, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        # The chat page sends its conversation's id as X-Session-Id (replica affinity behind Ray Serve).
        session = {**preflight, "Access-Control-Request-Headers": "authorization, content-type, x-session-id"}
        allowed = httpx.options(f"{server.url}/v1/chat/completions", headers=session)
        assert allowed.status_code == 200 and "x-session-id" in allowed.headers["access-control-allow-headers"]
