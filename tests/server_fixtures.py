"""Helpers of the server tests: a real uvicorn server on 127.0.0.1 in a thread, and small clients.

Each test module starts its own servers (``running_server(app)``) on a port the kernel picks, so
modules never share state; the app's lifespan ends with the ``with`` block, which stops the slots'
threads.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

#: Every wait in these tests is bounded: a hung server fails the test instead of hanging CI.
TIMEOUT_SECONDS = 30.0


class Server:
    """A running server: its base URL, the app (for its scheduler), and an httpx client."""

    def __init__(self, app: Any, url: str, api_key: str | None) -> None:
        self.app = app
        self.url = url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_SECONDS)

    @property
    def scheduler(self) -> Any:
        return self.app.state.served.scheduler

    def openai(self, api_key: str = "unused") -> Any:
        import openai

        # max_retries=0: a 503 must reach the test, not be retried after Retry-After.
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=TIMEOUT_SECONDS)

    def health(self) -> dict[str, Any]:
        return self.http.get("/health").json()

    def wait_until(self, condition: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Poll /health until ``condition(health)`` holds."""
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while True:
            health = self.health()
            if condition(health):
                return health
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; /health says {health}")
            time.sleep(0.01)

    def wait_until_idle(self) -> dict[str, Any]:
        return self.wait_until(lambda h: h["slots_processing"] == 0 and h["queued"] == 0, "every slot idle")

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {sample name with its labels: value}, e.g. ``gptj_requests_total{endpoint=...,status=200}``."""
        text = self.http.get("/metrics").text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples


@contextlib.contextmanager
def running_server(app: Any, api_key: str | None = None) -> Iterator[Server]:
    """Serve ``app`` with uvicorn on 127.0.0.1 on a free port, in a thread, for the ``with`` block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    running = Server(app, f"http://127.0.0.1:{port}", api_key)
    try:
        yield running
    finally:
        running.http.close()
        server.should_exit = True
        thread.join(TIMEOUT_SECONDS)
        sock.close()


def sse_events(response: httpx.Response) -> Iterator[Any]:
    """The ``data:`` payloads of a server-sent-events response, parsed (``[DONE]`` as the string)."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            yield data if data == "[DONE]" else json.loads(data)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
