"""``n`` choices per request (OpenAI's ``n``) through OpenAI's own client: each choice is what a
request of its own would get, streamed or not, and the n jobs behind them are admitted, cancelled
and counted together.

References: greedy choices against the library (``Session.complete`` / ``Session.chat`` on a Model of
this process); a seeded choice i against an n=1 request with seed s + i, as docs/server-contract.md
promises.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict

import httpx
import openai
import pytest

from gptj_ggml import Model
from gptj_ggml.server import create_app
from gptj_ggml.server.choices import Choices
from gptj_ggml.server.request_options import PreparedRequest
from gptj_ggml.server.scheduler import FailedEvent, QueueFullError, TokenEvent

from server_fixtures import TIMEOUT_SECONDS, running_server, sse_events

PROMPT = "The meaning of life is"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is GPT-J?"}]
#: ignore_eos: every choice runs to max_tokens, so the token counts are exact.
EXACT = {"temperature": 0, "extra_body": {"ignore_eos": True}}
#: A request that keeps a slot busy until its client goes away: 8000 tokens take the tiny model
#: about ten seconds on an idle core (2000 took under two, too short for a loaded CI machine).
HOLDING = {"prompt": PROMPT, "max_tokens": 8000, "ignore_eos": True, "stream": True}
#: The context of the servers that hold slots (the tiny model's own is 256).
N_CTX = 8192


@pytest.fixture(scope="module")
def model_path(tiny_model_path):
    return tiny_model_path("f32")


@pytest.fixture(scope="module")
def reference(model_path):
    return Model(model_path)


@pytest.fixture(scope="module")
def model(model_path):
    return Model(model_path)


@pytest.fixture(scope="module")
def server(model):
    # Three slots and a queue of two: n=3 runs at once, n=5 queues two, n=6 can never fit.
    with running_server(create_app(model, n_slots=3, max_queue=2, n_ctx=N_CTX)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return server.openai()


def wait_for_slots(server, state: str, count: int) -> None:
    """Poll /slots until ``count`` slots are in ``state`` (bounded)."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        slots = server.http.get("/slots").json()
        if sum(slot["state"] == state for slot in slots) == count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {count} slots {state}; /slots says {slots}")
        time.sleep(0.01)


def ended(server) -> dict[str, float]:
    """``gptj_generations_total`` by reason: how many jobs ended, and why ("cancelled", "length", ...)."""
    prefix = "gptj_generations_total{reason="
    return {name[len(prefix) : -1]: value for name, value in server.metrics().items() if name.startswith(prefix)}


def grown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


def by_index(chunks, text_of) -> tuple[dict[int, str], dict[int, list]]:
    """Each choice's joined text and its finish reasons, in stream order, from streamed chunks."""
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, list] = defaultdict(list)
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += text_of(choice) or ""
            finishes[choice.index].append(choice.finish_reason)
    return dict(texts), dict(finishes)


# -- completions -----------------------------------------------------------------------------


def test_three_greedy_completions_are_the_library_completion_three_times(client, reference):
    expected = reference.session().complete(PROMPT, max_tokens=8, temperature=0, ignore_eos=True).text

    response = client.completions.create(model="tiny-f32", prompt=PROMPT, max_tokens=8, n=3, **EXACT)

    assert [choice.index for choice in response.choices] == [0, 1, 2]
    assert [choice.text for choice in response.choices] == [expected] * 3
    assert [choice.finish_reason for choice in response.choices] == ["length"] * 3
    # OpenAI's usage: the prompt once, the completion tokens of every choice.
    prompt_tokens = len(reference.tokenize(PROMPT))
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (prompt_tokens, 3 * 8)
    assert response.usage.total_tokens == prompt_tokens + 24


def test_three_streamed_completions_each_end_once_then_usage_comes_once(client, reference):
    expected = reference.session().complete(PROMPT, max_tokens=8, temperature=0, ignore_eos=True).text

    chunks = list(
        client.completions.create(
            model="tiny-f32",
            prompt=PROMPT,
            max_tokens=8,
            n=3,
            stream=True,
            stream_options={"include_usage": True},
            **EXACT,
        )
    )

    texts, finishes = by_index(chunks, lambda choice: choice.text)
    assert texts == {0: expected, 1: expected, 2: expected}
    for reasons in finishes.values():  # one finish chunk per choice, its last
        assert reasons[-1] == "length" and set(reasons[:-1]) == {None}
    usage_chunks = [chunk for chunk in chunks if chunk.usage is not None]
    assert usage_chunks == [chunks[-1]] and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 3 * 8
    assert chunks[-1].usage.prompt_tokens == len(reference.tokenize(PROMPT))


