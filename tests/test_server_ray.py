"""The server as two Ray Serve replicas on 127.0.0.1: both serve, streams and disconnects pass Ray's
HTTP proxy, and a session's turns stay on the replica that holds its transcript.

One local Ray (2 CPUs, no dashboard) and one deployment for the module, torn down at its end.
Each replica has one slot, so a replica's cache is the last request it served; ``X-Replica-Id``
names the replica that answered. Routing is checked against what each replica reports
(``timings.cached_n``) and the library's own tokens of the prompts (the reference for what a
slot could reuse). ``pytest tests/test_server_ray.py -rP`` prints the figures of docs/ray.md.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import socket
import threading
import time
import types
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

from gptj_ggml import Model
from gptj_ggml.chat import resolve_template
from gptj_ggml.server.replicas import REPLICA_ID_HEADER, run_replicas
from gptj_ggml.server.session_router import ranked_for_session

from server_fixtures import TIMEOUT_SECONDS, common_prefix_length

#: Ray's start and the replicas' (a model each) on a busy two-core CI machine, with room to spare.
STARTUP_SECONDS = 90.0
SESSION_HEADER = "X-Session-Id"
QUESTIONS = [
    "Hello there, who are you and what do you do?",
    "Tell me more about the work you did last year.",
    "Which part of it did you like best, and why?",
    "Thank you, that is all I wanted to ask today.",
]
LONG = {"max_tokens": 1500, "temperature": 0, "extra_body": {"ignore_eos": True}}  # holds its slot for seconds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _within(seconds: float, what: str, work: Callable[[], Any]) -> Any:
    """``work()``'s result, or AssertionError if it takes longer than ``seconds`` (left running)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as error:  # noqa: BLE001 -- re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"{what} took more than {seconds:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


@dataclasses.dataclass
class Replicas:
    url: str
    startup_seconds: dict[str, float]

    def openai(self, session: str | None = None) -> openai.OpenAI:
        headers = {SESSION_HEADER: session} if session else None
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_SECONDS, default_headers=headers
        )

    def async_openai(self, session: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1",
            api_key="unused",
            max_retries=0,
            timeout=TIMEOUT_SECONDS,
            default_headers={SESSION_HEADER: session},
        )

    def get(self, path: str, session: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={SESSION_HEADER: session}, timeout=TIMEOUT_SECONDS)


@pytest.fixture(scope="module")
def model_path(tiny_model_path):
    return tiny_model_path("f32")


@pytest.fixture(scope="module")
def replicas(model_path):
    began = time.monotonic()
    # address="local": a Ray of its own, even if another runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray_started = time.monotonic()
        port = _free_port()
        _within(
            STARTUP_SECONDS,
            "starting 2 replicas",
            lambda: run_replicas(model_path, replicas=2, port=port, n_slots=1, n_ctx=2048, n_threads=1),
        )
        startup = {"ray.init": ray_started - began, "2 replicas": time.monotonic() - ray_started}
        yield Replicas(f"http://127.0.0.1:{port}", startup)
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(model_path):
    """The library in this process: the prompts' tokens, as the replicas tokenize them."""
    model = Model(model_path)
    template = resolve_template(None, model.metadata)
    return lambda messages: model.tokenize(template.render(messages))


def _stub_replica(unique_id: str) -> Any:
    """What the ranking reads of a Ray replica: its id."""
    return types.SimpleNamespace(replica_id=types.SimpleNamespace(unique_id=unique_id))


def test_a_replica_that_leaves_moves_only_the_sessions_it_had():
    replicas = [_stub_replica(name) for name in ("a", "b", "c")]
    sessions = [f"session-{n}" for n in range(300)]
    before = {s: ranked_for_session(s, replicas)[0].replica_id.unique_id for s in sessions}

    after = {s: ranked_for_session(s, replicas[:2])[0].replica_id.unique_id for s in sessions}

    assert set(collections.Counter(before.values())) == {"a", "b", "c"}
    assert all(after[s] == before[s] for s in sessions if before[s] != "c")
    # c's sessions go to their second choice: spread over a and b, not all to one.
    assert {after[s] for s in sessions if before[s] == "c"} == {"a", "b"}


def test_both_replicas_answer_requests_without_a_session(replicas):
    client = replicas.openai()
    served = collections.Counter()
    for _ in range(20):  # all 20 on one replica: 1 in 500,000 for a fair coin
        raw = client.completions.with_raw_response.create(model="tiny-f32", prompt="Hello", max_tokens=1, temperature=0)
        served[raw.headers[REPLICA_ID_HEADER]] += 1

    startup = ", ".join(f"{what} {seconds:.1f} s" for what, seconds in replicas.startup_seconds.items())
    print(f"start-up: {startup}; 20 requests without a session, per replica: {sorted(served.values())}")
    assert len(served) == 2


def test_the_create_app_options_reach_every_replica(replicas):
    props = {}
    for n in range(20):
        response = replicas.get("/props", session=f"props-{n}")
        props[response.headers[REPLICA_ID_HEADER]] = response.json()

    assert len(props) == 2
    assert all(p["n_slots"] == 1 and p["n_ctx"] == 2048 and p["model"] == "tiny-f32" for p in props.values())


