"""Opening the files of a checkpoint folder: which paths may be read, and how much of them.

Checkpoints come from anywhere, so a folder's files are input like any other:

- A file named by the folder (a shard in ``*.index.json``, ``config.json``, a tokenizer file)
  must lie inside the folder once symlinks are resolved. The one exception is the Hugging Face
  Hub cache, whose ``snapshots/<revision>/`` folders hold symlinks into the repository's
  ``blobs/`` folder beside them: a symlink from a snapshot into that ``blobs/`` folder is
  followed, any other way out (``/etc/passwd``, ``../x``, a symlink to ``~/.ssh``) is refused.
- Only regular files are opened (a FIFO or a device named ``config.json`` would block or never end).
- JSON and text files are read up to a size no real file of that kind comes near, decoded as
  strict UTF-8, and parsed with duplicate keys refused (which one wins is a guess the
  converter must not make); every failure is a :class:`ConversionError` naming the file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from ..errors import ConversionError

#: ``config.json`` is a few hundred bytes; a megabyte is far past any real one.
MAX_CONFIG_BYTES = 1 << 20
#: ``tokenizer.json`` of GPT-J is 1.4 MB; a vocabulary of a million tokens with its merges is ~60 MB.
MAX_TOKENIZER_BYTES = 256 << 20
#: ``special_tokens_map.json``, ``tokenizer_config.json`` (with chat templates), ``added_tokens.json``.
MAX_TOKENIZER_SIDE_FILE_BYTES = 16 << 20
#: A shard index lists one line per tensor: GPT-J-6B's is 30 kB.
MAX_SHARD_INDEX_BYTES = 16 << 20


def folder_file(folder: Path, name: str, *, listed_in: Path | None = None) -> Path:
    """``folder / name``, refused unless it stays inside ``folder`` (see the module docstring).

    The file need not exist; ``listed_in`` names the file that named it, for the message.
    """
    where = f" (listed in {listed_in.name})" if listed_in is not None else ""
    if not isinstance(name, str) or not name or "\0" in name or os.path.isabs(name):
        raise ConversionError(
            f"{folder}: file name {_short(name, 200)}{where} is not a relative path inside the folder"
        )
    path = folder / name
    root = folder.resolve()
    try:
        target = path.resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop
        raise ConversionError(f"{path}: cannot resolve the path{where} ({error})") from None
    if target != root and (target.is_relative_to(root) or _is_hub_blob(root, target)):
        return path
    raise ConversionError(f"{path}{where} leads outside the checkpoint folder {folder} (to {target}); refused")


def _is_hub_blob(root: Path, target: Path) -> bool:
    # <cache>/models--org--name/snapshots/<revision>/file -> <cache>/models--org--name/blobs/<hash>
    return root.parent.name == "snapshots" and target.parent == root.parent.parent / "blobs"


def is_regular_file(path: Path) -> bool:
    """True when ``path`` (symlinks followed) is a regular file; False when missing or anything else."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except (OSError, ValueError):
        return False


def read_bytes(path: Path, max_bytes: int, what: str) -> bytes:
    """The content of the regular file ``path``, refused past ``max_bytes``."""
    try:
        with open(path, "rb") as file:
            status = os.fstat(file.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise ConversionError(f"{path}: not a regular file")
            # read(n) allocates n bytes up front: ask for what the file holds, not for the limit.
            data = file.read(min(status.st_size, max_bytes) + 1)
    except FileNotFoundError:
        raise ConversionError(f"{path}: missing") from None
    except OSError as error:
        raise ConversionError(f"{path}: cannot read it ({error.strerror or error})") from None
    if len(data) > max_bytes:
        raise ConversionError(f"{path}: larger than {max_bytes} bytes, far more than a {what} holds")
    return data


def read_text(path: Path, max_bytes: int, what: str) -> str:
    """The file as strict UTF-8 text (see :func:`read_bytes`)."""
    data = read_bytes(path, max_bytes, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConversionError(f"{path}: not UTF-8 text (byte {error.start} is invalid)") from None


def read_json(path: Path, max_bytes: int, what: str) -> Any:
    """The file parsed as JSON, with duplicate keys refused (see :func:`read_text`)."""
    return parse_json(read_text(path, max_bytes, what), path)


def parse_json(text: str, path: Path) -> Any:
    """``text`` parsed as JSON; errors (syntax, nesting, huge numbers, duplicate keys) name ``path``."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path}: not valid JSON ({error})") from None
    except _DuplicateKey as error:
        raise ConversionError(f"{path}: the key {_short(error.key)} appears twice in one object") from None
    except RecursionError:
        raise ConversionError(f"{path}: JSON nested too deeply") from None
    except ValueError as error:  # an integer of more digits than Python converts
        raise ConversionError(f"{path}: not valid JSON ({error})") from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def display_name(name: Any, limit: int = 120) -> str:
    """A name from a file (a tensor's, a token's) as an error message shows it: as is when short
    and printable, else quoted and cut (a newline in it must not make the message two lines)."""
    if isinstance(name, str) and name.isprintable() and len(name) <= limit:
        return name
    return describe(name, limit)


def describe(value: Any, limit: int = 60) -> str:
    """A short repr of a value from a file, for an error message (never huge, never recursive)."""
    if isinstance(value, (list, tuple)) and len(value) <= 8 and all(_is_small_int(item) for item in value):
        return repr(list(value))
    if isinstance(value, (dict, list, tuple, set)):
        return f"a {'JSON object' if isinstance(value, dict) else 'list'} of {len(value)} items"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    return _short(value, limit)


def _is_small_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value.bit_length() <= 64


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
