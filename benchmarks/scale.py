"""Scale scenarios: the session ceiling, TTFA under network jitter, barge-ins under load.

Every scenario runs real Pipecat pipelines in this process against the emulator in its own
process, like :mod:`benchmarks.measure`. The load scenarios switch the emulator to its cached
word voice and refuse permessage-deflate, so the emulator's own sends stay on time and the
figures measure the client (its lateness is reported next to the client's).
"""

import asyncio
import gc
import random
import statistics
import time
from collections.abc import Iterable
from typing import Any

from loguru import logger
from pipecat.frames.frames import InterruptionFrame

from .clients import ClientSpec
from .emulator import EmulatorProcess
from .measure import Answer, Session, cpu_s, lateness, pct
from .traces import Trace

#: Sessions are started this many at a time (each start opens a socket).
START_BATCH = 32


async def start_sessions(spec: ClientSpec, url: str, n: int) -> list[Session]:
    """Start ``n`` pipelines, a batch at a time."""
    sessions: list[Session] = []
    while len(sessions) < n:
        k = min(START_BATCH, n - len(sessions))
        sessions += await asyncio.gather(*(Session.start(spec, url) for _ in range(k)))
    return sessions


async def stop_sessions(sessions: list[Session]) -> None:
    """End every pipeline."""
    await asyncio.gather(*(s.stop() for s in sessions), return_exceptions=True)


class _Frozen:
    """``gc.freeze()`` for the measured phase, as a host running many calls would do.

    At 128 sessions a full (generation 2) collection walks every live object and stalls the
    event loop for 35-115 ms: a gap by itself. Freezing what exists after start-up leaves the
    collector only the objects created since.
    """

    def __enter__(self) -> None:
        gc.collect()
        gc.freeze()

    def __exit__(self, *exc: object) -> None:
        gc.unfreeze()


# --------------------------------------------------------------------------- ceiling


async def run_level(
    emu: EmulatorProcess,
    spec: ClientSpec,
    trace: Trace,
    n: int,
    *,
    gap_threshold_s: float = 0.1,
    stagger_s: float = 1.0,
    seed: int = 4,
) -> dict[str, Any]:
    """N sessions in this process each speak ``trace`` once; gaps, sockets, CPU.

    Returns:
        Sessions with a gap (client-side lateness over the threshold), worst lateness on both
        sides, server connections opened per session, CPU per audio second, TTFA median.
    """
    rng = random.Random(seed)
    await emu.reset()
    sessions = await start_sessions(spec, emu.ws_url, n)

    async def one(s: Session) -> Answer:
        await asyncio.sleep(rng.uniform(0, stagger_s))
        return await s.speak(trace)

    with _Frozen():
        cpu0, t0 = cpu_s(), time.monotonic()
        results = await asyncio.gather(*(one(s) for s in sessions), return_exceptions=True)
        cpu, wall = cpu_s() - cpu0, time.monotonic() - t0
    await stop_sessions(sessions)
    stats = await emu.stats()
    # An answer that never ended (an exception, e.g. a timeout) counts as a gap.
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    answers = [r for r in results if isinstance(r, Answer)]
    client_late = [
        lateness(s.audio_arrivals.get(r.context_id or "", []))
        if isinstance(r, Answer)
        else float("inf")
        for s, r in zip(sessions, results)
    ]
    server_late = [lateness([tuple(c) for c in r["audio_chunks"]]) for r in stats["requests"]]
    ttfas = [a.ttfa for a in answers if a.ttfa is not None]
    audio = sum(a.audio_s for a in answers)
    return {
        "sessions": n,
        "sessions_with_gap": sum(1 for x in client_late if x > gap_threshold_s),
        "worst_lateness_s": max(client_late) if client_late else None,
        "emulator_worst_lateness_s": max(server_late) if server_late else None,
        "connections_per_session": len(stats["connections"]) / n,
        "ttfa_median_s": statistics.median(ttfas) if ttfas else None,
        "cpu_utilisation": cpu / wall if wall else None,
        "audio_s": audio,
        "cpu_per_audio_s": cpu / audio if audio else None,
        "errors": errors[:3],
    }


async def run_ceilings(
    emu: EmulatorProcess,
    specs: list[ClientSpec],
    trace: Trace,
    levels: list[int],
    *,
    tries: int = 2,
    time_cap_s: float = 900.0,
) -> dict[str, dict[str, Any]]:
    """Raise the number of sessions level by level until each client has a gap.

    Levels go in the outer loop and clients in the inner one, so every client meets a level
    at about the same time (the machine's background load drifts). A level passes for a client
    when one of ``tries`` runs has no gap; a client leaves the search at the first level it
    fails every time. The search also stops at the time cap.

    Returns:
        Per client: every run, the highest level passed (the ceiling) and its figures.
    """
    out = {s.key: {"runs": [], "ceiling": 0, "at_ceiling": None, "capped": False} for s in specs}
    active = list(specs)
    began = time.monotonic()
    for n in levels:
        if not active:
            break
        if time.monotonic() - began > time_cap_s:
            for spec in active:
                out[spec.key]["capped"] = True
            break
        for spec in list(active):
            entry = out[spec.key]
            ok = None
            for attempt in range(tries):
                row = await run_level(emu, spec, trace, n, seed=4 + attempt)
                row["attempt"] = attempt + 1
                entry["runs"].append(row)
                logger.info(
                    f"ceiling {spec.key} N={n}: {row['sessions_with_gap']} with a gap, worst "
                    f"{row['worst_lateness_s']:.3f} s (emulator "
                    f"{row['emulator_worst_lateness_s']:.3f} s), "
                    f"{row['connections_per_session']:.2f} conn/session, "
                    f"{(row['cpu_per_audio_s'] or 0) * 1000:.2f} ms CPU per audio s"
                )
                if not row["sessions_with_gap"]:
                    ok = row
                    break
            if ok is None:
                active.remove(spec)
            else:
                entry["ceiling"], entry["at_ceiling"] = n, ok
    for spec in active:
        if out[spec.key]["ceiling"] == levels[-1]:
            out[spec.key]["capped"] = True
    return out


