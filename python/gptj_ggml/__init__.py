"""Fast local GPT-J inference on the CPU with ggml.

>>> from gptj_ggml import Model
>>> model = Model("gpt-j-6b-f16.gguf")
>>> for token in model.generate("The meaning of life is", max_tokens=32, stop=["\n"]):
...     print(token.text, end="", flush=True)
>>> chat = model.session()                       # its own KV cache; reuses the common prefix
>>> chat.complete("Q: What is GPT-J?\nA:", temperature=0, stop=["\nQ:"]).text
>>> for index, token in model.generate_batch(["The sky is", "Water is"], n=2, max_tokens=16):
...     print(index, token.text)                   # 4 completions decoded together
"""

from typing import TYPE_CHECKING

from .errors import (
    ContextFullError,
    ConversionError,
    EvaluationError,
    GptjError,
    ModelFormatError,
    SessionBusyError,
)

if TYPE_CHECKING:
    from .batch import BatchCompletion, BatchGeneration
    from .generation import Completion, Generation, Timings, Token
    from .model import Model
    from .sampling import GREEDY, SamplingParams, probabilities
    from .session import Session
    from .speculation import PromptLookup
# Imported for the type checker only: the module's namespace holds the public names alone.
del TYPE_CHECKING

__all__ = [
    "GREEDY",
    "BatchCompletion",
    "BatchGeneration",
    "Completion",
    "ContextFullError",
    "ConversionError",
    "EvaluationError",
    "Generation",
    "GptjError",
    "Model",
    "ModelFormatError",
    "PromptLookup",
    "SamplingParams",
    "Session",
    "SessionBusyError",
    "Timings",
    "Token",
    "probabilities",
]

# Names defined in modules that load the native engine, imported on first use.
_LAZY = {
    "Model": "model",
    "Session": "session",
    "Token": "generation",
    "Generation": "generation",
    "Completion": "generation",
    "Timings": "generation",
    "BatchGeneration": "batch",
    "BatchCompletion": "batch",
    "SamplingParams": "sampling",
    "GREEDY": "sampling",
    "probabilities": "sampling",
    "PromptLookup": "speculation",
}
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The engine is loaded on first use of Model, so that `gptj_ggml.convert` (pure Python)
    # imports without the native libraries.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'gptj_ggml' has no attribute {name!r}")


def __dir__() -> list[str]:
    # dir() and tab completion list the public names, the lazy ones included, not imports or helpers.
    return sorted([*__all__, "__version__"])
