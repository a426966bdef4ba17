"""Hugging Face GPT-J checkpoints (safetensors or PyTorch .bin, single or sharded) -> GGUF.

Pure Python (numpy + gguf); torch is never imported.
"""

from .checkpoint import read_checkpoint
from .converter import OUTTYPES, convert_checkpoint
from .hparams import GptjHparams, read_hparams
from .safetensors_file import read_safetensors
from .tensor_names import TensorSpec, expected_tensors
from .tensor_record import TensorRecord
from .tokenizer_data import TokenizerData, TokenType, read_tokenizer
from .torch_zip import read_torch_zip

__all__ = [
    "OUTTYPES",
    "GptjHparams",
    "TensorRecord",
    "TensorSpec",
    "TokenType",
    "TokenizerData",
    "convert_checkpoint",
    "expected_tensors",
    "read_checkpoint",
    "read_hparams",
    "read_safetensors",
    "read_tokenizer",
    "read_torch_zip",
]