def test_each_streamed_choice_ends_with_its_own_timings(server):
    body = {"prompt": PROMPT, "max_tokens": 5, "n": 2, "temperature": 0, "ignore_eos": True, "stream": True}

    with server.http.stream("POST", "/v1/completions", json=body) as response:
        events = [event for event in sse_events(response) if event != "[DONE]"]

    finals = [event for event in events if event["choices"][0]["finish_reason"] is not None]
    assert sorted(event["choices"][0]["index"] for event in finals) == [0, 1]
    assert all(event["timings"]["predicted_n"] == 5 for event in finals)
    assert all("timings" not in event or event["timings"] is None for event in events if event not in finals)


def test_seeded_choice_i_is_the_single_request_with_seed_plus_i(client):
    options = {"model": "tiny-f32", "prompt": PROMPT, "max_tokens": 16, "temperature": 1.0}
    singles = [client.completions.create(**options, seed=40 + i).choices[0].text for i in range(3)]

    whole = client.completions.create(**options, seed=40, n=3)
    streamed, _ = by_index(client.completions.create(**options, seed=40, n=3, stream=True), lambda c: c.text)

    assert [choice.text for choice in whole.choices] == singles
    assert streamed == dict(enumerate(singles))  # interleaved chunks, no token in another choice
    assert len(set(singles)) > 1


def test_unseeded_choices_draw_seeds_of_their_own(client):
    response = client.completions.create(model="tiny-f32", prompt=PROMPT, max_tokens=16, temperature=1.0, n=3)

    assert len({choice.text for choice in response.choices}) > 1


def test_logprobs_stop_strings_and_max_tokens_apply_to_each_choice(client, reference):
    expected = list(reference.session().generate(PROMPT, max_tokens=6, logprobs=True, top_logprobs=2, temperature=0))
    text = reference.session().complete(PROMPT, max_tokens=24, temperature=0).text
    stop = text[8:12]  # four characters from inside the greedy text

    response = client.completions.create(model="tiny-f32", prompt=PROMPT, max_tokens=6, temperature=0, n=2, logprobs=2)
    stopped = client.completions.create(model="tiny-f32", prompt=PROMPT, max_tokens=24, temperature=0, n=2, stop=[stop])
    streamed = [
        chunk.choices[0]
        for chunk in client.completions.create(
            model="tiny-f32", prompt=PROMPT, max_tokens=6, temperature=0, n=2, logprobs=2, stream=True
        )
    ]

    for choice in response.choices:
        assert choice.logprobs.tokens == [token.text for token in expected]
        assert choice.logprobs.token_logprobs == pytest.approx([token.logprob for token in expected], abs=1e-5)
        assert choice.logprobs.text_offset == [sum(len(t.text) for t in expected[:i]) for i in range(6)]
    assert [(c.text, c.finish_reason) for c in stopped.choices] == [(text[: text.index(stop)], "stop")] * 2
    for index in (0, 1):  # each choice's offsets count its own text only
        offsets = [c.logprobs.text_offset[0] for c in streamed if c.index == index and c.logprobs]
        assert offsets == response.choices[index].logprobs.text_offset


# -- chat ------------------------------------------------------------------------------------


def test_three_greedy_chat_replies_are_the_library_reply(client, reference):
    expected = reference.session().chat(MESSAGES, max_tokens=8, temperature=0).result().text
    single = client.chat.completions.create(model="tiny-f32", messages=MESSAGES, max_tokens=8, temperature=0)

    response = client.chat.completions.create(model="tiny-f32", messages=MESSAGES, max_tokens=8, temperature=0, n=3)

    assert [choice.index for choice in response.choices] == [0, 1, 2]
    assert [choice.message.content for choice in response.choices] == [expected] * 3
    assert [choice.finish_reason for choice in response.choices] == [single.choices[0].finish_reason] * 3
    assert response.usage.prompt_tokens == single.usage.prompt_tokens
    assert response.usage.completion_tokens == 3 * single.usage.completion_tokens


