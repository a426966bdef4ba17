"""An interrupted or failed conversion leaves nothing behind, and never a half-written file at the output.

SIGTERM and SIGHUP (as SIGINT) remove the temporary ``.partial`` file, put the handlers that
were there back, and then end the process by the same signal; a full disk names the output;
an existing output is replaced only by a complete file, keeping its permissions.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from gptj_ggml.convert import convert_checkpoint, gguf_output
from gptj_ggml.errors import ConversionError

from fuzz.fixtures import write_checkpoint

PYTHON_DIR = Path(__file__).resolve().parent.parent / "python"

# Converts argv[1] to argv[2] through the CLI, pausing before the first tensor's data until the
# file argv[3] appears (after writing "writing" to argv[4]): the parent sends its signal then.
_PAUSING_CONVERT = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from gptj_ggml.cli import main
    from gptj_ggml.convert import gguf_output

    src, out, go, ready = sys.argv[1:5]
    # Whatever the test runner inherited (under nohup, SIGHUP is ignored), the conversion starts
    # with the default handler, or with SIGHUP ignored as nohup leaves it.
    ignore = sys.argv[5:] == ["ignore-sighup"]
    signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore else signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    original = gguf_output._encoded_blocks

    def paused(tensor):
        Path(ready).write_text("writing")
        while not Path(go).exists():
            time.sleep(0.01)
        yield from original(tensor)

    gguf_output._encoded_blocks = paused
    sys.exit(main(["convert", src, "-o", out]))
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("interrupt") / "checkpoint", "safetensors")


def _start_paused_convert(checkpoint: Path, out: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    go, ready = out.parent / "go", out.parent / "ready"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PYTHON_DIR), os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(
        [sys.executable, "-c", _PAUSING_CONVERT, str(checkpoint), str(out), str(go), str(ready), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert process.poll() is None, process.communicate()
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the conversion never started writing: {process.communicate()}")
        time.sleep(0.01)
    ready.unlink()
    return process, go


def _finish(process: subprocess.Popen) -> tuple[bytes, bytes]:
    """Wait for the conversion; one that does not end is killed rather than left behind."""
    try:
        return process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise


def _partial_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".partial"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminating_signal_mid_conversion_removes_the_partial_file_and_ends_by_that_signal(
    checkpoint, tmp_path, signum
):
    out = tmp_path / "model.gguf"
    process, _ = _start_paused_convert(checkpoint, out)
    assert len(_partial_files(tmp_path)) == 1, "the conversion should be writing its temporary file"

    process.send_signal(signum)
    _finish(process)

    assert process.returncode == -signum
    assert _partial_files(tmp_path) == []
    assert not out.exists()


def test_an_existing_output_survives_an_interrupted_conversion_unchanged(checkpoint, tmp_path):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"the previous model")
    process, _ = _start_paused_convert(checkpoint, out)

    process.send_signal(signal.SIGTERM)
    _finish(process)

    assert out.read_bytes() == b"the previous model"
    assert _partial_files(tmp_path) == []


def test_an_ignored_sighup_is_left_ignored_and_the_conversion_completes(checkpoint, tmp_path):
    out = tmp_path / "model.gguf"
    process, go = _start_paused_convert(checkpoint, out, "ignore-sighup")

    process.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    go.write_text("go")
    _, stderr = _finish(process)

    assert process.returncode == 0, stderr.decode()
    assert out.stat().st_size > 0
    assert _partial_files(tmp_path) == []


def test_the_handlers_before_the_conversion_are_back_after_it(checkpoint, tmp_path):
    def handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, handler)
    seen_during = []
    original = gguf_output._encoded_blocks

    def watching(tensor):
        seen_during.append(signal.getsignal(signal.SIGTERM))
        yield from original(tensor)

    try:
        gguf_output._encoded_blocks = watching
        convert_checkpoint(checkpoint, tmp_path / "model.gguf")
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        gguf_output._encoded_blocks = original
        signal.signal(signal.SIGTERM, previous)
    assert seen_during and seen_during[0] is not handler, "the conversion installs its own handler while writing"


def test_a_signal_reaches_the_previous_python_handler_after_the_cleanup(checkpoint, tmp_path, monkeypatch):
    class Stop(Exception):
        pass

    calls = []

    def handler(signum, frame):
        calls.append((signum, _partial_files(tmp_path)))
        raise Stop

    original = gguf_output._encoded_blocks

    def signalled(tensor):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs here
        yield from original(tensor)

    monkeypatch.setattr(gguf_output, "_encoded_blocks", signalled)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(Stop):
            convert_checkpoint(checkpoint, tmp_path / "model.gguf")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert calls == [(signal.SIGTERM, [])], "the handler runs once, after the partial file is gone"
    assert list(tmp_path.iterdir()) == []


def test_conversion_in_another_thread_works_and_leaves_the_handlers_alone(checkpoint, tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    errors = []

    def convert():
        try:
            convert_checkpoint(checkpoint, tmp_path / "model.gguf")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=convert)
    thread.start()
    thread.join()

    assert errors == []
    assert (tmp_path / "model.gguf").stat().st_size > 0
    assert signal.getsignal(signal.SIGTERM) is before


class _DiskFullAfter(io.BufferedWriter):
    """A file whose disk fills up after ``limit`` bytes (numpy's tofile flushes first, then writes to the fd)."""

    limit = 4096

    def __init__(self, raw: io.RawIOBase) -> None:
        super().__init__(raw)
        self.written = 0

    def write(self, data) -> int:
        self.written += len(data)
        if self.written > self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_a_full_disk_names_the_output_and_says_the_disk_is_full(checkpoint, tmp_path, monkeypatch):
    import gguf.gguf_writer

    def full_disk_open(path, mode="r", *args, **kwargs):
        assert mode == "wb"
        return _DiskFullAfter(io.FileIO(path, "wb"))

    monkeypatch.setattr(gguf.gguf_writer, "open", full_disk_open, raising=False)
    out = tmp_path / "model.gguf"

    with pytest.raises(OSError, match="disk is full") as raised:
        convert_checkpoint(checkpoint, out)

    assert raised.value.errno == errno.ENOSPC
    assert str(out) in str(raised.value)
    assert ".partial" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_error_line_from_the_cli(checkpoint, tmp_path, monkeypatch, capsys):
    import gguf.gguf_writer

    from gptj_ggml.cli import main

    monkeypatch.setattr(
        gguf.gguf_writer, "open", lambda path, mode: _DiskFullAfter(io.FileIO(path, "wb")), raising=False
    )
    out = tmp_path / "model.gguf"

    assert main(["convert", str(checkpoint), "-o", str(out)]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert lines == [f"error: {out}: the disk is full (no space left for the output; nothing was written there)"]


def test_a_replaced_output_keeps_its_permissions(checkpoint, tmp_path):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"old")
    out.chmod(0o640)

    convert_checkpoint(checkpoint, out)

    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert out.read_bytes()[:4] == b"GGUF"


def test_a_failed_conversion_leaves_an_existing_output_as_it_was(checkpoint, tmp_path):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"old")

    with pytest.raises(ConversionError):
        convert_checkpoint(tmp_path / "no-such-checkpoint", out)

    assert out.read_bytes() == b"old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.gguf"]
