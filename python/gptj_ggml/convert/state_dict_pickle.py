"""Unpickle a PyTorch state dict (``data.pkl`` of a ``.bin`` checkpoint) with bounded work.

Python's own unpickler, even with ``find_class`` restricted, lets a small file cost without
bound: a few hundred kilobytes of compressed pickle expand into gigabytes of objects, and
references through the memo build structures nested deeply enough that hashing or printing
them overflows the stack. This is a pickle machine of our own for the part of the format a
state dict uses (protocols 2 to 5: containers, strings, numbers, the memo, globals,
``REDUCE``, ``BUILD`` and persistent ids), with every cost bounded:

- the pickle is at most :data:`MAX_PICKLE_BYTES` and runs at most :data:`MAX_OPCODES` opcodes,
  each of which makes at most one object; the memo holds at most :data:`MAX_MEMO_ENTRIES`;
- objects nest at most :data:`MAX_DEPTH` deep. Depth is exact because a container may only be
  filled while it is not yet inside another one (which is how pickle writes any acyclic
  object): once stored somewhere it is sealed, so it cannot grow deeper, nor contain itself;
- dict keys are plain scalars (a tuple key would be hashed recursively), and a key set twice is
  refused: a state dict names each tensor once;
- the only callables are ``OrderedDict`` and torch's tensor/parameter rebuild functions, which
  here check their arguments and describe the tensor rather than build it.

GPT-J-6B's state dict (341 entries with its attention buffers, as torch.save writes it) is 38 kB of
pickle and ~10 000 opcodes nesting 4 deep: the bounds are far above any real checkpoint and far
below what would hurt.
"""

from __future__ import annotations

import collections
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from .source_files import describe
from .tensor_record import MAX_DIMS

MAX_PICKLE_BYTES = 32 << 20
MAX_OPCODES = 1 << 20
MAX_MEMO_ENTRIES = 1 << 20
MAX_DEPTH = 32
_MAX_INT64 = (1 << 63) - 1
_MAX_GLOBAL_NAME = 256

# torch.<Name>Storage classes as they appear in the pickle -> our dtype names.
STORAGE_CLASSES = {
    "DoubleStorage": "F64",
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
}


@dataclass(frozen=True)
class StorageType:
    dtype: str


@dataclass(frozen=True)
class StorageRef:
    """A storage as a persistent id names it: its zip member key, dtype and (when given) element count."""

    key: str
    dtype: str
    numel: int | None


@dataclass(frozen=True)
class PendingTensor:
    """A tensor as the pickle describes it; its name is known only after unpickling."""

    storage: StorageRef
    storage_offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def load_state_dict(data: bytes, source: Path) -> dict[Any, Any]:
    """The state dict pickled in ``data``; tensors are :class:`PendingTensor`.

    Raises :class:`ConversionError` naming ``source`` for anything a state dict does not hold.
    """
    if len(data) > MAX_PICKLE_BYTES:
        raise ConversionError(f"{source}: the checkpoint pickle is larger than {MAX_PICKLE_BYTES} bytes")
    state = _Machine(data, source).run()
    if not isinstance(state, dict):
        raise ConversionError(f"{source}: the checkpoint holds {_kind(state)}, not a state dict")
    for name in state:
        if not isinstance(name, str):
            raise ConversionError(f"{source}: the state dict has a key {describe(name)}, not a tensor name")
    return state


def _kind(value: Any) -> str:
    return "a tensor" if isinstance(value, PendingTensor) else f"a {type(value).__name__}"


class _Refused(Exception):
    """A problem with the pickle, raised inside the machine and reported with the opcode's position."""


