"""A long evaluation stops at Ctrl-C: the engine runs Python's signal handlers between batches
and, through ggml's abort callback, about every 0.1 s inside one. The handler's exception is
raised (KeyboardInterrupt for Ctrl-C), and the session keeps the batches it finished."""

from __future__ import annotations

import signal

import pytest

from gptj_ggml import Model


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def model(tiny_model_path):
    # 4000 tokens in batches of 32 take about 3 s here, one batch of 2048 about 2 s: far longer
    # than the interrupts below wait.
    return Model(tiny_model_path("f32"), n_ctx=4096, n_threads=1)


@pytest.fixture
def alarm():
    """alarm(seconds, exception): that exception is raised by a signal handler after `seconds`."""
    previous = signal.getsignal(signal.SIGALRM)

    def arm(seconds: float, exception: type[BaseException]) -> None:
        def handler(signum, frame):
            raise exception("alarm")

        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, seconds)

    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_keyboard_interrupt_stops_a_long_evaluation_between_batches(model, alarm):
    session = model.session(n_batch=32)
    ids = list(range(1000, 5000))
    alarm(0.2, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        session.logits(ids)
    # It stopped early (the first check comes after the first batch, once the 800 MB of logits
    # are allocated), and the session holds the batches done: a prefix of whole batches.
    assert 0 < session.n_past < len(ids) and session.n_past % 32 == 0
    assert session.history == ids[: session.n_past]


def test_the_signal_handlers_own_exception_is_raised(model, alarm):
    alarm(0.2, Stop)
    with pytest.raises(Stop, match="alarm"):
        model.session(n_batch=32).logits(list(range(1000, 5000)))


def test_keyboard_interrupt_stops_inside_a_single_batch(model, alarm):
    # One batch of 2048 tokens: only ggml's abort callback can stop it early.
    session = model.session(n_batch=2048)
    alarm(0.15, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        session.logits(list(range(1000, 3048)))
    assert session.n_past == 0  # stopped inside the batch, which is not kept
    assert session.logits([1, 2, 3]).shape == (3, model.n_vocab)  # and the session still works


def test_a_long_prompt_of_a_generation_stops_too(model, alarm):
    session = model.session(n_batch=32)
    alarm(0.2, KeyboardInterrupt)
    generation = session.generate(list(range(1000, 5000)), max_tokens=4)
    with pytest.raises(KeyboardInterrupt):
        next(generation)
    assert generation.finish_reason == "cancelled"
    assert 0 < session.n_past < 4000
