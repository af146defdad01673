"""Where the time goes at one load level: frames by type, the event loop's lag, a py-spy profile.

Usage::

    python -m benchmarks.profile_level --client ours --sessions 96 --starved
    python -m benchmarks.profile_level --client builtin --sessions 96 --starved --no-py-spy

Runs one load level like :func:`benchmarks.scale.run_level` (N pipelines in this process, each
speaking the load trace once, the load emulator in its own process) for one client and reports,
over the speaking phase only:

* frames pushed by any processor, by frame type (every hop counted), per second of audio;
* the event loop's lag: a 10 ms timer measuring how late it wakes (median, p95, p99, worst, and
  the share of the phase spent more than 50 ms late);
* the result's gaps, worst lateness and TTFA, as ``run_level`` computes them;
* with py-spy installed (and not ``--no-py-spy``), a sampling profile of this process (py-spy
  runs outside it, ``--nonblocking``, on whatever CPU is free): the functions with the largest
  inclusive and self shares of the samples, and the raw collapsed stacks for a flame graph.

The counters and the lag timer cost both clients the same; the figures are for comparing
clients at the same level, not for quoting as absolute speeds.
"""

import argparse
import asyncio
import collections
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loguru import logger

logger.remove()
logger.add(sys.stderr, level="WARNING")

from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402

from benchmarks.clients import ClientSpec, _ours, _tuned, client_by_key  # noqa: E402
from benchmarks.emulator import LATENCY_MODEL, start_emulator  # noqa: E402
from benchmarks.machine import pin_to_one_cpu, snapshot  # noqa: E402
from benchmarks.measure import Answer, cpu_s, lateness, pct  # noqa: E402
from benchmarks.run import LOAD_EMULATOR  # noqa: E402
from benchmarks.scale import start_sessions, stop_sessions  # noqa: E402
from benchmarks.stages import (  # noqa: E402
    client_stages,
    transit_by_index,
    ttfa_stages,
    watch_tokens,
)
from benchmarks.traces import CONCURRENCY_TRACE  # noqa: E402

LAG_TICK_S = 0.01


class FrameCounter:
    """Counts every ``push_frame`` by frame type while on."""

    def __init__(self) -> None:
        """Wrap ``FrameProcessor.push_frame`` (process-wide) with the counter."""
        self.on = False
        self.counts: collections.Counter[str] = collections.Counter()
        original = FrameProcessor.push_frame
        counter = self

        async def push_frame(
            self: FrameProcessor, frame: Any, direction: FrameDirection = FrameDirection.DOWNSTREAM
        ) -> None:
            if counter.on:
                counter.counts[type(frame).__name__] += 1
            await original(self, frame, direction)

        FrameProcessor.push_frame = push_frame  # type: ignore[method-assign]


async def watch_lag(
    samples: list[float], stop: asyncio.Event, at: list[float], cpu: list[float]
) -> None:
    """Sleep ``LAG_TICK_S`` at a time; record how late each wake-up is, when, and CPU used."""
    while not stop.is_set():
        due = time.monotonic() + LAG_TICK_S
        await asyncio.sleep(LAG_TICK_S)
        now = time.monotonic()
        samples.append(max(0.0, now - due))
        at.append(now)
        cpu.append(time.process_time())


def cpu_by_second(at: list[float], cpu: list[float], t0: float) -> list[int]:
    """This process's CPU use (% of one core) in each second of the phase."""
    first: dict[int, tuple[float, float]] = {}
    last: dict[int, tuple[float, float]] = {}
    for when, c in zip(at, cpu):
        k = int(when - t0)
        first.setdefault(k, (when, c))
        last[k] = (when, c)
    return [
        round(100 * (last[k][1] - first[k][1]) / max(last[k][0] - first[k][0], 1e-3))
        if k in first
        else 0
        for k in range(max(first) + 1 if first else 0)
    ]


def lag_by_second(samples: list[float], at: list[float], t0: float) -> list[float]:
    """The worst lag (ms) in each second of the phase."""
    bins: dict[int, float] = {}
    for lag, when in zip(samples, at):
        k = int(when - t0)
        bins[k] = max(bins.get(k, 0.0), lag)
    return [round(1000 * bins.get(k, 0.0)) for k in range(max(bins) + 1)] if bins else []