class _Machine:
    def __init__(self, data: bytes, source: Path) -> None:
        self.data = memoryview(data)
        self.source = source
        self.pos = 0
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        # Depth of each container made here, by id; the objects are kept alive in `made` so that
        # no id is reused while the machine runs. Scalars have depth 0.
        self.depth: dict[int, int] = {}
        self.sealed: set[int] = set()
        self.made: list[Any] = []

    def run(self) -> Any:
        n_ops = 0
        while True:
            op_pos = self.pos
            opcode = self._take(1)[0:1].tobytes()
            n_ops += 1
            if n_ops > MAX_OPCODES:
                raise self._error(op_pos, f"more than {MAX_OPCODES} pickle opcodes, far more than a state dict needs")
            handler = _HANDLERS.get(opcode)
            if handler is None:
                raise self._error(op_pos, f"pickle opcode {opcode!r} is not one a state dict uses")
            try:
                if handler is _stop:
                    if len(self.stack) != 1 or self.marks:
                        raise _Refused("the pickle ends with a malformed stack")
                    return self.stack[0]
                handler(self)
            except _Refused as problem:
                raise self._error(op_pos, str(problem)) from None
            except IndexError:
                raise self._error(op_pos, "the pickle pops from an empty stack") from None

    def _error(self, position: int, problem: str) -> ConversionError:
        return ConversionError(f"{self.source}: corrupt checkpoint pickle at byte {position}: {problem}")

    # Reading the opcode stream.

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self._error(self.pos, "the pickle ends early (truncated?)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _unpack(self, layout: struct.Struct) -> int:
        return layout.unpack(self._take(layout.size))[0]

    def _line(self) -> str:
        end = bytes(self.data[self.pos : self.pos + _MAX_GLOBAL_NAME + 1]).find(b"\n")
        if end < 0:
            raise _Refused("a global name is not terminated")
        text = bytes(self._take(end + 1)[:-1])
        try:
            return text.decode("ascii")
        except UnicodeDecodeError:
            raise _Refused("a global name is not ASCII") from None

    # Objects, depth and sealing.

    def push(self, value: Any) -> None:
        self.stack.append(value)

    def pop(self) -> Any:
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise _Refused("the pickle uses items above a mark it never set")
        items = self.stack
        self.stack = self.marks.pop()
        return items

    def new(self, value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _Refused(f"objects nested more than {MAX_DEPTH} deep")
        self.depth[id(value)] = depth
        self.made.append(value)
        return value

    def depth_of(self, value: Any) -> int:
        return self.depth.get(id(value), 0)

    def seal(self, value: Any) -> int:
        """Mark ``value`` as stored inside another object; return its depth."""
        depth = self.depth.get(id(value))
        if depth is None:
            return 0  # a scalar (or an object made elsewhere): never filled
        self.sealed.add(id(value))
        return depth

    def fill(self, container: Any, kind: type, items_depth: int) -> None:
        if not isinstance(container, kind):
            raise _Refused(f"items are added to a {type(container).__name__}, not a {kind.__name__}")
        if id(container) in self.sealed:
            raise _Refused("an object is changed after it was stored inside another one")
        depth = max(self.depth_of(container), items_depth + 1)
        if depth > MAX_DEPTH:
            raise _Refused(f"objects nested more than {MAX_DEPTH} deep")
        self.depth[id(container)] = depth

    def append(self, items: list[Any]) -> None:
        container = self.stack[-1] if self.stack else None
        if any(item is container for item in items):
            raise _Refused("a list is put inside itself")
        self.fill(container, list, max((self.seal(item) for item in items), default=0))
        container.extend(items)

    def set_items(self, items: list[Any]) -> None:
        if len(items) % 2:
            raise _Refused("a dict is given a key without a value")
        container = self.stack[-1] if self.stack else None
        keys, values = items[0::2], items[1::2]
        for key in keys:
            if not isinstance(key, (str, int, bytes, float, type(None))):
                raise _Refused(f"a dict key is {_kind(key)}, not a plain value")
            if isinstance(container, dict) and key in container:
                raise _Refused(f"the key {describe(key)} is set twice")
        if len(set(keys)) != len(keys):
            repeated = next(key for index, key in enumerate(keys) if key in keys[:index])
            raise _Refused(f"the key {describe(repeated)} is set twice")
        if any(value is container for value in values):
            raise _Refused("a dict is put inside itself")
        self.fill(container, dict, max((self.seal(value) for value in values), default=0))
        container.update(zip(keys, values))

    def tuple_of(self, items: list[Any]) -> tuple[Any, ...]:
        depth = max((self.seal(item) for item in items), default=0)
        return self.new(tuple(items), depth + 1)

    def memoize(self, index: int) -> None:
        if not self.stack:
            raise _Refused("the memo stores from an empty stack")
        if index not in self.memo and len(self.memo) >= MAX_MEMO_ENTRIES:
            raise _Refused(f"more than {MAX_MEMO_ENTRIES} memo entries")
        self.memo[index] = self.stack[-1]

    def recall(self, index: int) -> None:
        try:
            self.push(self.memo[index])
        except KeyError:
            raise _Refused(f"memo entry {index} is used before it is set") from None

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ConversionError(
                f"{self.source}: the checkpoint pickle uses {module[:_MAX_GLOBAL_NAME]}.{name[:_MAX_GLOBAL_NAME]}, "
                "which is not part of a plain PyTorch state dict"
            ) from None

    def persistent_load(self, pid: Any) -> StorageRef:
        # torch.save writes ("storage", storage_type, key, location, numel).
        if not (isinstance(pid, tuple) and 3 <= len(pid) <= 5 and pid[0] == "storage"):
            raise _Refused(f"unexpected persistent id {describe(pid)}")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, StorageType):
            raise _Refused(f"unsupported storage type {describe(storage_type)}")
        if not (isinstance(key, str) and 0 < len(key) <= _MAX_GLOBAL_NAME and "/" not in key and key.isprintable()):
            raise _Refused(f"storage key {describe(key)} is not a plain name")
        numel = pid[4] if len(pid) == 5 else None
        if numel is not None and not _is_int64(numel):
            raise _Refused(f"storage {key} has {describe(numel)} elements")
        return StorageRef(key=key, dtype=storage_type.dtype, numel=numel)


def _is_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_INT64


def _is_signed_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -_MAX_INT64 - 1 <= value <= _MAX_INT64


def _int64_tuple(value: Any, what: str) -> tuple[int, ...]:
    # Signs and bounds are checked with the tensor's name, against its storage (tensor_record.check_layout).
    if not isinstance(value, tuple) or len(value) > MAX_DIMS or not all(map(_is_signed_int64, value)):
        raise _Refused(f"a tensor's {what} is {describe(value)}, not at most {MAX_DIMS} 64-bit integers")
    return value


# The callables a state dict's pickle may name. They receive the machine's checked objects.


def _rebuild_tensor_v2(
    storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
    backward_hooks: Any = None, metadata: Any = None,
) -> PendingTensor:  # fmt: skip
    if not isinstance(storage, StorageRef):
        raise _Refused(f"a tensor's storage is {_kind(storage)}, not a storage")
    if not _is_signed_int64(storage_offset):
        raise _Refused(f"a tensor's storage offset is {describe(storage_offset)}, not a 64-bit integer")
    shape, strides = _int64_tuple(size, "size"), _int64_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise _Refused(f"a tensor has {len(shape)} sizes but {len(strides)} strides")
    return PendingTensor(storage, storage_offset, shape, strides)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> PendingTensor:
    if not isinstance(data, PendingTensor):
        raise _Refused(f"a parameter holds {_kind(data)}, not a tensor")
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> PendingTensor:
    return _rebuild_parameter(data)


def _ordered_dict() -> collections.OrderedDict:
    return collections.OrderedDict()


_CALLABLES: dict[str, Callable[..., Any]] = {
    "OrderedDict": _ordered_dict,
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter_with_state,
}

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    **{("torch", name): StorageType(dtype) for name, dtype in STORAGE_CLASSES.items()},
}
_ALLOWED_CALLABLES = frozenset(id(function) for function in _CALLABLES.values())


