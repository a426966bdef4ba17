"""Sixteen clients at once: no errors, and no tokens mixed up between slots.

Each stream must be exactly what the library generates for its request alone (greedy, a fresh
session). The prompts start with different words, so no slot reuses another prompt's prefix and
every prompt is evaluated as the library evaluates it.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from gptj_ggml import Model
from gptj_ggml.server import create_app

from server_fixtures import TIMEOUT_SECONDS, running_server, sse_events

N_CLIENTS = 16
MAX_TOKENS = 24
WORDS = [
    "Apples", "Bridges", "Castles", "Dragons", "Engines", "Forests", "Glaciers", "Harbors",
    "Islands", "Jungles", "Kettles", "Lanterns", "Mountains", "Nebulae", "Oceans", "Pyramids",
]  # fmt: skip


@pytest.fixture(scope="module")
def model_path(tiny_model_path):
    return tiny_model_path("f32")


def test_sixteen_concurrent_streams_each_get_the_text_of_their_request_alone(model_path):
    prompts = [f"{word} are the subject of chapter {i}:" for i, word in enumerate(WORDS[:N_CLIENTS])]
    reference = Model(model_path)
    expected = [reference.session().complete(p, max_tokens=MAX_TOKENS, temperature=0).text for p in prompts]
    app = create_app(Model(model_path), n_slots=4, max_queue=N_CLIENTS)
    texts: list[str | None] = [None] * N_CLIENTS
    errors: list[BaseException] = []
    start = threading.Barrier(N_CLIENTS)

    with running_server(app) as server:

        def client(i: int) -> None:
            body = {"prompt": prompts[i], "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
            try:
                with httpx.Client(base_url=server.url, timeout=TIMEOUT_SECONDS) as http:
                    start.wait()
                    with http.stream("POST", "/v1/completions", json=body) as response:
                        response.raise_for_status()
                        chunks = [event for event in sse_events(response) if event != "[DONE]"]
                texts[i] = "".join(chunk["choices"][0]["text"] for chunk in chunks if chunk["choices"])
            except BaseException as error:  # noqa: BLE001 - reported below, with the others
                errors.append(error)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(N_CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT_SECONDS)

        assert errors == []
        assert texts == expected
        health = server.wait_until_idle()
        assert health["slots_idle"] == 4
        metrics = server.metrics()
        assert metrics["gptj_requests_total{endpoint=/v1/completions,status=200}"] == N_CLIENTS
        assert metrics["gptj_generated_tokens_total"] == N_CLIENTS * MAX_TOKENS