def test_three_streamed_chat_replies_each_start_with_the_role_and_end_once(client, reference):
    expected = reference.session().chat(MESSAGES, max_tokens=8, temperature=0).result().text

    chunks = list(
        client.chat.completions.create(
            model="tiny-f32",
            messages=MESSAGES,
            max_tokens=8,
            temperature=0,
            n=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    first_of = {}
    for chunk in chunks:
        for choice in chunk.choices:
            first_of.setdefault(choice.index, choice)
    assert sorted(first_of) == [0, 1, 2] and all(c.delta.role == "assistant" for c in first_of.values())
    texts, finishes = by_index(chunks, lambda choice: choice.delta.content)
    assert texts == {0: expected, 1: expected, 2: expected}
    assert all(reasons[-1] is not None and set(reasons[:-1]) == {None} for reasons in finishes.values())
    assert [chunk for chunk in chunks if chunk.usage is not None] == [chunks[-1]]


def test_seeded_chat_choice_i_is_the_single_reply_with_seed_plus_i(client):
    options = {"model": "tiny-f32", "messages": MESSAGES, "max_tokens": 12, "temperature": 1.0}
    singles = [client.chat.completions.create(**options, seed=7 + i).choices[0].message.content for i in range(2)]

    streamed, _ = by_index(
        client.chat.completions.create(**options, seed=7, n=2, stream=True), lambda c: c.delta.content
    )

    assert streamed == dict(enumerate(singles))


# -- limits and admission ----------------------------------------------------------------------


def test_more_choices_than_the_slots_wait_in_the_queue(client, reference):
    expected = reference.session().complete(PROMPT, max_tokens=4, temperature=0, ignore_eos=True).text

    response = client.completions.create(model="tiny-f32", prompt=PROMPT, max_tokens=4, n=5, **EXACT)

    assert [choice.text for choice in response.choices] == [expected] * 5


@pytest.mark.parametrize("n", [6, 17, 0])
def test_n_the_server_could_never_hold_is_a_400_naming_n(client, server, n):
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="tiny-f32", prompt=PROMPT, max_tokens=2, n=n)
    with pytest.raises(openai.BadRequestError) as raised_chat:
        client.chat.completions.create(model="tiny-f32", messages=MESSAGES, max_tokens=2, n=n)

    assert raised.value.body["param"] == "n" and raised_chat.value.body["param"] == "n"
    assert server.wait_until_idle()["slots_idle"] == 3


def test_choices_that_do_not_all_fit_now_are_refused_together_with_retry_after(model):
    app = create_app(model, n_slots=1, max_queue=2, n_ctx=N_CTX)
    with running_server(app) as server:
        with server.http.stream("POST", "/v1/completions", json=HOLDING) as holding:
            events = sse_events(holding)  # kept: dropping the iterator would close the stream
            next(events)  # the only slot is generating it; the queue has two places

            waiting = threading.Thread(
                target=lambda: httpx.post(
                    f"{server.url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 1}, timeout=TIMEOUT_SECONDS
                )
            )
            waiting.start()
            server.wait_until(lambda h: h["queued"] == 1, "one request to queue")
            before = ended(server)

            refused = server.http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 1, "n": 2})

            assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_full"
            assert int(refused.headers["Retry-After"]) >= 1
            assert "n=2" in refused.json()["error"]["message"]
            assert server.health()["queued"] == 1  # neither choice was left waiting
            with pytest.raises(openai.InternalServerError):
                server.openai().chat.completions.create(model="tiny-f32", messages=MESSAGES, max_tokens=1, n=2)
        waiting.join(TIMEOUT_SECONDS)
        assert server.wait_until_idle()["slots_idle"] == 1
        # Only the holding request and the waiting one ever ran: no job of the refused ones did.
        assert sum(grown(before, ended(server)).values()) == 2


def test_choices_that_do_not_all_fit_start_none_on_a_free_slot(model):
    # Two slots and one queue place: n=3 fits the server, but not while one slot is held.
    app = create_app(model, n_slots=2, max_queue=1, n_ctx=N_CTX)
    with running_server(app) as server:
        with server.http.stream("POST", "/v1/completions", json=HOLDING) as holding:
            events = sse_events(holding)  # kept: dropping the iterator would close the stream
            next(events)

            refused = server.http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 1, "n": 3})

            assert refused.status_code == 503 and "Retry-After" in refused.headers
            assert server.health() == {"status": "ok", "slots_idle": 1, "slots_processing": 1, "queued": 0}
        assert server.wait_until_idle()["slots_idle"] == 2
        # The holding request alone: no choice started on the free slot only to be undone.
        assert ended(server) == {"cancelled": 1}


