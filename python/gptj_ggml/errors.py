"""The exceptions gptj_ggml raises.

Every error the library reports derives from :class:`GptjError`, and also from the
built-in exception a caller would naturally catch (``ValueError`` for bad input,
``RuntimeError`` for a failed evaluation), so both ``except GptjError`` and
``except ValueError`` work.
"""

from __future__ import annotations


class GptjError(Exception):
    """Base class of every error raised by gptj_ggml."""


class ModelFormatError(GptjError, ValueError):
    """A model file is not a valid GPT-J GGUF file (bad header, metadata or tensor)."""


class ConversionError(GptjError, ValueError):
    """A checkpoint could not be converted (missing file or tensor, wrong config, ...)."""


class ContextFullError(GptjError, RuntimeError):
    """The evaluation would go past the session's context size (n_ctx)."""


class EvaluationError(GptjError, RuntimeError):
    """ggml failed to evaluate the graph."""


class SessionBusyError(GptjError, RuntimeError):
    """A Session was used from a second thread while a first one was using it (one Session per thread)."""
