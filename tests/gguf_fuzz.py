"""Seeded mutations of real GGUF files, and a worker that opens each mutant in a separate process.

What a mutant must do, whatever the mutation: raise ``ModelFormatError``, ``ValueError`` or
``FileNotFoundError`` when opened, or load and evaluate a few tokens (where evaluating may only
fail with ``ValueError`` or ``ContextFullError``, for a session the file's context_length makes
larger than the machine or smaller than the tokens, or with ``EvaluationError`` for NaN logits,
from weights a mutation turned into NaN). Never a signal, another exception type, or a time out
of proportion to the file.

The mutations know the GGUF layout (:func:`parse_layout` records where every count, length, type,
value, shape and offset lies): byte flips and truncations anywhere, and edits of one field to a
value chosen to break it (0, 1, 2**31, 2**64 - 1, the original plus one, ...). Case ``k`` of seed
``s`` is always the same mutant: a failure is reproduced with ``python tests/gguf_fuzz.py --seed s
--first k --count 1 FILE...``.

Used by tests/test_gguf_fuzz.py (a few hundred cases per run) and benchmarks/fuzz_gguf.py (the
long run). The worker runs each batch in a child process, so a crash names its case instead of
taking the test runner down.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# GGUF value types (gguf.h) and their sizes; 8 is a string, 9 an array.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_U32, _U64 = 4, 10


@dataclass
class KeyValue:
    key: str
    key_length_at: int  # offset of the u64 length of the key
    key_at: int
    type_at: int
    type: int
    value_at: int  # scalar: the value; string: its u64 length; array: its element type
    element_type: int = -1
    count_at: int = -1
    count: int = 0
    element_at: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # strings: each u64 length


@dataclass
class TensorEntry:
    name: str
    name_length_at: int
    name_at: int
    n_dims_at: int
    n_dims: int
    shape_at: list[int]
    type_at: int
    offset_at: int


@dataclass
class Layout:
    size: int
    kvs: list[KeyValue]
    tensors: list[TensorEntry]
    header_end: int  # end of the tensor table
    data_start: int


def parse_layout(data: bytes) -> Layout:
    """Where each field of a well-formed GGUF file lies; ValueError (or struct.error) for a file
    this simple reader cannot follow (a mutant, which stacked mutations parse again)."""
    position = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    if n_tensors > len(data) or n_kv > len(data):
        raise ValueError("counts larger than the file")

    def string() -> tuple[int, int, bytes]:
        nonlocal position
        (n,) = struct.unpack_from("<Q", data, position)
        start = position
        position += 8 + n
        return start, start + 8, data[start + 8 : start + 8 + n]

    kvs = []
    for _ in range(n_kv):
        key_length_at, key_at, key = string()
        type_at = position
        (value_type,) = struct.unpack_from("<I", data, position)
        position += 4
        kv = KeyValue(key.decode(), key_length_at, key_at, type_at, value_type, position)
        if value_type == _STRING:
            string()
        elif value_type == _ARRAY:
            kv.element_type, kv.count = struct.unpack_from("<IQ", data, position)
            kv.count_at = position + 4
            position += 12
            if kv.count > len(data):
                raise ValueError("an array longer than the file")
            if kv.element_type == _STRING:
                starts = np.empty(kv.count, np.int64)
                for i in range(kv.count):
                    starts[i] = string()[0]
                kv.element_at = starts
            else:
                kv.element_at = np.array([position], np.int64)
                position += kv.count * _SCALAR_SIZES[kv.element_type]
        else:
            position += _SCALAR_SIZES[value_type]
        kvs.append(kv)

    alignment = 32
    for kv in kvs:
        if kv.key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", data, kv.value_at)
    tensors = []
    for _ in range(n_tensors):
        name_length_at, name_at, name = string()
        (n_dims,) = struct.unpack_from("<I", data, position)
        if n_dims > 4:
            raise ValueError("more than 4 dimensions")
        entry = TensorEntry(name.decode(), name_length_at, name_at, position, n_dims, [], 0, 0)
        position += 4
        entry.shape_at = [position + 8 * d for d in range(n_dims)]
        position += 8 * n_dims
        entry.type_at = position
        entry.offset_at = position + 4
        position += 12
        tensors.append(entry)
    header_end = position
    data_start = -(-header_end // alignment) * alignment
    return Layout(len(data), kvs, tensors, header_end, data_start)


def _interesting(original: int, bits: int, rng: np.random.Generator, file_size: int) -> int:
    """A value that is likely to break a field of `bits` bits holding `original`."""
    limit = 2**bits
    candidates = [
        0, 1, 2, 3, 7, 8, 31, 32, 63, 64, 255, 256, 4095, 4096, 4097, 65535, 65536, 8_000_000,
        2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1,
        original - 1, original + 1, original * 2, original // 2, file_size, file_size + 1,
        int(rng.integers(0, 2**62)),
    ]  # fmt: skip
    return int(candidates[int(rng.integers(len(candidates)))]) % limit


class Mutator:
    """The mutations of one file; each takes a rng and returns (description, mutated bytes)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.layout = parse_layout(data)
        self.strings = self._strings()
        self.mutations: list[Callable[[np.random.Generator], tuple[str, bytes]]] = [
            self.flip_bytes, self.flip_bytes, self.truncate, self.header_count, self.version, self.kv_type,
            self.string_length, self.string_length, self.array_length, self.array_element_type,
            self.hyper_parameter, self.hyper_parameter, self.hyper_parameter, self.tensor_shape, self.tensor_shape,
            self.tensor_n_dims, self.tensor_type, self.tensor_offset, self.invalid_utf8, self.invalid_utf8,
            self.duplicate_name, self.nul_byte, self.tensor_data, self.stacked,
        ]  # fmt: skip

    def _strings(self) -> list[tuple[str, int]]:
        """(description, offset of the u64 length) of every string: keys, values, a sample of
        the array elements, tensor names."""
        out = []
        for kv in self.layout.kvs:
            out.append((f"key {kv.key}", kv.key_length_at))
            if kv.type == _STRING:
                out.append((f"value of {kv.key}", kv.value_at))
            if kv.type == _ARRAY and kv.element_type == _STRING:
                for i in np.linspace(0, kv.count - 1, num=min(kv.count, 64)).astype(np.int64):
                    out.append((f"{kv.key}[{i}]", int(kv.element_at[i])))
        for tensor in self.layout.tensors:
            out.append((f"name of tensor {tensor.name}", tensor.name_length_at))
        return out

    def mutate(self, rng: np.random.Generator) -> tuple[str, bytes]:
        return self.mutations[int(rng.integers(len(self.mutations)))](rng)

    # -- helpers ----------------------------------------------------------------------
    def _put(self, data: bytearray | None, at: int, fmt: str, value: float) -> bytearray:
        out = bytearray(self.data) if data is None else data
        struct.pack_into(fmt, out, at, value)
        return out

    def _set_int(self, rng: np.random.Generator, at: int, bits: int, what: str) -> tuple[str, bytes]:
        fmt = {32: "<I", 64: "<Q"}[bits]
        (original,) = struct.unpack_from(fmt, self.data, at)
        value = _interesting(original, bits, rng, self.layout.size)
        return f"{what}: {original} -> {value}", bytes(self._put(None, at, fmt, value))

    # -- the mutations ----------------------------------------------------------------
    def flip_bytes(self, rng: np.random.Generator) -> tuple[str, bytes]:
        out = bytearray(self.data)
        regions = [
            (0, 64),
            (0, self.layout.header_end),
            (self.layout.tensors[0].name_length_at, self.layout.header_end),
        ]
        start, end = regions[int(rng.integers(len(regions)))]
        positions = rng.integers(start, end, int(rng.integers(1, 9)))
        for position in positions:
            out[position] = int(rng.choice([0, 0xFF, 0x80, int(rng.integers(256))]))
        return f"bytes at {sorted(positions.tolist())} in [{start}, {end})", bytes(out)

    def truncate(self, rng: np.random.Generator) -> tuple[str, bytes]:
        choices = [
            int(rng.integers(0, 64)),
            int(rng.integers(0, self.layout.header_end)),
            int(rng.integers(self.layout.tensors[0].name_length_at, self.layout.header_end + 64)),
            int(rng.integers(self.layout.data_start, self.layout.size)),
            self.layout.size - int(rng.integers(1, 64)),
        ]
        keep = choices[int(rng.integers(len(choices)))]
        return f"truncated to {keep} bytes", self.data[:keep]

    def header_count(self, rng: np.random.Generator) -> tuple[str, bytes]:
        at, what = [(8, "tensor count"), (16, "metadata count")][int(rng.integers(2))]
        return self._set_int(rng, at, 64, what)

    def version(self, rng: np.random.Generator) -> tuple[str, bytes]:
        value = int(rng.choice([0, 1, 2, 4, 0x03000000, 2**32 - 1]))
        return f"version -> {value}", bytes(self._put(None, 4, "<I", value))

    def kv_type(self, rng: np.random.Generator) -> tuple[str, bytes]:
        kv = self.layout.kvs[int(rng.integers(len(self.layout.kvs)))]
        value = int(rng.choice([*range(14), 255, 2**31, 2**32 - 1]))
        return f"type of {kv.key}: {kv.type} -> {value}", bytes(self._put(None, kv.type_at, "<I", value))

    def string_length(self, rng: np.random.Generator) -> tuple[str, bytes]:
        what, at = self.strings[int(rng.integers(len(self.strings)))]
        return self._set_int(rng, at, 64, f"length of {what}")

    def array_length(self, rng: np.random.Generator) -> tuple[str, bytes]:
        arrays = [kv for kv in self.layout.kvs if kv.type == _ARRAY]
        kv = arrays[int(rng.integers(len(arrays)))]
        return self._set_int(rng, kv.count_at, 64, f"length of {kv.key}")

    def array_element_type(self, rng: np.random.Generator) -> tuple[str, bytes]:
        arrays = [kv for kv in self.layout.kvs if kv.type == _ARRAY]
        kv = arrays[int(rng.integers(len(arrays)))]
        value = int(rng.choice([*range(14), 2**32 - 1]))
        return f"element type of {kv.key}: {kv.element_type} -> {value}", bytes(
            self._put(None, kv.value_at, "<I", value)
        )

    def hyper_parameter(self, rng: np.random.Generator) -> tuple[str, bytes]:
        scalars = [kv for kv in self.layout.kvs if kv.type in _SCALAR_SIZES]
        kv = scalars[int(rng.integers(len(scalars)))]
        if kv.type == 6:  # float32
            value = float(rng.choice([math.nan, math.inf, -math.inf, 0.0, -1e-5, 1.0, 1e30, 5e-324]))
            return f"{kv.key} -> {value}", bytes(self._put(None, kv.value_at, "<f", value))
        size = _SCALAR_SIZES[kv.type]
        fmt = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[size]
        (original,) = struct.unpack_from(fmt, self.data, kv.value_at)
        value = _interesting(original, 8 * size, rng, self.layout.size)
        return f"{kv.key}: {original} -> {value}", bytes(self._put(None, kv.value_at, fmt, value))

    def _tensor(self, rng: np.random.Generator) -> TensorEntry:
        return self.layout.tensors[int(rng.integers(len(self.layout.tensors)))]

    def tensor_shape(self, rng: np.random.Generator) -> tuple[str, bytes]:
        tensor = self._tensor(rng)
        d = int(rng.integers(tensor.n_dims))
        return self._set_int(rng, tensor.shape_at[d], 64, f"ne[{d}] of {tensor.name}")

    def tensor_n_dims(self, rng: np.random.Generator) -> tuple[str, bytes]:
        tensor = self._tensor(rng)
        value = int(rng.choice([0, 1, 2, 3, 4, 5, 2**32 - 1]))
        return f"n_dims of {tensor.name}: {tensor.n_dims} -> {value}", bytes(
            self._put(None, tensor.n_dims_at, "<I", value)
        )

    def tensor_type(self, rng: np.random.Generator) -> tuple[str, bytes]:
        tensor = self._tensor(rng)
        value = int(rng.choice([*range(45), -1, 2**31 - 1]))
        return f"type of {tensor.name} -> {value}", bytes(self._put(None, tensor.type_at, "<i", value))

    def tensor_offset(self, rng: np.random.Generator) -> tuple[str, bytes]:
        tensor = self._tensor(rng)
        return self._set_int(rng, tensor.offset_at, 64, f"offset of {tensor.name}")

    def invalid_utf8(self, rng: np.random.Generator) -> tuple[str, bytes]:
        what, at = self.strings[int(rng.integers(len(self.strings)))]
        (n,) = struct.unpack_from("<Q", self.data, at)
        if n == 0:
            return self.flip_bytes(rng)
        out = bytearray(self.data)
        position = at + 8 + int(rng.integers(n))
        out[position] = int(rng.choice([0xFF, 0xC0, 0x80, 0xED, 0xF8]))
        return f"invalid UTF-8 in {what}", bytes(out)

    def nul_byte(self, rng: np.random.Generator) -> tuple[str, bytes]:
        what, at = self.strings[int(rng.integers(len(self.strings)))]
        (n,) = struct.unpack_from("<Q", self.data, at)
        if n == 0:
            return self.flip_bytes(rng)
        out = bytearray(self.data)
        out[at + 8 + int(rng.integers(n))] = 0
        return f"NUL byte in {what}", bytes(out)

    def duplicate_name(self, rng: np.random.Generator) -> tuple[str, bytes]:
        """One key or tensor name overwritten with another of the same length."""
        named = [(kv.key, kv.key_at) for kv in self.layout.kvs] if rng.random() < 0.5 else []
        named = named or [(t.name, t.name_at) for t in self.layout.tensors]
        by_length: dict[int, list[tuple[str, int]]] = {}
        for name, at in named:
            by_length.setdefault(len(name), []).append((name, at))
        groups = [group for group in by_length.values() if len(group) > 1]
        if not groups:
            return self.flip_bytes(rng)
        group = groups[int(rng.integers(len(groups)))]
        (source, _), (target, at) = (group[i] for i in rng.choice(len(group), 2, replace=False))
        out = bytearray(self.data)
        out[at : at + len(source)] = source.encode()
        return f"{target} renamed {source}", bytes(out)

    def tensor_data(self, rng: np.random.Generator) -> tuple[str, bytes]:
        out = bytearray(self.data)
        for position in rng.integers(self.layout.data_start, self.layout.size, int(rng.integers(1, 64))):
            out[position] = 0xFF  # 0xFFFF is a NaN in f16 and f32 alike
        return "0xFF bytes in the tensor data", bytes(out)

    def stacked(self, rng: np.random.Generator) -> tuple[str, bytes]:
        descriptions = []
        current = self
        data = self.data
        for _ in range(int(rng.integers(2, 4))):
            mutation = current.mutations[int(rng.integers(len(current.mutations) - 1))]  # not stacked again
            try:
                description, data = mutation(rng)
            except (ValueError, struct.error, IndexError, KeyError, OverflowError):  # a field moved away
                break
            descriptions.append(description)
            try:  # the next mutation knows the new layout where it still parses
                current = Mutator(data)
            except (ValueError, struct.error, IndexError, KeyError, OverflowError):
                break
        return " + ".join(descriptions), data


