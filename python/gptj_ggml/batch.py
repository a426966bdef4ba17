"""Several completions decoded together: ``Model.generate_batch`` and :class:`BatchGeneration`.

Generation is bound by reading the weights (every token reads each of them once), so decoding
several sequences in one forward graph costs little more than one. A batch gives every completion
its own engine session (KV cache), sampler and seed, and steps all of them with one
``BatchEvaluator.evaluate_and_verify`` call per step; each completion's own logic (stop strings,
``max_tokens``, end-of-text, logprobs, the context policy, cancellation) is the same
:class:`~gptj_ggml.decoding.Decoding` a single ``generate`` steps. Completions of the same prompt
share its evaluation: the first evaluates it, the others copy its cache (``Session.copy_from``)
and evaluate only the prompt's last token, for logits of their own.

The order of completions is the one OpenAI's ``n`` gives: prompt 0's ``n`` completions, then
prompt 1's, ... (completion ``index`` belongs to prompt ``index // n``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import _checks
from .errors import ContextFullError, GptjError
from .generate_arguments import check_generate_arguments
from .generation import Completion, DecodingView, Token, completion_of

if TYPE_CHECKING:
    from types import TracebackType

    from . import _core
    from .decoding import Decoding, StepResult
    from .model import Model

logger = logging.getLogger("gptj_ggml")

#: One item of a batched call: (session, tokens, sampler or None, want_logprob, n_top_logprobs, draft).
BatchItem = tuple[Any, list[int], Any, bool, int, list[int]]


class BatchCompletion(DecodingView):
    """One completion of a :class:`BatchGeneration`, as it runs: its ``finish_reason``, ``tokens``,
    ``text``, ``seed`` (the batch's ``seed`` plus ``index``, or a fresh one) and ``timings`` (a
    step's evaluation time is the whole batched call's: the completions of a step share it).

    Attributes:
        index: its place in the batch (what the batch's iterator pairs its tokens with).
        prompt_index: which prompt it continues (``index // n``).
    """

    def __init__(self, index: int, prompt_index: int, decoding: Decoding) -> None:
        self.index = index
        self.prompt_index = prompt_index
        self._decoding = decoding

    def cancel(self) -> None:
        """End this completion now ("cancelled"; text it held back is dropped); the others go on.
        From the thread that iterates the batch (another thread: ``is_cancelled``)."""
        self._decoding.cancel()

    def result(self) -> Completion:
        """Its whole :class:`Completion`; raises ``RuntimeError`` while it is still running."""
        if self._decoding.finish_reason is None:
            raise RuntimeError(f"completion {self.index} is still running: iterate the batch (or call its result())")
        return completion_of(self._decoding)

    def __repr__(self) -> str:
        text = self.text
        shown = text if len(text) <= 40 else text[:37] + "..."
        state = self.finish_reason or "running"
        return (
            f"<BatchCompletion {self.index} (prompt {self.prompt_index}) {state}, {len(self.tokens)} tokens: {shown!r}>"
        )


class BatchGeneration(Iterator[tuple[int, Token]]):
    """Several completions decoded together, their tokens yielded as they are produced.

    Iterate it for ``(index, token)`` pairs: ``index`` says which completion the
    :class:`~gptj_ggml.Token` belongs to (``batch[index]`` describes that completion), and each
    completion's tokens come in order. A completion that ends (a stop string, end-of-text,
    ``max_tokens``) leaves the batch; the others go on. :meth:`result` runs to the end and
    returns every :class:`~gptj_ggml.Completion`, in index order.

    Lazy, as ``Generation``: each ``next()`` runs only as far as the next token. :meth:`close`
    (or the end of a ``with`` block, or dropping the object) cancels every completion still
    running. An error ends the whole batch: a ``ContextFullError`` (``on_context_full="error"``)
    names the completion, after its tokens were yielded, and the others become "cancelled".
    """

    def __init__(self, completions: list[BatchCompletion], steps: Iterator[tuple[int, Token]]) -> None:
        self.completions = tuple(completions)
        self._steps = steps

    def __len__(self) -> int:
        return len(self.completions)

    def __getitem__(self, index: int) -> BatchCompletion:
        return self.completions[index]

    def __next__(self) -> tuple[int, Token]:
        return next(self._steps)

    def __enter__(self) -> BatchGeneration:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop: every completion still running becomes "cancelled"."""
        self._steps.close()
        for completion in self.completions:
            completion._decoding.end()  # for a batch closed before its first step

    def result(self) -> list[Completion]:
        """Run to the end (if not there yet) and return every completion's :class:`Completion`, in index order."""
        for _ in self:
            pass
        return [completion.result() for completion in self.completions]

    def __repr__(self) -> str:
        running = sum(completion.finish_reason is None for completion in self.completions)
        return f"<BatchGeneration {len(self.completions)} completions, {running} running>"


def generate_batch(
    model: Model, prompts: str | Sequence[str | Sequence[int]], n: int = 1, **options: Any
) -> BatchGeneration:
    """The batch of ``n`` completions of each prompt (see ``Model.generate_batch``)."""
    prompt_list = _prompt_list(prompts)
    n = _checks.integer("n", n, minimum=1)
    n_ctx = model.n_ctx
    checked = [
        check_generate_arguments(model, n_ctx, prompt, "generate_batch()", f"prompts[{i}]", **options)
        for i, prompt in enumerate(prompt_list)
    ]
    decodings: list[Decoding] = []
    completions: list[BatchCompletion] = []
    leaders: list[int] = []  # the completion whose session evaluates each completion's prompt
    first_of_prompt: dict[tuple[int, ...], int] = {}
    for prompt_index, arguments in enumerate(checked):
        for _ in range(n):
            index = len(decodings)
            seed = None if arguments.seed is None else (arguments.seed + index) & (2**64 - 1)
            decoding = arguments.decoding(model.session()._core, seed)
            decodings.append(decoding)
            completions.append(BatchCompletion(index, prompt_index, decoding))
            leaders.append(first_of_prompt.setdefault(tuple(arguments.prompt), index))
    # The steps refer to the decodings, never to the BatchGeneration: dropping it closes them at once.
    return BatchGeneration(completions, _drive(decodings, leaders, model._batch_evaluator()))


def _prompt_list(prompts: str | Sequence[str | Sequence[int]]) -> list[str | Sequence[int]]:
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, (bytes, bytearray)) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of prompts (text or token ids), got {type(prompts).__name__}")
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    if any(isinstance(prompt, int) for prompt in prompts):
        raise TypeError(
            "prompts must be a list of prompts, each text or a list of token ids; for one prompt of ids, pass [ids]"
        )
    return list(prompts)