def worst_at(arrivals: list[tuple[float, float]]) -> tuple[float, float]:
    """Where (audio seconds into the answer) the worst lateness falls, and its size."""
    if not arrivals:
        return 0.0, 0.0
    t0 = arrivals[0][0]
    played = 0.0
    worst = (0.0, 0.0)
    for when, dur in arrivals:
        late = when - (t0 + played)
        if late > worst[1]:
            worst = (played, late)
        played += dur
    return worst


def lag_summary(samples: list[float]) -> dict[str, Any]:
    """Median, p95, p99 and worst lag, and the share of time spent over 50 ms late."""
    if not samples:
        return {}
    late = sum(s for s in samples if s > 0.05)
    total = sum(samples) + LAG_TICK_S * len(samples)
    return {
        "ticks": len(samples),
        "median_ms": statistics.median(samples) * 1000,
        "p95_ms": (pct(samples, 95) or 0) * 1000,
        "p99_ms": (pct(samples, 99) or 0) * 1000,
        "worst_ms": max(samples) * 1000,
        "share_over_50ms": late / total,
    }


def _frame_name(frame: str) -> str:
    # py-spy raw frames: "function (path:line)"
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", "wt-18b/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{name}"


def summarise_stacks(path: Path, top: int = 25) -> dict[str, Any]:
    """Inclusive and self shares of the samples per function, from py-spy's raw output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        total += count
        for f in set(frames):
            inclusive[f] += count
        if frames:
            own[frames[-1]] += count
    return {
        "samples": total,
        "inclusive": [(f, c / total) for f, c in inclusive.most_common(top)],
        "self": [(f, c / total) for f, c in own.most_common(top)],
    }


async def profile(args: argparse.Namespace) -> dict[str, Any]:
    """One level of one client, with counters, the lag timer and (maybe) py-spy."""
    pinned = pin_to_one_cpu() if args.starved else None
    spec = client_by_key(args.client)
    if args.ours_kw:
        kw = json.loads(args.ours_kw)
        make = _tuned(**kw["tuning"]) if set(kw) == {"tuning"} else _ours(**kw)
        spec = ClientSpec(f"ours-{args.tag}", f"pipecat-gradium {kw}", make)
    counter = FrameCounter()
    before = snapshot()
    emu = await start_emulator()
    out: dict[str, Any] = {"client": spec.key, "sessions": args.sessions, "pinned": pinned}
    try:
        await emu.set_latency(speed=LATENCY_MODEL["speed"], **LOAD_EMULATOR)
        await emu.reset()
        sessions = await start_sessions(spec, emu.ws_url, args.sessions)
        token_in = [watch_tokens(s.h.up.next) for s in sessions]
        import random

        rng = random.Random(args.seed)

        async def one(s: Any) -> Answer:
            await asyncio.sleep(rng.uniform(0, 1.0))
            return await s.speak(CONCURRENCY_TRACE)

        spy: subprocess.Popen | None = None
        raw = args.out / f"profile-{spec.key}-{args.sessions}.raw.txt"
        py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        if args.py_spy and py_spy:
            spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(os.getpid()), "--rate", "200",
                 "--nonblocking", "--format", "raw", "--output", str(raw),
                 "--duration", str(args.duration)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(1.0)  # py-spy attaches
        samples: list[float] = []
        lag_at: list[float] = []
        stop = asyncio.Event()
        lag_cpu: list[float] = []
        lag_task = asyncio.create_task(watch_lag(samples, stop, lag_at, lag_cpu))
        gc.collect()
        gc.freeze()
        counter.on = True
        cpu0, t0 = cpu_s(), time.monotonic()
        results = await asyncio.gather(*(one(s) for s in sessions), return_exceptions=True)
        cpu, wall = cpu_s() - cpu0, time.monotonic() - t0
        counter.on = False
        gc.unfreeze()
        stop.set()
        await lag_task
        await stop_sessions(sessions)
        stats = await emu.stats()
        if spy is not None:
            spy.wait()
        answers = [r for r in results if isinstance(r, Answer)]
        # Each answer with the times its service started on its tokens.
        tokens_seen = [(r, t) for r, t in zip(results, token_in) if isinstance(r, Answer)]
        late = [
            lateness(s.audio_arrivals.get(r.context_id or "", []))
            if isinstance(r, Answer)
            else float("inf")
            for s, r in zip(sessions, results)
        ]
        ttfas = [a.ttfa for a in answers if a.ttfa is not None]
        answered_sessions = [s for s, r in zip(sessions, results) if isinstance(r, Answer)]
        where = [
            worst_at(s.audio_arrivals.get(r.context_id or "", []))
            for s, r in zip(answered_sessions, answers)
        ]
        gap_at = sorted(round(p, 1) for p, x in where if x > 0.1)
        # Below a gap too: the lateness targets compare worst lateness from 0 ms.
        # (audio s where it falls, ms late, seconds in the answer's first frame)
        late_at = sorted(
            (round(p, 2), round(1000 * x), round(s.audio_arrivals[r.context_id or ""][0][1], 2))
            for (p, x), s, r in zip(where, answered_sessions, answers)
            if x > 0.005
        )
        starts = sorted(round(a.first_audio_at - t0, 2) for a in answers if a.first_audio_at)
        frames = [
            len(s.audio_arrivals.get(r.context_id or "", []))
            for s, r in zip(answered_sessions, answers)
        ]
        audio = sum(a.audio_s for a in answers)
        out |= {
            "machine_before": before,
            "wall_s": wall,
            "cpu_utilisation": cpu / wall,
            "cpu_ms_per_audio_s": 1000 * cpu / audio if audio else None,
            "audio_s": audio,
            "sessions_with_gap": sum(1 for x in late if x > 0.1),
            "worst_lateness_ms": 1000 * max(late),
            "ttfa_median_ms": 1000 * statistics.median(ttfas) if ttfas else None,
            "ttfa_p95_ms": 1000 * (pct(ttfas, 95) or 0),
            "ttfa_stages": ttfa_stages(answers, stats["requests"]),
            "token_transit_by_index_ms": transit_by_index(
                tokens_seen, CONCURRENCY_TRACE.tokens_per_s
            ),
            "client_stages": client_stages(
                tokens_seen,
                stats["requests"],
                CONCURRENCY_TRACE.tokens,
                CONCURRENCY_TRACE.tokens_per_s,
            ),
            "lag": lag_summary(samples),
            "lag_worst_ms_by_second": lag_by_second(samples, lag_at, t0),
            "cpu_pct_by_second": cpu_by_second(lag_at, lag_cpu, t0),
            "gap_at_audio_s": gap_at,
            "late_at_audio_s_ms": late_at,
            "first_audio_s_after_t0": {
                "first": starts[0] if starts else None,
                "median": statistics.median(starts) if starts else None,
                "last": starts[-1] if starts else None,
            },
            "tokens_end_s_after_t0": round(max(a.started_at for a in answers) - t0 + 1.0, 2)
            if answers
            else None,
            "audio_frames_per_answer": statistics.median(frames) if frames else None,
            "pushes_per_audio_s": {k: v / audio for k, v in counter.counts.most_common() if audio},
            "pushes_total": sum(counter.counts.values()),
        }
        if spy is not None and raw.exists():
            out["profile"] = summarise_stacks(raw)
    finally:
        await emu.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run, print and write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_level")
    parser.add_argument("--client", default="ours", help="ours, builtin, builtin_token, ...")
    parser.add_argument("--sessions", type=int, default=96)
    parser.add_argument("--starved", action="store_true")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument(
        "--ours-kw",
        help='JSON constructor arguments, e.g. {"first_chunk_words": 8}; {"tuning": {...}} alone '
        "sets Tuning fields",
    )
    parser.add_argument("--tag", default="kw", help="names the --ours-kw client's files")
    parser.add_argument("--duration", type=int, default=12, help="py-spy seconds")
    parser.add_argument("--no-py-spy", dest="py_spy", action="store_false")
    parser.add_argument("--out", type=Path, default=Path("/tmp"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(profile(args))
    path = args.out / f"profile-{result['client']}-{args.sessions}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "profile"}, indent=1))
    if "profile" in result:
        prof = result["profile"]
        print(f"py-spy samples: {prof['samples']}")
        print("inclusive:")
        for f, share in prof["inclusive"]:
            print(f"  {share:6.1%}  {f}")
        print("self:")
        for f, share in prof["self"]:
            print(f"  {share:6.1%}  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