# -- the worker -------------------------------------------------------------------------

#: What opening a mutant may raise.
_LOAD_ERRORS = ("ModelFormatError", "ValueError", "FileNotFoundError")


def case_rng(seed: int, case: int) -> np.random.Generator:
    return np.random.default_rng([seed, case])


def run_cases(files: Sequence[Path], seed: int, first: int, count: int, scratch: Path) -> Iterator[dict]:
    """Open and use the mutants first .. first + count - 1; one result dict per case."""
    from gptj_ggml import ContextFullError, EvaluationError, Model, ModelFormatError

    mutators = [Mutator(Path(f).read_bytes()) for f in files]
    path = scratch / f"mutant-{os.getpid()}.gguf"
    for case in range(first, first + count):
        rng = case_rng(seed, case)
        which = int(rng.integers(len(mutators)))
        description, data = mutators[which].mutate(rng)
        path.write_bytes(data)
        result = {"case": case, "file": Path(files[which]).name, "mutation": description}
        started = time.perf_counter()
        try:
            model = Model(path, n_threads=1)
        except (ModelFormatError, ValueError, FileNotFoundError) as error:
            result.update(outcome="refused", error=f"{type(error).__name__}: {error}"[:300], ok=True)
        except BaseException as error:  # noqa: BLE001 - any other type is the finding
            result.update(outcome="wrong exception", error=f"{type(error).__name__}: {error}"[:300], ok=False)
        else:
            try:
                model.logits([1, 2, 3])
                model.complete([4, 5], max_tokens=2, temperature=0, ignore_eos=True)
                result.update(outcome="loaded", ok=True)
            except EvaluationError as error:  # weights a mutation made NaN
                result.update(outcome="NaN logits", error=str(error)[:300], ok="NaN" in str(error))
            except (ValueError, ContextFullError) as error:  # the file's context_length: too large, or too small
                result.update(outcome="refused at first use", error=f"{type(error).__name__}: {error}"[:300], ok=True)
            except BaseException as error:  # noqa: BLE001
                result.update(
                    outcome="wrong exception after load", error=f"{type(error).__name__}: {error}"[:300], ok=False
                )
        result["seconds"] = round(time.perf_counter() - started, 4)
        yield result
    path.unlink(missing_ok=True)


