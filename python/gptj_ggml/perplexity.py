"""Perplexity of a model on a text, and how far a quantized model is from a reference one.

The token ids are cut into consecutive chunks of ``n_ctx`` tokens (the last one may be
shorter, if it has at least two). Each chunk is evaluated from an empty context, and every
token of it but the first is scored by the logits of the position before it:
``NLL = -log softmax(logits[i - 1])[ids[i]]``; perplexity is ``exp(mean NLL)``. The
KL mode evaluates a reference model on the same chunks and reports, per scored position,
``KL(P_reference || P_model)`` and whether both models' most likely tokens agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .model import Model

__all__ = ["KlResult", "PerplexityResult", "chunk_ids", "kl_divergence", "log_softmax", "perplexity"]


@dataclass(frozen=True)
class PerplexityResult:
    """``perplexity = exp(mean_nll)`` over ``n_scored`` tokens in ``n_chunks`` chunks."""

    perplexity: float
    mean_nll: float
    n_scored: int
    n_chunks: int


@dataclass(frozen=True)
class KlResult:
    """A model against a reference on the same tokens: mean and 99th percentile KL, top-1 agreement."""

    mean_kl: float
    kl_p99: float
    top1_agreement: float
    perplexity: float
    reference_perplexity: float
    n_scored: int


def chunk_ids(ids: Sequence[int], n_ctx: int) -> list[list[int]]:
    """Consecutive chunks of ``n_ctx`` ids; a shorter last chunk is kept if it has two ids or more."""
    if n_ctx < 2:
        raise ValueError(f"n_ctx must be at least 2 to score a token, got {n_ctx}")
    chunks = [list(ids[start : start + n_ctx]) for start in range(0, len(ids), n_ctx)]
    chunks = [chunk for chunk in chunks if len(chunk) >= 2]
    if not chunks:
        raise ValueError(f"the text has {len(ids)} tokens; perplexity needs at least 2")
    return chunks


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, in float64."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def perplexity(
    model: Model,
    ids: Sequence[int],
    n_ctx: int = 512,
    on_chunk: Callable[[int, int], None] | None = None,
) -> PerplexityResult:
    """Perplexity of ``model`` on the token ids ``ids`` (see the module's docstring).

    ``on_chunk(done, total)`` is called after each chunk.
    """
    total_nll, n_scored = 0.0, 0
    chunks = chunk_ids(ids, _checked_ctx(model, n_ctx))
    for done, (chunk, log_probs) in enumerate(_scored_chunks(model, chunks), 1):
        total_nll += float(_nll(log_probs, chunk).sum())
        n_scored += len(chunk) - 1
        if on_chunk is not None:
            on_chunk(done, len(chunks))
    mean = total_nll / n_scored
    return PerplexityResult(math.exp(mean), mean, n_scored, len(chunks))


def kl_divergence(
    model: Model,
    reference: Model,
    ids: Sequence[int],
    n_ctx: int = 512,
    on_chunk: Callable[[int, int], None] | None = None,
) -> KlResult:
    """``model`` against ``reference`` (e.g. q4_0 against f16) on the same chunks of ``ids``."""
    if model.n_vocab != reference.n_vocab:
        raise ValueError(f"the models have different vocabularies ({model.n_vocab} and {reference.n_vocab} tokens)")
    chunks = chunk_ids(ids, min(_checked_ctx(model, n_ctx), _checked_ctx(reference, n_ctx)))
    kls, agreements, nll, reference_nll = [], [], 0.0, 0.0
    for done, ((chunk, log_q), (_, log_p)) in enumerate(
        zip(_scored_chunks(model, chunks), _scored_chunks(reference, chunks)), 1
    ):
        kls.append((np.exp(log_p) * (log_p - log_q)).sum(axis=-1))
        agreements.append(log_p.argmax(axis=-1) == log_q.argmax(axis=-1))
        nll += float(_nll(log_q, chunk).sum())
        reference_nll += float(_nll(log_p, chunk).sum())
        if on_chunk is not None:
            on_chunk(done, len(chunks))
    kl = np.concatenate(kls)
    n = kl.size
    return KlResult(
        mean_kl=float(kl.mean()),
        kl_p99=float(np.percentile(kl, 99)),
        top1_agreement=float(np.concatenate(agreements).mean()),
        perplexity=math.exp(nll / n),
        reference_perplexity=math.exp(reference_nll / n),
        n_scored=n,
    )


def _checked_ctx(model: Model, n_ctx: int) -> int:
    if n_ctx > model.n_ctx:
        raise ValueError(f"n_ctx {n_ctx} is larger than the model's context ({model.n_ctx}); open it with n_ctx={n_ctx}")
    return n_ctx


def _scored_chunks(model: Model, chunks: list[list[int]]) -> Iterator[tuple[list[int], np.ndarray]]:
    """Each chunk with the log-probabilities of the positions that predict its tokens 1..n-1."""
    for chunk in chunks:
        yield chunk, log_softmax(model.logits(chunk)[:-1])


def _nll(log_probs: np.ndarray, chunk: list[int]) -> np.ndarray:
    return -log_probs[np.arange(len(chunk) - 1), chunk[1:]]
