"""Descriptions of a model file and of the ggml build in use (``gptj-ggml info``).

:func:`describe_model` opens a GGUF file without making a session (no KV cache, nothing
evaluated); :func:`describe_system` says which ggml library is loaded and what the CPU
backend was built for.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._native import core

#: The groups :func:`tensor_group` sorts tensors into, in display order.
TENSOR_GROUPS = ("token_embd", "attention", "ffn", "output", "norms/biases")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file: ``shape`` as ggml counts it (``ne[0]``, the contiguous one, first)."""

    name: str
    type: str
    shape: tuple[int, ...]
    n_bytes: int

    @property
    def n_elements(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


@dataclass(frozen=True)
class TensorGroup:
    """The tensors of one group (see :data:`TENSOR_GROUPS`): how many, their types, size."""

    name: str
    n_tensors: int
    types: dict[str, int]  # type name -> number of tensors of that type
    n_params: int
    n_bytes: int


@dataclass(frozen=True)
class TokenizerInfo:
    model: str  # tokenizer.ggml.model ("gpt2")
    n_tokens: int
    bos_id: int
    eos_id: int
    bos_text: str
    eos_text: str
    n_merges: int  # 0: the file stores none (legacy GGML imports); ranks come from the ids


@dataclass(frozen=True)
class ModelInfo:
    """What ``gptj-ggml info MODEL`` prints."""

    path: str
    file_size: int
    architecture: str
    hparams: dict[str, int | float]
    n_params: int
    weight_type: str  # of the large matrices: "f16", "q4_0", ... or "mixed"
    weight_bytes: int
    tensors: list[TensorInfo]
    groups: list[TensorGroup]
    tokenizer: TokenizerInfo
    metadata: dict[str, Any]


def tensor_group(tensor: TensorInfo) -> str:
    """The group of a tensor, by its GGUF name: vectors (norms, biases) apart from the matrices."""
    if len(tensor.shape) == 1:
        return "norms/biases"
    if tensor.name.startswith("token_embd."):
        return "token_embd"
    if ".attn_" in tensor.name:
        return "attention"
    if ".ffn_" in tensor.name:
        return "ffn"
    if tensor.name.startswith("output."):
        return "output"
    return "other"


def group_tensors(tensors: Iterable[TensorInfo]) -> list[TensorGroup]:
    """Totals per group, in the order of :data:`TENSOR_GROUPS` (then any others)."""
    members: dict[str, list[TensorInfo]] = {}
    for tensor in tensors:
        members.setdefault(tensor_group(tensor), []).append(tensor)
    order = [name for name in TENSOR_GROUPS if name in members] + sorted(set(members) - set(TENSOR_GROUPS))
    groups = []
    for name in order:
        types: dict[str, int] = {}
        for tensor in members[name]:
            types[tensor.type] = types.get(tensor.type, 0) + 1
        groups.append(
            TensorGroup(
                name=name,
                n_tensors=len(members[name]),
                types=types,
                n_params=sum(t.n_elements for t in members[name]),
                n_bytes=sum(t.n_bytes for t in members[name]),
            )
        )
    return groups


def describe_model(path: str | os.PathLike[str]) -> ModelInfo:
    """Open (map and validate) a GPT-J GGUF file and describe it.

    Raises:
        FileNotFoundError: the file does not exist.
        ModelFormatError: the file is not a valid GPT-J GGUF file.
    """
    model = core.Model(os.fspath(path), repack=False)  # describing needs no interleaved copy of the weights
    tensors = [
        TensorInfo(name, type_name, tuple(shape), n_bytes) for name, type_name, shape, n_bytes in model.tensor_info()
    ]
    metadata = model.metadata()
    vocab = model.vocab
    tokenizer = TokenizerInfo(
        model=str(metadata.get("tokenizer.ggml.model", "?")),
        n_tokens=vocab.n_tokens,
        bos_id=vocab.bos_id,
        eos_id=vocab.eos_id,
        bos_text=vocab.token_bytes(vocab.bos_id).decode("utf-8", errors="replace"),
        eos_text=vocab.token_bytes(vocab.eos_id).decode("utf-8", errors="replace"),
        n_merges=model.n_merges,
    )
    hparams: dict[str, int | float] = {
        "n_vocab": model.n_vocab,
        "n_ctx_train": model.n_ctx_train,
        "n_embd": model.n_embd,
        "n_head": model.n_head,
        "n_layer": model.n_layer,
        "n_ff": model.n_ff,
        "rotary_dim": model.rotary_dim,
        "norm_eps": model.norm_eps,
    }
    return ModelInfo(
        path=model.path,
        file_size=model.file_size,
        architecture=str(metadata.get("general.architecture", "gptj")),
        hparams=hparams,
        n_params=model.n_params,
        weight_type=model.weight_type,
        weight_bytes=model.weight_bytes,
        tensors=tensors,
        groups=group_tensors(tensors),
        tokenizer=tokenizer,
        metadata=metadata,
    )


# -- the system ------------------------------------------------------------------------

#: Instruction sets worth knowing about on x86, as ggml's CPU backend names them, with the
#: /proc/cpuinfo flag that says the processor has them.
X86_FEATURES = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX_VNNI": "avx_vnni",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}


@dataclass(frozen=True)
class SystemInfo:
    """What ``gptj-ggml info --system`` prints."""

    ggml_version: str
    ggml_commit: str
    ggml_library: str  # the shared library ggml runs from (the extension itself when built in)
    ggml_build: str  # "prebuilt wheel", "built from source" (libggml-python's sdist) or "built in"
    libggml_python_version: str | None  # None when ggml is built into the extension
    ggml_features: dict[str, str]  # the CPU backend's own report; only what is on
    cpu_name: str
    cpu_flags: frozenset[str]  # from /proc/cpuinfo (empty elsewhere)
    physical_cores: int
    default_threads: int
    prompt_kernel: str  # our prompt GEMM ("avx512" or "avx2"), or "" where this CPU runs ggml's
    amx: bool  # prompt batches of non-f32 weights on our AMX (bf16 tile) kernel
    bf16_gemm: bool = False  # prompt batches of bf16 / quantized weights on our AVX512-BF16 kernel
    isa_cap: str = "amx"  # GPTJ_GGML_ISA: the highest level our kernels may use ("amx": no cap)
    int8_vnni: bool = False  # q8_0 / q4_0 / k-quant single tokens and decode batches on our AVX512-VNNI kernels
    int8_gemm_avx2: bool = False  # prompt batches of q4_0 / q4_K weights on our AVX2 int8 GEMM (AVX2-only CPUs)
    vnni_gemm: bool = False  # prompt batches of q8_0 / q4_0 / q4_K weights on our VNNI GEMM (no AMX)
    decode_attention: bool = False  # single tokens' attention over flash-attention caches on our AVX2 kernel
    int8_gemm_avx_vnni: bool = False  # the AVX2 int8 GEMM's products by AVX-VNNI (when it runs)

    @property
    def missed_features(self) -> list[str]:
        """Instruction sets this CPU has that this ggml build does not use."""
        return [
            name for name, flag in X86_FEATURES.items() if flag in self.cpu_flags and name not in self.ggml_features
        ]


def _cpuinfo() -> tuple[str, frozenset[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown", frozenset()
    name, flags = "unknown", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name == "unknown":
            name = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return name, flags


def _libggml_python_build() -> tuple[str | None, str]:
    """The libggml-python version, and whether its wheel is the prebuilt one from PyPI.

    A wheel built on this machine carries the bare platform tag (``linux_x86_64``); PyPI's
    wheels are repaired to a portable one (``manylinux_*``, ``musllinux_*``, ``macosx_*``).
    """
    try:
        distribution = importlib.metadata.distribution("libggml-python")
    except importlib.metadata.PackageNotFoundError:
        return None, "unknown"
    tags = [
        line.split(":", 1)[1].strip()
        for line in (distribution.read_text("WHEEL") or "").splitlines()
        if line.startswith("Tag:")
    ]
    portable = any(tag.split("-")[-1].startswith(("manylinux", "musllinux", "macosx")) for tag in tags)
    return distribution.version, "prebuilt wheel" if portable else "built from source"


def describe_system() -> SystemInfo:
    """The ggml build in use, what its CPU backend reports, and the processor."""
    if core.ggml_built_in():
        libggml_version, build = None, "built in"
    else:
        libggml_version, build = _libggml_python_build()
    cpu_name, cpu_flags = _cpuinfo()
    cores = core.physical_core_count()
    return SystemInfo(
        ggml_version=core.ggml_version(),
        ggml_commit=core.ggml_commit(),
        ggml_library=core.ggml_library_path(),
        ggml_build=build,
        libggml_python_version=libggml_version,
        ggml_features=dict(core.cpu_features()),
        cpu_name=cpu_name,
        cpu_flags=cpu_flags,
        physical_cores=cores,
        default_threads=cores,  # Session's default (n_threads=0): one per physical core
        prompt_kernel=core.batch_matmul_kernel(),
        amx=core.amx_available(),
        bf16_gemm=core.bf16_gemm_available(),
        isa_cap=core.isa_cap(),
        int8_vnni=core.int8_matvec_available(),
        vnni_gemm=core.vnni_gemm_available(),
        int8_gemm_avx2=core.int8_gemm_avx2_available(),
        decode_attention=core.decode_attention_available(),
        int8_gemm_avx_vnni=core.int8_gemm_avx_vnni_available(),
    )