def test_the_openai_client_streams_a_chat_through_the_proxy(replicas):
    client = replicas.openai()
    messages = [{"role": "user", "content": QUESTIONS[0]}]
    whole = client.chat.completions.create(model="tiny-f32", messages=messages, max_tokens=12, temperature=0)

    stream = client.chat.completions.create(
        model="tiny-f32",
        messages=messages,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def _cancelled_generations(replicas: Replicas, session: str) -> float:
    text = replicas.get("/metrics", session).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gptj_generations_total" and sample.labels == {"reason": "cancelled"}:
                return sample.value
    return 0.0


def _wait_until_idle(replicas: Replicas, session: str) -> httpx.Response:
    """Poll the session's replica's /slots until every slot is idle; its last answer."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        response = replicas.get("/slots", session)
        if all(slot["state"] == "idle" for slot in response.json()):
            return response
        assert time.monotonic() < deadline, f"the slot is still busy: {response.json()}"
        time.sleep(0.02)


def _wait_for_cancelled(replicas: Replicas, session: str, expected: float) -> None:
    """Poll the session's replica's /metrics until it has counted ``expected`` cancelled generations.

    The slot is free before the count goes up (``on_finish`` runs after the slot is released), and a
    non-streamed request may not have reached its slot yet when the client gives up: one read races."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while (seen := _cancelled_generations(replicas, session)) < expected:
        assert time.monotonic() < deadline, f"{seen} cancelled generations counted, {expected} expected"
        time.sleep(0.02)
    assert seen == expected


def test_a_client_leaving_mid_stream_frees_its_replicas_slot(replicas):
    session = "leaves-mid-stream"  # its replica answers the /slots and /metrics below too
    cancelled_before = _cancelled_generations(replicas, session)

    stream = replicas.openai(session).completions.create(
        model="tiny-f32", prompt="Once upon a time", stream=True, **LONG
    )
    streamed_by = stream.response.headers[REPLICA_ID_HEADER]
    for _ in zip(range(5), stream):
        pass
    stream.close()

    assert _wait_until_idle(replicas, session).headers[REPLICA_ID_HEADER] == streamed_by
    _wait_for_cancelled(replicas, session, cancelled_before + 1)


def test_a_client_leaving_a_non_streamed_request_frees_its_replicas_slot(replicas):
    session = "leaves-while-waiting"
    # The request must take the replica's one slot: a queued request that is cancelled is not counted.
    _wait_until_idle(replicas, session)
    cancelled_before = _cancelled_generations(replicas, session)

    async def leave_once_it_runs() -> None:
        # The client goes away once its request holds the slot (a timeout could fire before the
        # request reached the replica on a busy machine, and then nothing would have been cancelled).
        client = replicas.async_openai(session)
        request = asyncio.create_task(client.completions.create(model="tiny-f32", prompt="Once upon a time", **LONG))

        async def slot_is_busy() -> bool:
            slots = (await asyncio.to_thread(replicas.get, "/slots", session)).json()
            return any(slot["state"] != "idle" for slot in slots)

        deadline = time.monotonic() + TIMEOUT_SECONDS
        while not await slot_is_busy():
            assert not request.done(), "the request ended before its slot was seen busy"
            assert time.monotonic() < deadline, "the request did not reach its replica's slot"
            await asyncio.sleep(0.02)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await client.close()

    asyncio.run(leave_once_it_runs())
    _wait_for_cancelled(replicas, session, cancelled_before + 1)
    _wait_until_idle(replicas, session)


@dataclasses.dataclass(frozen=True)
class Turn:
    replica: str
    prompt_tokens: int
    reused: int  # timings.cached_n: prompt tokens the slot had already
    shared_with_last_prompt: int  # what a slot holding the last turn could reuse, at least


def _chat(replicas: Replicas, reference, system: str, session: str | None) -> list[Turn]:
    client = replicas.openai(session)
    messages = [{"role": "system", "content": system}]
    last_prompt: list[int] = []
    turns = []
    for question in QUESTIONS:
        messages.append({"role": "user", "content": question})
        prompt = reference(messages)
        raw = client.chat.completions.with_raw_response.create(
            model="tiny-f32", messages=messages, max_tokens=8, temperature=0
        )
        completion = raw.parse()
        assert completion.usage.prompt_tokens == len(prompt)
        turns.append(
            Turn(
                raw.headers[REPLICA_ID_HEADER],
                len(prompt),
                completion.timings["cached_n"],
                common_prefix_length(last_prompt, prompt),
            )
        )
        messages.append({"role": "assistant", "content": completion.choices[0].message.content})
        last_prompt = prompt
    return turns


def _reused_share(conversations: list[list[Turn]]) -> str:
    later = [turn for turns in conversations for turn in turns[1:]]
    reused, prompt = sum(t.reused for t in later), sum(t.prompt_tokens for t in later)
    return f"{reused} of {prompt} prompt tokens reused in turns 2-4 ({reused / prompt:.0%})"


def test_a_chat_with_a_session_stays_on_its_replica_and_reuses_the_transcript_every_turn(replicas, reference):
    conversations = [_chat(replicas, reference, f"Conversation {n}.", session=f"chat-{n}") for n in range(4)]

    print(f"with X-Session-Id, 4 chats of 4 turns: {_reused_share(conversations)}")
    for turns in conversations:
        assert len({turn.replica for turn in turns}) == 1
        assert all(turn.reused >= turn.shared_with_last_prompt > 0 for turn in turns[1:])


def test_without_a_session_a_turn_on_another_replica_evaluates_the_transcript_again(replicas, reference):
    conversations = [_chat(replicas, reference, f"Sessionless {n}.", session=None) for n in range(4)]

    moved = sum(before.replica != turn.replica for turns in conversations for before, turn in itertools.pairwise(turns))
    print(f"without a session, 4 chats of 4 turns ({moved} of 12 turns moved): {_reused_share(conversations)}")
    for turns in conversations:
        for before, turn in itertools.pairwise(turns):
            if turn.replica == before.replica:
                assert turn.reused >= turn.shared_with_last_prompt
            else:
                # That replica's slot holds an older turn (or another chat): less than the last prompt.
                assert turn.reused < turn.shared_with_last_prompt
