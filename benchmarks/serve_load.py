"""The server under load: time to first token and tokens/s for 1, 4 and 16 concurrent clients.

Starts ``gptj-ggml serve`` on a random-weight model (in a process of its own, as it would run) and,
for each client count, lets that many clients send a fixed number of streamed completion requests
between them, one after another each (greedy, a different prompt per request, ``--tokens`` each,
end-of-text ignored). It prints one row per client count: time to first token (request sent to
first text chunk; p50 and p99, queueing included), the median per-stream rate (tokens after the
first over the time they took) and the total rate (every token of the level over its wall time).

    python benchmarks/serve_load.py --model tiny --requests 32 --tokens 32
    python benchmarks/serve_load.py --model 6b --layers 2 --requests 16 --tokens 16
    python benchmarks/serve_load.py --model 6b --layers 4 --outtype q4_0 --slots 16 --clients 1,2,4,8,16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from random_gguf import write_random_gptj

from gptj_ggml._native import core

CLIENT_COUNTS = (1, 4, 16)
WORDS = [
    "Apples",
    "Bridges",
    "Castles",
    "Dragons",
    "Engines",
    "Forests",
    "Glaciers",
    "Harbors",
    "Islands",
    "Jungles",
    "Kettles",
    "Lanterns",
]


@dataclass
class Stream:
    ttft: float  # seconds from sending the request to the first text
    tokens: int
    decode_seconds: float  # from the first text to the last


def write_model(kind: str, layers: int, outtype: str, folder: Path) -> Path:
    if kind == "tiny":  # the README's quick-start shape: 4 layers, n_embd 256
        return write_random_gptj(folder / "tiny.gguf", 4, "f16", n_embd=256, n_head=8, rotary_dim=16, n_inner=1024)
    path = folder / f"6b-{layers}l-{outtype}.gguf"
    return path if path.exists() else write_random_gptj(path, layers, outtype)  # GPT-J-6B's shapes, fewer layers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, port: int, slots: int | None, n_ctx: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "gptj_ggml", "serve", str(model), "--port", str(port), "--ctx", str(n_ctx)]
    command += ["--log-level", "warning", *(["--slots", str(slots)] if slots else [])]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"the server did not start: {process.communicate()[1]}")


async def one_request(http: httpx.AsyncClient, prompt: str, n_tokens: int) -> Stream:
    body = {"prompt": prompt, "max_tokens": n_tokens, "temperature": 0, "ignore_eos": True, "stream": True}
    sent = time.perf_counter()
    first = last = None
    tokens = 0
    async with http.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["finish_reason"] is None:  # a token
                last = time.perf_counter()
                first = first or last
                tokens += 1
    assert first is not None and last is not None, "no text came back"
    return Stream(first - sent, tokens, last - first)


async def run_level(url: str, n_clients: int, n_requests: int, n_tokens: int) -> tuple[list[Stream], float]:
    prompts = [f"{WORDS[i % len(WORDS)]} {i} are the subject of this chapter, which" for i in range(n_requests)]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts:
        queue.put_nowait(prompt)
    streams: list[Stream] = []
    limits = httpx.Limits(max_connections=n_clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def client() -> None:
            while not queue.empty():
                streams.append(await one_request(http, queue.get_nowait(), n_tokens))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(n_clients)))
        wall = time.perf_counter() - started
    return streams, wall


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny", "6b"], default="tiny")
    parser.add_argument("--layers", type=int, default=2, help="layers of the GPT-J-6B-shaped model")
    parser.add_argument("--requests", type=int, default=32, help="requests per client count")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per request")
    parser.add_argument("--slots", type=int, default=None, help="server slots (default: the server's)")
    parser.add_argument("--outtype", default="q8_0", help="weight type of the 6B-shaped model")
    parser.add_argument("--clients", default=",".join(map(str, CLIENT_COUNTS)), help="client counts, comma-separated")
    parser.add_argument("--dir", type=Path, default=None, help="keep the model file here (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        model = write_model(args.model, args.layers, args.outtype, folder)
        port = free_port()
        server = start_server(model, port, args.slots, n_ctx=512)
        url = f"http://127.0.0.1:{port}"
        try:
            slots = httpx.get(f"{url}/props").json()["n_slots"]
            asyncio.run(run_level(url, 1, 2, 4))  # warm-up: page cache, compute buffers
            print(
                f"{args.model} model ({model.stat().st_size / 2**20:.0f} MiB), {slots} slots, "
                f"{core.physical_core_count()} physical cores ({os.cpu_count()} logical); "
                f"{args.requests} requests of {args.tokens} tokens per row\n"
            )
            print("| clients | TTFT p50 | TTFT p99 | per-stream tokens/s (median) | total tokens/s |")
            print("|---|---|---|---|---|")
            for n_clients in [int(n) for n in args.clients.split(",")]:
                streams, wall = asyncio.run(run_level(url, n_clients, args.requests, args.tokens))
                ttfts = [s.ttft * 1e3 for s in streams]
                rates = [(s.tokens - 1) / s.decode_seconds for s in streams if s.tokens > 1 and s.decode_seconds > 0]
                total = sum(s.tokens for s in streams) / wall
                print(
                    f"| {n_clients} | {percentile(ttfts, 0.5):.0f} ms | {percentile(ttfts, 0.99):.0f} ms | "
                    f"{statistics.median(rates):.1f} | {total:.1f} |"
                )
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