# Opcode handlers: each reads its argument and does what pickle's own machine does.

_U8, _U16, _I32, _U32, _U64 = (struct.Struct(f) for f in ("<B", "<H", "<i", "<I", "<Q"))
_F64 = struct.Struct(">d")


def _stop(m: _Machine) -> None:  # handled in run()
    raise AssertionError


def _proto(m: _Machine) -> None:
    if m._unpack(_U8) > 5:
        raise _Refused("unsupported pickle protocol")


def _frame(m: _Machine) -> None:
    m._unpack(_U64)  # a framing hint only: the data is already in memory


def _mark(m: _Machine) -> None:
    if len(m.marks) >= MAX_DEPTH:
        raise _Refused(f"marks nested more than {MAX_DEPTH} deep")
    m.marks.append(m.stack)
    m.stack = []


def _pop(m: _Machine) -> None:
    m.pop()


def _pop_mark(m: _Machine) -> None:
    m.pop_mark()


def _dup(m: _Machine) -> None:
    m.push(m.stack[-1])


def _constant(value: Any) -> Callable[[_Machine], None]:
    return lambda m: m.push(value)


def _int_reader(layout: struct.Struct) -> Callable[[_Machine], None]:
    return lambda m: m.push(m._unpack(layout))


def _long(length_layout: struct.Struct) -> Callable[[_Machine], None]:
    def handler(m: _Machine) -> None:
        n = m._unpack(length_layout)
        if n > 16:
            raise _Refused(f"an integer of {n} bytes")
        m.push(int.from_bytes(m._take(n), "little", signed=True))

    return handler


