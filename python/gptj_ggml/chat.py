"""Chat templates: a conversation (``messages``) becomes a prompt plus the stop strings that end a reply.

A template is Jinja source, as Hugging Face's ``tokenizer_config.json`` and GGUF's
``tokenizer.chat_template`` hold it. Templates come from files people download, so they are
rendered in Jinja's immutable sandbox: no attribute of Python's internals, no file, no import.
:func:`resolve_template` picks one: a named template (:data:`~gptj_ggml.chat_templates.TEMPLATES`),
a template file, the model file's own, or the plain ``User:``/``Assistant:`` default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .chat_templates import DEFAULT_TEMPLATE, TEMPLATES
from .errors import GptjError

#: The GGUF key of a model's chat template (as llama.cpp and Hugging Face's GGUF export name it).
GGUF_CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
ROLES = ("system", "user", "assistant")


class ChatTemplateError(GptjError, ValueError):
    """A chat template that does not parse or render, or messages it cannot take."""


def _raise_exception(message: str) -> None:
    # Hugging Face templates call raise_exception() to refuse a conversation (e.g. roles out of order).
    raise ChatTemplateError(message)


def _environment() -> ImmutableSandboxedEnvironment:
    # As transformers renders templates: a line break right after a block tag is dropped, and
    # the indentation before one.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.Undefined)
    env.globals["raise_exception"] = _raise_exception
    return env


_ENV = _environment()


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template and the stop strings that end a reply.

    Attributes:
        source: the Jinja source.
        stop: strings that end the model's reply (it writes them when it starts the next turn).
        name: where it came from: a template's name, a file, or the model's ``tokenizer.chat_template``.
    """

    source: str
    stop: tuple[str, ...] = ()
    name: str = "custom"

    @cached_property
    def _template(self) -> jinja2.Template:
        try:
            return _ENV.from_string(self.source)
        except jinja2.TemplateSyntaxError as error:
            raise ChatTemplateError(
                f"chat template {self.name!r} does not parse: {error.message} (line {error.lineno})"
            ) from None

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        bos_token: str = "<|endoftext|>",
        eos_token: str = "<|endoftext|>",
        **variables: Any,
    ) -> str:
        """The prompt for ``messages`` (each a mapping with ``role`` and ``content``).

        ``add_generation_prompt`` ends it with the start of the assistant's turn; ``variables``
        reach the template too (``char`` names Pygmalion's character).

        Raises:
            ChatTemplateError: a message without a known role or a text content, or a template
                that fails (a syntax error, something the sandbox refuses, ``raise_exception``).
        """
        checked = [_check_message(i, message) for i, message in enumerate(messages)]
        try:
            return self._template.render(
                messages=checked,
                add_generation_prompt=add_generation_prompt,
                bos_token=bos_token,
                eos_token=eos_token,
                **variables,
            )
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as error:  # SecurityError included
            raise ChatTemplateError(f"chat template {self.name!r} failed: {error}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as error:
            raise ChatTemplateError(f"chat template {self.name!r} failed: {type(error).__name__}: {error}") from None


def _check_message(index: int, message: Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(message, Mapping):
        raise ChatTemplateError(
            f"messages[{index}] must be a mapping with 'role' and 'content', got {type(message).__name__}"
        )
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise ChatTemplateError(f"messages[{index}].role must be one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(content, str):
        raise ChatTemplateError(f"messages[{index}].content must be text, got {type(content).__name__}")
    return {"role": role, "content": content}


def named_template(name: str) -> ChatTemplate:
    """One of the shipped templates by name (``plain``, ``gpt4all-j``, ``dolly-v1``, ``alpaca``, ``pygmalion``)."""
    if name not in TEMPLATES:
        raise ChatTemplateError(f"unknown chat template {name!r}; the named ones are {', '.join(TEMPLATES)}")
    template = TEMPLATES[name]
    return ChatTemplate(template.source, template.stop, name)


def from_source(source: str, name: str, stop: Sequence[str] = ()) -> ChatTemplate:
    """A template from Jinja source. One that is a named template's source keeps that template's
    name and stop strings (a GGUF stores only the source)."""
    for known_name, template in TEMPLATES.items():
        if source == template.source:
            return ChatTemplate(source, template.stop, known_name)
    return ChatTemplate(source, tuple(stop), name)


def resolve_template(spec: str | os.PathLike[str] | None, metadata: Mapping[str, Any] | None = None) -> ChatTemplate:
    """The template to use.

    Args:
        spec: a named template, or the path of a file holding Jinja source; None: the model's own
            (``tokenizer.chat_template`` in ``metadata``), else the plain default.
        metadata: the model file's metadata (``Model.metadata``).
    """
    if spec is None:
        source = (metadata or {}).get(GGUF_CHAT_TEMPLATE_KEY)
        if isinstance(source, str) and source:
            return from_source(source, GGUF_CHAT_TEMPLATE_KEY)
        return named_template(DEFAULT_TEMPLATE)
    spec_text = os.fspath(spec)
    if spec_text in TEMPLATES:
        return named_template(spec_text)
    path = Path(spec_text)
    if not path.is_file():
        raise ChatTemplateError(
            f"chat template {spec_text!r} is neither a named template ({', '.join(TEMPLATES)}) nor a file"
        )
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ChatTemplateError(f"chat template file {spec_text} is not UTF-8 text") from None
    template = from_source(source, str(path))
    template._template  # noqa: B018 - a template that does not parse fails here, when it is chosen
    return template
