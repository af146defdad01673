"""The machine beside a benchmark's figures: single-thread speed, load, pinning, memory.

Its single-thread speed, its load average, the core a starved run is pinned to, and this
process's resident memory. Noisy figures are only comparable between machines (and between runs on a shared machine)
next to these: a load run on a host whose Python loop is ten times slower has a lower ceiling.
"""

import ctypes
import os
import time
from pathlib import Path
from typing import Any

#: Steps of the fixed loop that stands for the machine's single-thread speed.
LOOP_STEPS = 10_000_000


def loop_speed(steps: int = LOOP_STEPS) -> dict[str, float]:
    """Time a fixed empty Python loop.

    Wall time is what the benchmark's event loop would get; CPU time is what the loop itself
    used. Their ratio is the share of a core this process got while other work ran beside it.

    Args:
        steps: Iterations of ``for _ in range(steps): pass``.

    Returns:
        ``wall_s`` and ``cpu_s`` of the loop.
    """
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        pass
    return {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages."""
    return list(os.getloadavg())


def snapshot() -> dict[str, Any]:
    """The loop speed and the load average, now."""
    return {"loop": loop_speed(), "load_average": load_average(), "at": time.time()}


def pin_to_one_cpu(cpu: int | None = None) -> int:
    """Pin this process (and every process it starts later) to one CPU.

    Child processes inherit the affinity, so the emulator started afterwards shares the core.

    Args:
        cpu: The CPU; the highest-numbered one this process may use when None.

    Returns:
        The CPU pinned to.
    """
    allowed = os.sched_getaffinity(0)
    chosen = max(allowed) if cpu is None else cpu
    if chosen not in allowed:
        raise ValueError(f"CPU {chosen} is not among the allowed CPUs {sorted(allowed)}")
    os.sched_setaffinity(0, {chosen})
    return chosen


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc/self/status``)."""
    return _status_kb("VmRSS") * 1024


def trimmed_rss_bytes() -> int | None:
    """RSS after handing the C allocator's free pages back to the system (glibc ``malloc_trim``).

    Memory freed by the program but kept by the allocator counts in plain RSS; after a trim
    what remains is what is in use (and fragmentation the trim cannot undo).

    Returns:
        The RSS in bytes, or None where glibc's ``malloc_trim`` is not available.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return rss_bytes()


def peak_rss_bytes() -> int:
    """This process's highest resident set size since start or :func:`reset_peak_rss`."""
    return _status_kb("VmHWM") * 1024


def reset_peak_rss() -> bool:
    """Set the peak resident set size back to the current one (Linux 4.0+).

    Returns:
        Whether the kernel accepted it (if not, the peak includes what came before).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
