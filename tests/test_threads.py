"""The engine releases the GIL while ggml computes, so other Python threads keep running."""

from __future__ import annotations

import threading
import time

from gptj_ggml import Model


def test_other_python_threads_run_while_the_model_evaluates(tiny_model_path):
    # A wider model so one evaluation takes a noticeable time.
    model = Model(tiny_model_path("f32", n_embd=256, n_head=8, rotary_dim=16, n_layer=4), n_threads=1)
    ids = list(range(1000, 1256))
    model.logits(ids)  # warm up: compute buffers, page cache

    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.02)
    before = ticks
    started = time.perf_counter()
    model.logits(ids)
    elapsed = time.perf_counter() - started
    during = ticks - before
    stop.set()
    counter.join()
    # Holding the GIL for the whole call would leave the counter at about 0 during it.
    assert elapsed > 0.05
    assert during >= 0.3 * elapsed / 0.0011
