"""The engine releases the GIL while ggml computes, so other Python threads keep running."""

from __future__ import annotations

import itertools
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


# The thread-count policy, driven with made-up timings (wall and calling-thread CPU seconds).
def policy(max_threads: int = 2, adaptive: bool = True):
    from gptj_ggml._native import core

    return core.ThreadCountPolicy(max_threads, adaptive)


def run(p, now: float, cpu_share: float, wall: float = 0.01) -> int:
    n = p.next(now)
    p.record(n, wall, cpu_share * wall, now + wall)
    return n


def test_all_threads_while_the_calling_thread_gets_its_core():
    p = policy()
    assert [run(p, t * 0.01, cpu_share=0.99) for t in range(50)] == [2] * 50


def test_a_sessions_first_evaluation_is_not_judged():
    p = policy()
    assert [run(p, 0.0, cpu_share=0.3), run(p, 0.01, cpu_share=0.99), run(p, 0.02, cpu_share=0.99)] == [2, 2, 2]


def test_one_thread_fewer_once_the_calling_thread_waited_for_a_core():
    p = policy()
    run(p, 0.0, cpu_share=0.99)  # the first evaluation
    assert run(p, 0.01, cpu_share=0.5) == 2
    assert [run(p, 0.02 + t * 0.01, cpu_share=0.99) for t in range(20)] == [1] * 20


def test_it_tries_more_threads_again_and_backs_off_while_the_cores_stay_busy():
    from gptj_ggml._native import core

    first, longest = core.ThreadCountPolicy.first_probe_seconds, core.ThreadCountPolicy.max_probe_seconds
    p = policy()
    run(p, 0.0, cpu_share=0.99)  # the first evaluation
    run(p, 0.01, cpu_share=0.5)  # busy: down to 1
    probes, now = [], 0.02
    while now < 40:
        if run(p, now, cpu_share=0.5 if p.next(now) == 2 else 0.99) == 2:
            probes.append(round(now, 2))
        now += 0.01
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert probes[0] >= first and gaps[0] >= 2 * first - 0.02  # each failed try doubles the wait
    assert max(gaps) <= longest + 0.05 and gaps[-1] >= longest - 0.05


def test_a_successful_try_goes_back_to_all_threads():
    p = policy()
    run(p, 0.0, cpu_share=0.99)  # the first evaluation
    run(p, 0.01, cpu_share=0.5)
    now = 0.02
    while p.next(now) != 2:  # next() alone changes nothing until record()
        now += 0.01
    run(p, now, cpu_share=0.99)
    assert [run(p, now + 0.02 + t * 0.01, cpu_share=0.99) for t in range(10)] == [2] * 10


def test_evaluations_too_short_to_judge_change_nothing():
    p = policy()
    assert [run(p, t * 0.001, cpu_share=0.1, wall=1e-5) for t in range(20)] == [2] * 20


def test_a_count_the_user_chose_never_changes():
    p = policy(adaptive=False)
    assert [run(p, t * 0.01, cpu_share=0.3) for t in range(500)] == [2] * 500


def test_sessions_adapt_unless_given_a_thread_count(tiny_model_path):
    model = Model(tiny_model_path("f32"))
    assert model.session().adaptive_threads and not model.session(n_threads=2).adaptive_threads
    session = model.session(n_threads=1)
    session.evaluate([1, 2, 3])
    assert session.n_threads == session.n_threads_last_used == 1


def test_a_thread_count_far_above_the_cpus_is_a_value_error_wherever_threads_start(tiny_model_path):
    # 100,000 made ggml's thread creation abort the process (repacking at load, a session's pool).
    import gguf
    import numpy as np
    import pytest

    from gptj_ggml._native import core

    path = tiny_model_path("q4_0")  # quantized: the load repacks, on n_threads threads
    too_many = "n_threads = 100000 is more than this machine can use: at most"
    with pytest.raises(ValueError, match=too_many):
        Model(path, n_threads=100_000)
    model = Model(path, n_threads=1)
    with pytest.raises(ValueError, match=too_many):
        model.session(n_threads=100_000)
    session = model.session()
    with pytest.raises(ValueError, match=too_many):
        session.n_threads = 100_000
    with pytest.raises(ValueError, match=too_many):
        core.quantize_rows(int(gguf.GGMLQuantizationType.Q8_0), np.zeros((4, 32), np.float32), 100_000)


def test_four_threads_per_logical_cpu_are_allowed(tiny_model_path):
    import os

    limit = 4 * (os.cpu_count() or 1)
    model = Model(tiny_model_path("q4_0"), n_threads=limit)
    assert model.session().n_threads == limit
    assert model.logits([1, 2, 3]).shape == (3, model.n_vocab)
