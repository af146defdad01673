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
from .machine import load_average, snapshot
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
        sides, server connections opened per session, CPU per audio second, TTFA median and
        p95, and the load average at the start.
    """
    rng = random.Random(seed)
    load_avg = load_average()
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
        "load_average": load_avg,
        "wall_s": wall,
        "sessions_with_gap": sum(1 for x in client_late if x > gap_threshold_s),
        "worst_lateness_s": max(client_late) if client_late else None,
        "emulator_worst_lateness_s": max(server_late) if server_late else None,
        "connections_per_session": len(stats["connections"]) / n,
        "ttfa_median_s": statistics.median(ttfas) if ttfas else None,
        "ttfa_p95_s": pct(ttfas, 95),
        "cpu_utilisation": cpu / wall if wall else None,
        "audio_s": audio,
        "cpu_per_audio_s": cpu / audio if audio else None,
        "errors": errors[:3],
    }


#: The figures of a load run summarised over a level's tries (all of them: higher is worse).
LEVEL_FIGURES = (
    "sessions_with_gap",
    "worst_lateness_s",
    "ttfa_median_s",
    "ttfa_p95_s",
    "cpu_per_audio_s",
    "cpu_utilisation",
    "connections_per_session",
    "emulator_worst_lateness_s",
)


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """Median, best (lowest) and worst (highest) of the values that are not None."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "best": min(vals), "worst": max(vals)}


def summarise_level(runs: list[dict[str, Any]], max_failed: int) -> dict[str, Any]:
    """One client's tries at one level: how many had a gap, and each figure's spread.

    Args:
        runs: The tries (rows of :func:`run_level`).
        max_failed: Tries with a gap the level may have and still pass.

    Returns:
        The level, the tries, how many had a gap, whether it passed, and per figure its median,
        best and worst over the tries.
    """
    failed = sum(1 for r in runs if r["sessions_with_gap"])
    return {
        "sessions": runs[0]["sessions"],
        "tries": len(runs),
        "tries_with_gap": failed,
        "passed": failed <= max_failed,
        "figures": {key: spread(r[key] for r in runs) for key in LEVEL_FIGURES},
        "runs": runs,
    }


async def run_ceilings(
    emu: EmulatorProcess,
    specs: list[ClientSpec],
    trace: Trace,
    levels: list[int],
    *,
    tries: int = 3,
    max_failed: int = 1,
    time_cap_s: float = 900.0,
) -> dict[str, Any]:
    """Raise the number of sessions level by level until each client fails a level.

    At each level every client runs ``tries`` times; within a try the clients take turns (the
    order rotating from try to try), so they meet the machine's drifting background load at
    about the same moments. A level passes for a client when at most ``max_failed`` of its tries
    have a session with a gap; a client leaves the search at the first level it fails. The
    search also stops at the time cap (checked between levels). The machine's loop speed and
    load average are taken before every level.

    Returns:
        ``clients``: per client its level summaries (:func:`summarise_level`), its ceiling (the
        highest level passed, 0 when it failed the first), the level it failed (None if it
        never did: the ceiling is then a lower bound) and ``capped``; ``machine``: the
        snapshot taken before each level.
    """
    if not 0 <= max_failed < tries:
        raise ValueError(f"max_failed must be in [0, tries): {max_failed} of {tries}")
    out: dict[str, Any] = {
        s.key: {"levels": [], "ceiling": 0, "failed_at": None, "capped": False} for s in specs
    }
    machine: list[dict[str, Any]] = []
    active = list(specs)
    began = time.monotonic()
    for n in levels:
        if not active:
            break
        if time.monotonic() - began > time_cap_s:
            logger.info(f"ceiling: time cap {time_cap_s:.0f} s reached before {n} sessions")
            break
        snap = snapshot()
        machine.append({"sessions": n} | snap)
        logger.info(
            f"ceiling N={n}: loop {snap['loop']['wall_s']:.3f} s, load average "
            f"{snap['load_average'][0]:.2f}"
        )
        runs: dict[str, list[dict[str, Any]]] = {s.key: [] for s in active}
        for attempt in range(tries):
            turn = attempt % len(active)
            for spec in active[turn:] + active[:turn]:
                row = await run_level(emu, spec, trace, n, seed=4 + attempt)
                row["attempt"] = attempt + 1
                runs[spec.key].append(row)
                logger.info(
                    f"ceiling {spec.key} N={n} try {attempt + 1}/{tries}: "
                    f"{row['sessions_with_gap']} with a gap, worst "
                    f"{row['worst_lateness_s']:.3f} s (emulator "
                    f"{row['emulator_worst_lateness_s'] or 0:.3f} s), TTFA median "
                    f"{row['ttfa_median_s'] or 0:.3f} s, "
                    f"{(row['cpu_per_audio_s'] or 0) * 1000:.2f} ms CPU per audio s"
                )
        for spec in list(active):
            entry = out[spec.key]
            level = summarise_level(runs[spec.key], max_failed)
            entry["levels"].append(level)
            if level["passed"]:
                entry["ceiling"] = n
            else:
                entry["failed_at"] = n
                active.remove(spec)
    for spec in active:
        out[spec.key]["capped"] = True
    return {"clients": out, "machine": machine, "tries": tries, "max_failed": max_failed}


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