class _RefusingScheduler:
    """A scheduler whose room looks large but whose second submit is refused (a count read while a
    slot was changing jobs): the submit must leave no job behind."""

    slots = [object()] * 4
    slots_busy = 0
    queue_depth = 0

    def __init__(self) -> None:
        self.submitted: list = []
        self.cancelled: list = []

    def submit(self, job) -> None:
        if len(self.submitted) == 1:
            raise QueueFullError("full after all")
        self.submitted.append(job)

    def cancel(self, job) -> None:
        self.cancelled.append(job)


def test_a_submit_refused_halfway_cancels_the_choices_already_submitted():
    async def admit() -> _RefusingScheduler:
        scheduler = _RefusingScheduler()
        prepared = PreparedRequest([1, 2, 3], {"seed": None}, None, n=3)
        choices = Choices(scheduler, 0, prepared, time.perf_counter(), lambda seconds: None)
        with pytest.raises(QueueFullError):
            choices.submit()
        return scheduler

    scheduler = asyncio.run(admit())

    assert scheduler.cancelled == scheduler.submitted and len(scheduler.submitted) == 1


# -- cancelling and failures -------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 5], ids=["all-running", "two-queued"])
def test_a_client_gone_mid_stream_frees_every_choices_slot(server, n):
    before = ended(server)
    with server.http.stream("POST", "/v1/completions", json={**HOLDING, "n": n}) as response:
        events = sse_events(response)
        next(events)
        wait_for_slots(server, "processing", 3)
        assert server.health()["queued"] == n - 3
    # The client closed the stream: every running choice stops, queued ones leave the queue unrun.
    wait_for_slots(server, "idle", 3)
    assert server.wait_until_idle()["queued"] == 0
    assert grown(before, ended(server)) == {"cancelled": 3}


def test_a_client_gone_while_waiting_for_the_whole_answer_frees_every_slot(server):
    before = ended(server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json={**HOLDING, "stream": False, "n": 3}, timeout=1.0)

    wait_for_slots(server, "idle", 3)
    assert grown(before, ended(server)) == {"cancelled": 3}


def _fail_second_choice(app, monkeypatch) -> None:
    """Make the second job of the next request fail at its third token, as a broken engine would (after
    two tokens, so that a stream has begun whichever choice speaks first)."""
    scheduler = app.state.served.scheduler
    real_submit = scheduler.submit
    count = {"jobs": 0}

    def submit(job):
        count["jobs"] += 1
        if count["jobs"] == 2:
            real_sink, tokens = job.sink, []

            def failing_sink(event):
                if len(tokens) > 2:
                    return  # failed: nothing more from this job
                if isinstance(event, TokenEvent):
                    tokens.append(event)
                    if len(tokens) > 2:
                        event = FailedEvent(RuntimeError("the engine broke"))
                real_sink(event)

            job.sink = failing_sink
        real_submit(job)

    monkeypatch.setattr(scheduler, "submit", submit)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_one_failed_choice_fails_the_request_and_cancels_the_others(model, monkeypatch, stream):
    app = create_app(model, n_slots=2, n_ctx=N_CTX)
    _fail_second_choice(app, monkeypatch)
    body = {**HOLDING, "n": 2, "stream": stream}
    with running_server(app) as server:
        if stream:
            with server.http.stream("POST", "/v1/completions", json=body) as response:
                events = list(sse_events(response))
            assert events[-2]["error"]["type"] == "server_error" and events[-1] == "[DONE]"
        else:
            response = server.http.post("/v1/completions", json=body)
            assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"

        wait_for_slots(server, "idle", 2)
        # Both jobs were stopped (the failed one at its failure), neither ran to its 8000 tokens.
        assert "length" not in ended(server)
        again = server.http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2, "n": 2})
        assert again.status_code == 200 and len(again.json()["choices"]) == 2


# -- what the server reports -------------------------------------------------------------------


def test_n_choices_are_n_slot_uses_in_slots_and_metrics(server):
    with server.http.stream("POST", "/v1/completions", json={**HOLDING, "n": 2}) as response:
        events = sse_events(response)  # kept: dropping the iterator would close the stream
        next(events)
        wait_for_slots(server, "processing", 2)
    wait_for_slots(server, "idle", 3)
    before = server.metrics()

    response = server.http.post(
        "/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, "n": 3, "temperature": 0, "ignore_eos": True}
    )
    after = server.metrics()

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert response.status_code == 200
    assert grew("gptj_requests_total{endpoint=/v1/completions,status=200}") == 1
    assert grew("gptj_generations_total{reason=length}") == 3
    assert grew("gptj_generated_tokens_total") == 3 * 4
    assert grew("gptj_time_to_first_token_seconds_count") == 1  # the request's first token