def _drive(
    decodings: list[Decoding], leaders: list[int], evaluator: _core.BatchEvaluator
) -> Iterator[tuple[int, Token]]:
    """The batched loop: every running completion's next tokens in one call per step."""
    running = [index for index, leader in enumerate(leaders) if leader == index]
    # Completions whose prompt another one evaluates first; they copy its cache after the first step.
    followers = [index for index, leader in enumerate(leaders) if leader != index]
    try:
        while running or followers:
            indices, items = [], []
            for index in running:
                decoding = decodings[index]
                tokens = decoding.next_tokens()
                if tokens is None:
                    for token in decoding.hand_out():
                        yield index, token
                    if decoding.error is not None:
                        raise ContextFullError(f"completion {index}: {decoding.error}")
                    decoding.end()
                    continue
                indices.append(index)
                items.append(item_of(decoding, tokens))
            running = indices
            if items:
                items = with_drafts([decodings[index] for index in indices], items)
                n_evaluated = evaluated_tokens([decodings[index] for index in indices], items)
                for index, outcome in zip(indices, evaluate_each(evaluator, items)):
                    if isinstance(outcome, Exception):
                        raise _naming_completion(outcome, index) from outcome
                    decoding = decodings[index]
                    decoding.accept_steps(outcome, n_evaluated)
                    for token in decoding.hand_out():
                        yield index, token
            for index in followers:
                _copy_prompt(decodings[leaders[index]], decodings[index])
            running = sorted(running + followers)
            followers = []
    finally:
        for decoding in decodings:
            decoding.end()