def run_in_subprocesses(
    files: Sequence[Path], seed: int, first: int, count: int, batch: int = 50, timeout: float = 300.0
) -> list[dict]:
    """Run the cases in child processes of `batch` cases each. A child that dies (a signal, an
    abort) or hangs is reported as the failure of the case it was on; the rest go on in a new child."""
    results: list[dict] = []
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # memory: no disk write per case
    # A folder of its own, removed at the end: a child that crashes leaves its mutant behind.
    with tempfile.TemporaryDirectory(prefix="gguf-fuzz-", dir=base) as scratch:
        next_case, end = first, first + count
        while next_case < end:
            n = min(batch, end - next_case)
            command = [sys.executable, __file__, "--seed", str(seed), "--first", str(next_case), "--count", str(n),
                       "--scratch", scratch, *map(str, files)]  # fmt: skip
            try:
                child = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
                stdout, returncode, stderr = child.stdout, child.returncode, child.stderr
            except subprocess.TimeoutExpired as expired:
                stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
                returncode, stderr = None, "timed out"
            done = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
            results += done
            next_case += len(done)
            if returncode == 0:
                continue
            how = "hung (timeout)" if returncode is None else f"exit status {returncode}"
            if next_case < end:
                rng = case_rng(seed, next_case)
                results.append({"case": next_case, "outcome": f"crashed: {how}", "ok": False,
                                "mutation": _describe(files, rng), "error": stderr[-2000:]})  # fmt: skip
                next_case += 1
            else:  # every case ran, then the child died (at exit: a destructor, a leak report)
                results.append({"case": end - 1, "outcome": f"crashed after its last case: {how}", "ok": False,
                                "mutation": "-", "error": stderr[-2000:]})  # fmt: skip
    return results


def _describe(files: Sequence[Path], rng: np.random.Generator) -> str:
    mutators = [Mutator(Path(f).read_bytes()) for f in files]
    which = int(rng.integers(len(mutators)))
    return f"{Path(files[which]).name}: {mutators[which].mutate(rng)[0]}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Open mutants of GGUF files (the child of run_in_subprocesses).")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    for result in run_cases(args.files, args.seed, args.first, args.count, args.scratch):
        print(json.dumps(result), flush=True)  # one line per case: the parent knows how far a crash got


if __name__ == "__main__":
    main()
