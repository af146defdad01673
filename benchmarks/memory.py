"""Resident memory per session, each client and level measured in a fresh process.

In the benchmark process itself a level's figure would be wrong: memory freed by the levels
before stays in CPython's allocator and is handed out again, so later sessions look almost free.
A fresh process starts from its imports instead. It starts one warm-up session and lets it speak
(so imports, lazily built state and anything shared per process, such as a pool of standby
sockets, land in the baseline), then takes the baseline after a full collection, starts N more
sessions and has each speak once (starts staggered over 1 s, as in the load runs).

Per session: (RSS - baseline) / N, both after speaking with the sessions still open and idle
("held"), and at the peak while they spoke ("peak"); and held once more after glibc's
``malloc_trim`` has handed the allocator's free pages back ("trimmed", against a trimmed
baseline): the part of "held" that is memory in use rather than memory freed and kept.

Run by the scale benchmark; by hand::

    python -m benchmarks.memory --client ours --sessions 32 --url ws://127.0.0.1:PORT/api/speech/tts
"""

import argparse
import asyncio
import gc
import json
import random
import sys
from typing import Any

from .clients import ALL_CLIENTS, ClientSpec, client_by_key
from .machine import peak_rss_bytes, reset_peak_rss, rss_bytes, trimmed_rss_bytes
from .measure import Session
from .scale import start_sessions, stop_sessions
from .traces import CONCURRENCY_TRACE, Trace

#: Longest a measurement subprocess may take before it counts as failed.
RUN_TIMEOUT_S = 300.0


class _KeepNothing(list):
    """A list that drops what is appended to it."""

    def append(self, item: Any) -> None:
        """Drop ``item``."""


async def _start(spec: ClientSpec, url: str, n: int) -> list[Session]:
    """Start ``n`` sessions whose recorders keep no frames.

    The recorders would otherwise hold every frame, 0.6 MiB of audio per spoken sentence:
    memory of the harness, not of the client. The sessions' own bookkeeping (a time and a
    duration per audio frame) stays, a few kB each.
    """
    sessions = await start_sessions(spec, url, n)
    for s in sessions:
        s.h.up.records = _KeepNothing()
        s.h.down.records = _KeepNothing()
    return sessions


async def measure_in_this_process(
    spec: ClientSpec, url: str, n: int, trace: Trace, stagger_s: float = 1.0
) -> dict[str, Any]:
    """Resident memory of ``n`` sessions of ``spec`` over a one-session baseline.

    Returns:
        Baseline, held and peak RSS in bytes, and per session.
    """
    [warm] = await _start(spec, url, 1)
    await warm.speak(trace)
    gc.collect()
    baseline = rss_bytes()
    trimmed_baseline = trimmed_rss_bytes()
    peak_reset = reset_peak_rss()
    sessions = await _start(spec, url, n)
    started = rss_bytes()
    rng = random.Random(4)

    async def one(s: Session) -> None:
        await asyncio.sleep(rng.uniform(0, stagger_s))
        await s.speak(trace)

    try:
        results = await asyncio.gather(*(one(s) for s in sessions), return_exceptions=True)
        gc.collect()
        held, peak = rss_bytes(), peak_rss_bytes()
        trimmed = trimmed_rss_bytes()
    finally:
        await stop_sessions(sessions)
        await warm.stop()
    return {
        "client": spec.key,
        "sessions": n,
        "baseline_bytes": baseline,
        "started_bytes": started,
        "held_bytes": held,
        "peak_bytes": peak,
        "peak_reset": peak_reset,
        "per_session_started_bytes": (started - baseline) / n,
        "per_session_held_bytes": (held - baseline) / n,
        "per_session_peak_bytes": (peak - baseline) / n,
        "trimmed_bytes": trimmed,
        "per_session_trimmed_bytes": (
            (trimmed - trimmed_baseline) / n
            if trimmed is not None and trimmed_baseline is not None
            else None
        ),
        "errors": [repr(r) for r in results if isinstance(r, BaseException)][:3],
    }


async def measure(key: str, url: str, n: int) -> dict[str, Any]:
    """Run :func:`measure_in_this_process` in a fresh ``python -m benchmarks.memory``.

    The child inherits this process's CPU affinity (a starved run stays on its core).

    Args:
        key: The client's key in :data:`benchmarks.clients.CLIENTS`.
        url: The emulator's WebSocket URL.
        n: Sessions.

    Returns:
        The child's figures, or ``{"error": ...}`` if it failed.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.memory",
        "--client",
        key,
        "--sessions",
        str(n),
        "--url",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"client": key, "sessions": n, "error": f"timed out after {RUN_TIMEOUT_S:.0f} s"}
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        return {"client": key, "sessions": n, "error": " | ".join(tail)}
    return json.loads(out.decode().strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Measure one client at one level and print the figures as one JSON line."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--client", required=True, choices=[c.key for c in ALL_CLIENTS])
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--url", required=True, help="the emulator's WebSocket URL")
    args = parser.parse_args(argv)
    spec = client_by_key(args.client)
    result = asyncio.run(measure_in_this_process(spec, args.url, args.sessions, CONCURRENCY_TRACE))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
