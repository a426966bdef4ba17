"""``gptj-ggml run --chat``: a conversation through a chat template.

Each line read from stdin is a user message; the reply to the whole conversation streams to
stdout. The session keeps the rendered conversation in its cache, so each turn evaluates only
what is new (the statistics on stderr say how much was reused).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ..errors import ContextFullError

if TYPE_CHECKING:
    from ..chat import ChatTemplate
    from ..session import Session


def converse_with_template(
    session: Session, template: ChatTemplate, system: str | None, options: dict[str, Any]
) -> int:
    from .run import _report_turn, _write, read_turn

    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    ask = sys.stdin.isatty()
    seed = options.pop("seed")  # one seed per turn, derived from the given one (as run -i does)
    turn = 0
    while True:
        line = read_turn(ask)
        if not line:
            return 0
        if not line.strip():
            continue
        turn += 1
        messages.append({"role": "user", "content": line.rstrip("\n")})
        generation = session.chat(
            messages,
            template=template,
            seed=None if seed is None else seed + turn - 1,
            on_context_full="stop",
            **options,
        )
        texts = []
        for token in generation:
            texts.append(token.text)
            _write(token.text)
        _write("\n")
        # Stored as the template will render it back: the reply without the space or line break
        # the model put after "Assistant:" and before the next turn.
        messages.append({"role": "assistant", "content": "".join(texts).strip()})
        _report_turn(turn, generation)
        if generation.finish_reason == "context":
            raise ContextFullError(
                f"the conversation fills the context ({session.n_ctx} tokens); start again with a larger --ctx"
            )
