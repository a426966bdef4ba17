"""Small text helpers shared by the CLI's commands (sizes, counts, peak memory)."""

from __future__ import annotations

import os
import resource
import sys


def format_bytes(n_bytes: float) -> str:
    """``1536`` -> ``"1.50 KiB"``: binary units, as ``ls -h`` and ggml print them."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n_bytes) < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def format_count(n: float) -> str:
    """``6053381344`` -> ``"6.05 B"``: parameter counts as model cards write them."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{n:.0f}"


def busy_cores_warning(n_threads: int, n_cores: int) -> str | None:
    """A warning when other processes keep the cores busy and ``n_threads`` fixed threads would
    wait for each other (ggml's threads spin at a barrier after every step: on 2 cores with one
    busy process, a tiny model's 2 threads were 20-40x slower than 1), else None."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    if n_threads <= 1 or load <= max(n_cores - n_threads, 0) + 0.5:
        return None
    return (
        f"warning: the cores are busy (load average {load:.1f} on {n_cores} cores); {n_threads} threads will "
        "wait for each other and the figures will be low and noisy (fewer threads with -t, or leave -t out "
        "to let the count adapt)"
    )


def peak_rss_bytes() -> int:
    """The most resident memory this process has used so far (mapped model pages it touched included).

    On Linux from /proc/self/status (VmHWM): getrusage's ru_maxrss survives execve, so a process
    started by a large parent (a test runner, a notebook) would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux counts KiB, macOS bytes