def item_of(decoding: Decoding, tokens: list[int], draft: list[int] | None = None) -> BatchItem:
    """The batched call's item that evaluates ``tokens`` (and ``draft`` after them, verified) and samples."""
    options = decoding.options
    return (decoding.session, tokens, decoding.sampler, options.logprobs, options.top_logprobs, draft or [])


def with_drafts(decodings: list[Decoding], items: list[BatchItem]) -> list[BatchItem]:
    """The items with each generating completion's draft (prompt lookup), sized for a call that
    evaluates one token per generating completion besides it."""
    base = sum(1 for decoding in decodings if not decoding.reading_prompt)
    out = []
    for decoding, item in zip(decodings, items):
        draft = decoding.draft(base) if item[2] is not None and decoding.speculation is not None else []
        out.append((*item[:5], draft) if draft else item)
    return out


def evaluated_tokens(decodings: list[Decoding], items: list[BatchItem]) -> int | None:
    """The tokens a call of ``items`` evaluates, or None when it reads a prompt (no generation
    step's cost to learn from)."""
    if any(decoding.reading_prompt for decoding in decodings):
        return None
    return sum(len(item[1]) + len(item[5]) for item in items)


def evaluate_each(evaluator: _core.BatchEvaluator, items: list[BatchItem]) -> list[list[StepResult] | Exception]:
    """Each item's results of one batched call (``BatchEvaluator.evaluate_and_verify``), or the
    exception that item alone raises.

    The engine raises for the whole call (a sampler with nothing left to sample, NaN logits)
    without saying which item failed; every session is then back where it was, and each item is
    evaluated alone, so that one item's failure is that item's only. (A sampler of the failed call
    may already have drawn its token: a seeded completion that shares a step with a failing one can
    then draw differently from its seed alone.)
    """
    n_past = [item[0].n_past for item in items]
    try:
        return evaluator.evaluate_and_verify(items)
    except Exception as error:
        if len(items) == 1:  # nothing to tell apart
            items[0][0].truncate(n_past[0])
            return [error]
        logger.debug("a batched call of %d items failed; evaluating each alone", len(items), exc_info=True)
    outcomes: list[list[StepResult] | Exception] = []
    for item, before in zip(items, n_past):
        session = item[0]
        session.truncate(before)
        try:
            outcomes.append(evaluator.evaluate_and_verify([item])[0])
        except Exception as error:  # noqa: BLE001 - handed to the caller, as this item's outcome
            session.truncate(before)
            outcomes.append(error)
    return outcomes


def _copy_prompt(leader: Decoding, follower: Decoding) -> None:
    """Give ``follower`` what ``leader``'s session holds of their common prompt, but for its last
    token (evaluated again by each completion, for logits of its own)."""
    n_common = 0
    for held, wanted in zip(leader.session.history, follower.prompt[:-1]):
        if held != wanted:
            break
        n_common += 1
    if n_common > 0:
        follower.session.copy_from(leader.session, n_common)


_ITEM_INDEX = re.compile(r"^items\[0\]: ")


def _naming_completion(error: Exception, index: int) -> Exception:
    """``error`` (from a one-item call) as the same type, its message naming the completion
    (the engine's errors take a message alone; any other is returned as it is)."""
    if type(error) not in (ValueError, RuntimeError) and not isinstance(error, GptjError):
        return error
    return type(error)(f"completion {index}: {_ITEM_INDEX.sub('', str(error))}")