def _binfloat(m: _Machine) -> None:
    m.push(m._unpack(_F64))


def _text(length_layout: struct.Struct, encoding: str) -> Callable[[_Machine], None]:
    def handler(m: _Machine) -> None:
        raw = bytes(m._take(m._unpack(length_layout)))
        try:
            m.push(raw.decode(encoding, "surrogatepass" if encoding == "utf-8" else "strict"))
        except UnicodeDecodeError:
            raise _Refused(f"a string is not valid {encoding}") from None

    return handler


def _binary(length_layout: struct.Struct) -> Callable[[_Machine], None]:
    return lambda m: m.push(bytes(m._take(m._unpack(length_layout))))


def _empty(kind: type) -> Callable[[_Machine], None]:
    return lambda m: m.push(m.new(kind(), 1))


def _empty_tuple(m: _Machine) -> None:
    m.push(())


def _tuple_n(n: int) -> Callable[[_Machine], None]:
    def handler(m: _Machine) -> None:
        if len(m.stack) < n:
            raise IndexError
        items = m.stack[len(m.stack) - n :]
        del m.stack[len(m.stack) - n :]
        m.push(m.tuple_of(items))

    return handler


def _tuple(m: _Machine) -> None:
    m.push(m.tuple_of(m.pop_mark()))


def _list(m: _Machine) -> None:
    items = m.pop_mark()
    m.push(m.new([], 1))
    m.append(items)


def _dict(m: _Machine) -> None:
    items = m.pop_mark()
    m.push(m.new({}, 1))
    m.set_items(items)


def _append(m: _Machine) -> None:
    item = m.pop()
    m.append([item])


def _appends(m: _Machine) -> None:
    m.append(m.pop_mark())


def _setitem(m: _Machine) -> None:
    value = m.pop()
    key = m.pop()
    m.set_items([key, value])


def _setitems(m: _Machine) -> None:
    m.set_items(m.pop_mark())


def _put(layout: struct.Struct) -> Callable[[_Machine], None]:
    return lambda m: m.memoize(m._unpack(layout))


def _memoize(m: _Machine) -> None:
    m.memoize(len(m.memo))


def _get(layout: struct.Struct) -> Callable[[_Machine], None]:
    return lambda m: m.recall(m._unpack(layout))


