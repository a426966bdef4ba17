"""The server's ``lookup`` (prompt lookup speculative decoding) through OpenAI's own client.

The reference for every reply is the same request without ``lookup``: drafting may change only how
fast a reply comes, never its tokens. That ``lookup`` reached the engine is seen in the reply's
``timings.draft_n``: a tiny random model's greedy text repeats itself, so a repetitive prompt gets
drafts verified (and some accepted).
"""

from __future__ import annotations

import openai
import pytest

from gptj_ggml import Model, SamplingParams
from gptj_ggml.chat import named_template
from gptj_ggml.server import create_app
from gptj_ggml.server.request_options import RequestPreparer
from gptj_ggml.server.schemas import CompletionRequest

from server_fixtures import running_server

REPEATING = "one two three four one two three four one two"
MESSAGES = [{"role": "user", "content": REPEATING}]
GREEDY = {"temperature": 0.0}
SEEDED = {"temperature": 0.9, "seed": 5}


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f32"))


@pytest.fixture(scope="module")
def server(model):
    with running_server(create_app(model, n_slots=2)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return server.openai()


def timings(response) -> dict:
    return response.model_extra["timings"]


@pytest.mark.parametrize("sampling", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_a_completion_with_lookup_is_the_completion_without_it(client, sampling):
    options = {"model": "tiny-f32", "prompt": REPEATING, "max_tokens": 24, **sampling}

    plain = client.completions.create(**options)
    fast = client.completions.create(**options, extra_body={"lookup": 8})

    assert fast.choices[0].text == plain.choices[0].text
    assert fast.choices[0].finish_reason == plain.choices[0].finish_reason
    assert fast.usage == plain.usage
    assert timings(plain)["draft_n"] == timings(plain)["draft_n_accepted"] == 0
    if sampling is GREEDY:
        assert 0 < timings(fast)["draft_n"] and 0 <= timings(fast)["draft_n_accepted"] <= timings(fast)["draft_n"]


@pytest.mark.parametrize("sampling", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_a_chat_reply_with_lookup_is_the_reply_without_it(client, sampling):
    options = {"model": "tiny-f32", "messages": MESSAGES, "max_tokens": 24, **sampling}

    plain = client.chat.completions.create(**options)
    fast = client.chat.completions.create(**options, extra_body={"lookup": 8})

    assert fast.choices[0].message.content == plain.choices[0].message.content
    assert fast.choices[0].finish_reason == plain.choices[0].finish_reason
    assert fast.usage == plain.usage
    if sampling is GREEDY:
        assert timings(fast)["draft_n"] > 0


def test_a_streamed_completion_with_lookup_joins_to_the_whole_one_without_it(client):
    options = {"model": "tiny-f32", "prompt": REPEATING, "max_tokens": 24, **GREEDY}
    whole = client.completions.create(**options)

    chunks = list(client.completions.create(**options, stream=True, extra_body={"lookup": 8}))

    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert timings(chunks[-1])["draft_n"] > 0  # the finish chunk's timings


def test_metrics_count_the_drafted_and_accepted_tokens_of_each_generation(server):
    before = server.metrics()
    body = {"prompt": REPEATING, "max_tokens": 24, "lookup": 8, "n": 2, **GREEDY}
    response = server.http.post("/v1/completions", json=body).json()
    after = server.metrics()

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    # Both greedy choices generate the same tokens with the same drafts; timings are choice 0's.
    drafted, accepted = response["timings"]["draft_n"], response["timings"]["draft_n_accepted"]
    assert drafted > 0
    assert grew("gptj_lookup_drafted_tokens_total") == 2 * drafted
    assert grew("gptj_lookup_accepted_tokens_total") == 2 * accepted


@pytest.mark.parametrize("value", [-1, 16, "x", 1.5], ids=["negative", "above-15", "text", "fraction"])
@pytest.mark.parametrize("route", ["completions", "chat"])
def test_a_bad_lookup_is_a_400_naming_it(client, route, value):
    with pytest.raises(openai.BadRequestError) as raised:
        if route == "completions":
            client.completions.create(model="tiny-f32", prompt="Hi", max_tokens=1, extra_body={"lookup": value})
        else:
            client.chat.completions.create(
                model="tiny-f32", messages=MESSAGES, max_tokens=1, extra_body={"lookup": value}
            )

    assert raised.value.status_code == 400 and raised.value.param == "lookup"


def _preparer(model: Model, **defaults) -> RequestPreparer:
    return RequestPreparer(model, model.n_ctx, SamplingParams(), named_template("plain"), **defaults)


@pytest.mark.parametrize(("default", "asked", "used"), [(0, None, 0), (4, None, 4), (4, 0, 0), (0, 15, 15)])
def test_the_servers_lookup_applies_to_requests_that_give_none(model, default, asked, used):
    request = CompletionRequest.model_validate({"prompt": REPEATING, "lookup": asked})

    prepared = _preparer(model, lookup=default).completion(request)

    assert prepared.options["lookup"] == used


def test_the_servers_lookup_is_in_its_default_settings(model):
    with running_server(create_app(model, n_slots=1, lookup=6)) as server:
        props = server.http.get("/props").json()
        response = server.http.post("/v1/completions", json={"prompt": REPEATING, "max_tokens": 24, **GREEDY}).json()

    assert props["default_generation_settings"]["lookup"] == 6
    assert response["timings"]["draft_n"] > 0


@pytest.mark.parametrize("default", [-1, 16])
def test_a_server_lookup_out_of_range_is_refused_naming_it(model, default):
    with pytest.raises(ValueError, match="lookup must be"):
        _preparer(model, lookup=default)