# --------------------------------------------------------------------------- jitter


async def run_jitter_ttfa(
    emu: EmulatorProcess, spec: ClientSpec, trace: Trace, *, sessions: int, answers: int
) -> dict[str, Any]:
    """TTFA under the emulator's network model: ``sessions`` pipelines, ``answers`` each.

    Each session speaks one warm-up answer (not counted), then its answers one after another;
    sessions start 0.25 s apart so answers do not all start together.

    Returns:
        Every TTFA and its p50/p95/p99.
    """
    await emu.reset()
    pipelines = await start_sessions(spec, emu.ws_url, sessions)

    async def one(i: int, s: Session) -> list[float]:
        await asyncio.sleep(0.25 * i)
        await s.speak(trace)
        out = []
        for _ in range(answers):
            await asyncio.sleep(0.2)
            a = await s.speak(trace)
            if a.ttfa is not None:
                out.append(a.ttfa)
        return out

    try:
        per_session = await asyncio.gather(*(one(i, s) for i, s in enumerate(pipelines)))
    finally:
        await stop_sessions(pipelines)
    return ttfa_summary(t for ts in per_session for t in ts)


def ttfa_summary(ttfas: Iterable[float]) -> dict[str, Any]:
    """TTFAs sorted, their count and p50/p95/p99."""
    ordered = sorted(ttfas)
    return {
        "n": len(ordered),
        "ttfa_s": ordered,
        "p50_s": pct(ordered, 50),
        "p95_s": pct(ordered, 95),
        "p99_s": pct(ordered, 99),
    }


def pool_jitter_runs(runs: list[dict[str, Any]], seeds: tuple[int, ...]) -> dict[str, Any]:
    """Pool the TTFAs of one client's jitter runs (one per network seed).

    Returns:
        Every TTFA, its p50/p95/p99, and each seed's own p95.
    """
    return ttfa_summary(t for r in runs for t in r["ttfa_s"]) | {
        "seeds": list(seeds),
        "p95_per_seed_s": [r["p95_s"] for r in runs],
    }


# --------------------------------------------------------------------------- barge-in


async def _barge_in_round(
    s: Session, trace: Trace, at_audio_s: float, gap_s: float
) -> tuple[Answer, Answer]:
    reached = asyncio.Event()

    def on_audio(answer: Answer) -> None:
        if answer.audio_s >= at_audio_s - 1e-9:
            reached.set()

    s.on_audio = on_audio
    task = asyncio.create_task(s.stream(trace))
    try:
        await asyncio.wait_for(reached.wait(), 30.0)
    finally:
        s.on_audio = None
    first = s.answers[-1]
    task.cancel()
    await s.h.send(InterruptionFrame())
    if first.context_id:
        s.ignore_contexts.add(first.context_id)
    await asyncio.sleep(gap_s)
    after = await s.speak(trace)
    return first, after


async def run_barge_in_load(
    emu: EmulatorProcess,
    spec: ClientSpec,
    trace: Trace,
    *,
    sessions: int,
    rounds: int = 1,
    spread_s: float = 0.0,
    at_audio_s: float = 1.0,
    gap_s: float = 0.3,
) -> dict[str, Any]:
    """Barge-ins with ``sessions`` pipelines: TTFA of the answer after vs. the one cut.

    Each session, starting at a random offset in ``[0, spread_s)``, does ``rounds`` times:
    an answer (steady state: it goes out on the socket the session already has), a barge-in
    once ``at_audio_s`` of its audio has left the service, and ``gap_s`` later the next
    answer, spoken to its end. ``sessions / spread_s`` is the process-wide barge-in rate.

    Returns:
        TTFA medians of the answers before and after the barge-ins, and their difference.
    """
    rng = random.Random(9)
    await emu.reset()
    pipelines = await start_sessions(spec, emu.ws_url, sessions)

    async def one(s: Session) -> list[tuple[Answer, Answer]]:
        await asyncio.sleep(rng.uniform(0, spread_s))
        out = []
        for _ in range(rounds):
            out.append(await _barge_in_round(s, trace, at_audio_s, gap_s))
            await asyncio.sleep(0.3)
        return out

    with _Frozen():
        try:
            pairs = [p for ps in await asyncio.gather(*(one(s) for s in pipelines)) for p in ps]
        finally:
            await stop_sessions(pipelines)
    stats = await emu.stats()
    before = [a.ttfa for a, _ in pairs if a.ttfa is not None]
    after = [b.ttfa for _, b in pairs if b.ttfa is not None]
    steady = statistics.median(before) if before else None
    then = statistics.median(after) if after else None
    return {
        "sessions": sessions,
        "barge_ins": len(pairs),
        "barge_ins_per_s": sessions / spread_s if spread_s else None,
        "steady_ttfa_s": steady,
        "after_ttfa_s": then,
        "after_p95_s": pct(after, 95),
        "delta_s": None if steady is None or then is None else then - steady,
        "connections_per_session": len(stats["connections"]) / sessions,
    }