def _global(m: _Machine) -> None:
    module = m._line()
    name = m._line()
    m.push(m.find_class(module, name))


def _stack_global(m: _Machine) -> None:
    name = m.pop()
    module = m.pop()
    if not isinstance(module, str) or not isinstance(name, str):
        raise _Refused("STACK_GLOBAL needs two strings")
    m.push(m.find_class(module, name))


def _reduce(m: _Machine) -> None:
    args = m.pop()
    function = m.pop()
    if id(function) not in _ALLOWED_CALLABLES:
        raise _Refused(f"{_kind(function)} is called")
    if not isinstance(args, tuple):
        raise _Refused(f"a call's arguments are {_kind(args)}, not a tuple")
    depth = m.seal(args)
    try:
        result = function(*args)
    except TypeError:  # the wrong number of arguments
        raise _Refused(f"{function.__name__.lstrip('_')} is called with {len(args)} arguments") from None
    m.push(m.new(result, 1 if isinstance(result, dict) else depth + 1))


def _build(m: _Machine) -> None:
    state = m.pop()
    target = m.stack[-1] if m.stack else None
    # torch's OrderedDict state dicts carry a `_metadata` attribute (module versions): not needed.
    if not isinstance(target, collections.OrderedDict):
        raise _Refused(f"the state of {_kind(target)} is set")
    m.seal(state)


def _binpersid(m: _Machine) -> None:
    pid = m.pop()
    m.seal(pid)
    m.push(m.persistent_load(pid))


_HANDLERS: dict[bytes, Callable[[_Machine], None]] = {
    pickle.STOP: _stop,
    pickle.PROTO: _proto,
    pickle.FRAME: _frame,
    pickle.MARK: _mark,
    pickle.POP: _pop,
    pickle.POP_MARK: _pop_mark,
    pickle.DUP: _dup,
    pickle.NONE: _constant(None),
    pickle.NEWTRUE: _constant(True),
    pickle.NEWFALSE: _constant(False),
    pickle.BININT: _int_reader(_I32),
    pickle.BININT1: _int_reader(_U8),
    pickle.BININT2: _int_reader(_U16),
    pickle.LONG1: _long(_U8),
    pickle.LONG4: _long(_U32),
    pickle.BINFLOAT: _binfloat,
    pickle.BINUNICODE: _text(_U32, "utf-8"),
    pickle.SHORT_BINUNICODE: _text(_U8, "utf-8"),
    pickle.BINUNICODE8: _text(_U64, "utf-8"),
    pickle.BINSTRING: _text(_U32, "ascii"),
    pickle.SHORT_BINSTRING: _text(_U8, "ascii"),
    pickle.BINBYTES: _binary(_U32),
    pickle.SHORT_BINBYTES: _binary(_U8),
    pickle.BINBYTES8: _binary(_U64),
    pickle.EMPTY_TUPLE: _empty_tuple,
    pickle.TUPLE: _tuple,
    pickle.TUPLE1: _tuple_n(1),
    pickle.TUPLE2: _tuple_n(2),
    pickle.TUPLE3: _tuple_n(3),
    pickle.EMPTY_LIST: _empty(list),
    pickle.LIST: _list,
    pickle.APPEND: _append,
    pickle.APPENDS: _appends,
    pickle.EMPTY_DICT: _empty(dict),
    pickle.DICT: _dict,
    pickle.SETITEM: _setitem,
    pickle.SETITEMS: _setitems,
    pickle.BINPUT: _put(_U8),
    pickle.LONG_BINPUT: _put(_U32),
    pickle.MEMOIZE: _memoize,
    pickle.BINGET: _get(_U8),
    pickle.LONG_BINGET: _get(_U32),
    pickle.GLOBAL: _global,
    pickle.STACK_GLOBAL: _stack_global,
    pickle.REDUCE: _reduce,
    pickle.BUILD: _build,
    pickle.BINPERSID: _binpersid,
}
