"""Small text helpers shared by the CLI's commands (sizes, counts, peak memory)."""

from __future__ import annotations

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
