"""``gptj-ggml serve`` in a sub-process: it listens on 127.0.0.1, asks for its key, and stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from server_fixtures import TIMEOUT_SECONDS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def serve(tiny_model_path):
    """Start ``gptj-ggml serve MODEL --port P ...``; yield (process, base URL); end it with SIGINT."""
    processes = []

    def start(*flags: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
        port = _free_port()
        command = [sys.executable, "-m", "gptj_ggml", "serve", str(tiny_model_path("f32")), "--port", str(port), *flags]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    return process, url
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start: {process.communicate()[1]}")
            time.sleep(0.05)

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_answers_with_the_key_and_stops_on_ctrl_c(serve):
    process, url = serve(
        "--slots", "1", "--api-key", "sesame", "--temperature", "0", "--max-tokens", "3", "--lookup", "4"
    )

    assert httpx.post(f"{url}/v1/completions", json={"prompt": "Hi"}).status_code == 401
    response = httpx.post(f"{url}/v1/completions", json={"prompt": "Hi"}, headers={"Authorization": "Bearer sesame"})
    props = httpx.get(f"{url}/props", headers={"Authorization": "Bearer sesame"}).json()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=TIMEOUT_SECONDS)

    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] <= 3
    assert props["n_slots"] == 1 and props["api_key_required"] is True
    assert (
        props["default_generation_settings"]["temperature"] == 0
        and props["default_generation_settings"]["max_tokens"] == 3
        and props["default_generation_settings"]["lookup"] == 4
    )
    assert process.returncode == 0
    assert f"serving tiny-f32 on {url}" in stderr and "API key required" in stderr


def test_serve_takes_the_key_from_the_environment(serve):
    _, url = serve(env={**os.environ, "GPTJ_GGML_API_KEY": "from-env"})

    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer from-env"}).status_code == 200


def test_serve_rejects_bad_sizes_in_one_line(tiny_model_path):
    result = subprocess.run(
        [sys.executable, "-m", "gptj_ggml", "serve", str(tiny_model_path("f32")), "--slots", "0"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 1 and result.stderr.strip() == "error: --slots must be positive, got 0"


def test_serve_rejects_a_lookup_beyond_15_in_one_line(tiny_model_path):
    result = subprocess.run(
        [sys.executable, "-m", "gptj_ggml", "serve", str(tiny_model_path("f32")), "--lookup", "16"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 1 and result.stderr.strip() == "error: --lookup must be <= 15, got 16"


def test_serve_replicas_without_ray_says_which_extra_to_install(tiny_model_path):
    # Ray made unimportable in the child, as in an install without the ray extra.
    code = "import sys; sys.modules['ray'] = None; from gptj_ggml.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "serve", str(tiny_model_path("f32")), "--replicas", "2"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.strip() == "error: --replicas 2 needs Ray Serve: pip install 'gptj_ggml[ray]'"


def test_serve_replicas_serves_from_two_replicas_and_stops_on_ctrl_c(tiny_model_path):
    port = _free_port()
    command = [sys.executable, "-m", "gptj_ggml", "serve", str(tiny_model_path("f32")), "--port", str(port)]
    command += ["--replicas", "2", "--slots", "1", "--threads", "1", "--max-tokens", "3", "--log-level", "warning"]
    # RAY_ADDRESS=local: a Ray of its own, whatever else runs on this machine.
    env = {**os.environ, "RAY_ADDRESS": "local"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    stderr_lines: list[str] = []
    serving = threading.Event()

    def read_stderr() -> None:
        for line in process.stderr:
            stderr_lines.append(line)
            if line.startswith("serving "):
                serving.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        # Ray's start and two replicas', on a busy CI machine.
        assert serving.wait(90), "".join(stderr_lines[-20:])
        replicas = {}
        for n in range(20):  # a session each: the session router spreads them over the replicas
            response = httpx.get(f"http://127.0.0.1:{port}/props", headers={"X-Session-Id": f"cli-{n}"}, timeout=30)
            replicas[response.headers["X-Replica-Id"]] = response.json()
        completion = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"prompt": "Hi"}, timeout=30).json()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        reader.join(TIMEOUT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert len(replicas) == 2
    assert all(p["n_slots"] == 1 and p["default_generation_settings"]["max_tokens"] == 3 for p in replicas.values())
    assert completion["usage"]["completion_tokens"] <= 3
    assert process.returncode == 0
    assert f"serving {tiny_model_path('f32')} on http://127.0.0.1:{port} (2 Ray Serve replicas" in "".join(stderr_lines)
