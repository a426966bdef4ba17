"""Fast local GPT-J inference on the CPU with ggml.

>>> from gptj_ggml import Model
>>> model = Model("gpt-j-6b-f16.gguf")
>>> for token in model.generate("The meaning of life is", max_tokens=32):
...     print(token.text, end="", flush=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ContextFullError, ConversionError, EvaluationError, GptjError, ModelFormatError

if TYPE_CHECKING:
    from .model import Model, Token

__all__ = [
    "ContextFullError",
    "ConversionError",
    "EvaluationError",
    "GptjError",
    "Model",
    "ModelFormatError",
    "Token",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The engine is loaded on first use of Model, so that `gptj_ggml.convert` (pure Python)
    # imports without the native libraries.
    if name in ("Model", "Token"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'gptj_ggml' has no attribute {name!r}")
