"""Run every benchmark and write the table, the JSON and the chart.

Usage::

    python -m benchmarks.run            # the full run (about 8 minutes on 2 cores)
    python -m benchmarks.run --quick    # a smoke run (about 2 minutes)
    python -m benchmarks.run --scale    # the scale table: ceiling, memory, jitter, barge-ins
    python -m benchmarks.run --scale --ceiling-only   # the ceiling and memory per session only
    python -m benchmarks.run --scale --starved        # the same on one CPU shared with the emulator
"""

import sys

from loguru import logger

# Before Pipecat is imported: keep its log noise (and banner) out of the output.
logger.remove()
logger.add(
    sys.stderr,
    level="INFO",
    format="{time:HH:mm:ss} {level: <7} {message}",
    filter=lambda r: r["level"].no >= 30 or r["name"].startswith(("benchmarks", "__main__")),
)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks import memory  # noqa: E402
from benchmarks.clients import ALL_CLIENTS, CLIENTS, FIRST_CHUNK_SWEEP  # noqa: E402
from benchmarks.emulator import LATENCY_MODEL, EmulatorProcess, start_emulator  # noqa: E402
from benchmarks.machine import LOOP_STEPS, pin_to_one_cpu, snapshot  # noqa: E402
from benchmarks.measure import (  # noqa: E402
    IN_FLIGHT_TOKEN,
    run_barge_in,
    run_concurrency,
    run_series,
)
from benchmarks.report import render, write_chart  # noqa: E402
from benchmarks.scale import (
    pool_jitter_runs,
    run_barge_in_load,
    run_ceilings,
    run_jitter_ttfa,
)  # noqa: E402
from benchmarks.scale_report import render_scale  # noqa: E402
from benchmarks.traces import (  # noqa: E402
    ANSWER_FIRST_6,
    CONCURRENCY_TRACE,
    STANDARD,
    TRACES,
    Trace,
)

RESULTS = Path(__file__).parent / "results"
#: Generation speed during the answer series: under the model it does not change first
#: audio (first chunk = first speakable word + model delay); it only shortens the run.
SERIES_SPEED = 16.0
BARGE_IN_SPEED = 4.0
CONCURRENCY_SPEED = LATENCY_MODEL["speed"]
#: The first-chunk sweep runs where the first phrase is not cut short by a comma.
SWEEP_TRACE = TRACES[-1]
#: The barge-in when the LLM had already streamed the whole answer (a fast LLM).
WHOLE_ANSWER_SENT = Trace("whole answer sent before the barge-in", ANSWER_FIRST_6, 1000.0)


def settings(quick: bool) -> dict[str, Any]:
    """Answer counts and levels for a full or a quick run."""
    if quick:
        return {
            "standard_answers": 3,
            "other_answers": 0,
            "sweep_answers": 0,
            "barge_in_rounds": 1,
            "barge_in_whole_rounds": 1,
            "barge_in_in_flight_rounds": 1,
            "concurrency_levels": [4],
            "concurrency_cap_s": 10.0,
        }
    return {
        "standard_answers": 8,
        "other_answers": 2,
        "sweep_answers": 3,
        "barge_in_rounds": 3,
        "barge_in_whole_rounds": 2,
        "barge_in_in_flight_rounds": 2,
        "concurrency_levels": [2, 8, 32],
        "concurrency_cap_s": 60.0,
    }


async def bench(quick: bool) -> dict[str, Any]:
    """Run every scenario for every client against one emulator process."""
    cfg = settings(quick)
    began = time.monotonic()
    emu = await start_emulator()
    out: dict[str, Any] = {
        "latency_model": dict(LATENCY_MODEL),
        "speeds": {
            "series": SERIES_SPEED,
            "barge_in": BARGE_IN_SPEED,
            "concurrency": CONCURRENCY_SPEED,
        },
        "config": cfg,
        "quick": quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "traces": {
            t.name: {
                "tokens_per_s": t.tokens_per_s,
                "ttft_s": t.ttft_s,
                "words": len(t.text.split()),
                "first_sentence_words": t.first_sentence_words,
                "tokens": len(t.tokens),
            }
            for t in TRACES
        },
        "clients": {},
        "sweep": {},
    }
    try:
        out["clock_offset_bound_s"] = await emu.clock_offset_bound()
        plan = [(STANDARD, cfg["standard_answers"])] + [
            (t, cfg["other_answers"]) for t in TRACES if t is not STANDARD and cfg["other_answers"]
        ]
        await emu.set_latency(speed=SERIES_SPEED)
        for spec in CLIENTS:
            logger.info(f"series: {spec.label}")
            out["clients"][spec.key] = {"label": spec.label, "baseline": spec.baseline}
            out["clients"][spec.key]["series"] = await run_series(emu, spec, plan)
        for spec in FIRST_CHUNK_SWEEP if cfg["sweep_answers"] else ():
            logger.info(f"first-chunk sweep: {spec.label}")
            series = await run_series(emu, spec, [(SWEEP_TRACE, cfg["sweep_answers"])])
            out["sweep"][spec.key] = {"label": spec.label, "series": series}
        out["phase_s"] = {"series": time.monotonic() - began}
        await emu.set_latency(speed=BARGE_IN_SPEED)
        for spec in CLIENTS:
            logger.info(f"barge-in: {spec.label}")
            entry = out["clients"][spec.key]
            entry["barge_in"] = await run_barge_in(emu, spec, STANDARD, cfg["barge_in_rounds"])
            entry["barge_in_whole"] = await run_barge_in(
                emu, spec, WHOLE_ANSWER_SENT, cfg["barge_in_whole_rounds"], tail_s=2.0
            )
            entry["barge_in_in_flight"] = await run_barge_in(
                emu, spec, STANDARD, cfg["barge_in_in_flight_rounds"], in_flight=IN_FLIGHT_TOKEN
            )
        out["phase_s"]["barge_in"] = time.monotonic() - began - out["phase_s"]["series"]
        await emu.set_latency(speed=CONCURRENCY_SPEED)
        for spec in CLIENTS:
            logger.info(f"concurrency: {spec.label}")
            out["clients"][spec.key]["concurrency"] = await run_concurrency(
                emu,
                spec,
                CONCURRENCY_TRACE,
                cfg["concurrency_levels"],
                time_cap_s=cfg["concurrency_cap_s"],
            )
    finally:
        await emu.close()
    out["runtime_s"] = time.monotonic() - began
    return out


#: The clients of the scale table (the flush-off variant behaves like the default under load).
SCALE_CLIENTS = [c for c in CLIENTS if c.key != "ours_noflush"]
#: The load runs: the emulator's cached-word voice, no permessage-deflate, no jitter.
LOAD_EMULATOR = {
    "voice_cache": True,
    "deflate": False,
    "net_delay_s": 0.0,
    "net_jitter_s": 0.0,
    "stall_probability": 0.0,
    "handshake_jitter_s": 0.0,
}
#: The network model of the jitter runs: 40 ms ± 20 ms per message each way (uniform), 1 % of
#: messages stalled 200 ms more, handshake 100 ms ± 50 ms; seeded. The TTFAs of every seed in
#: JITTER_SEEDS are pooled: with 64 answers a p95 moves by 170 ms when 4 of them instead of 2 meet
#: a stall (the same client measured 327 and 495 ms in two runs).
JITTER = {
    "net_delay_s": 0.04,
    "net_jitter_s": 0.02,
    "stall_probability": 0.01,
    "stall_s": 0.2,
    "handshake_jitter_s": 0.05,
    "seed": 1,
}
JITTER_SEEDS = (1, 2, 3, 4)


#: Ceiling levels: around where the clients break on a 2-core machine, and on one core.
NORMAL_LEVELS = [64, 96, 128, 160, 192, 224, 256]
STARVED_LEVELS = [48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208]


def scale_settings(
    quick: bool, starved: bool = False, ceiling_only: bool = False
) -> dict[str, Any]:
    """Levels and counts for the scale run.

    Args:
        quick: A smoke run: two small levels, one try, fewer jitter and barge-in answers.
        starved: The benchmark process and the emulator pinned together to one CPU; levels
            around a single core's ceiling; the ceiling and memory only.
        ceiling_only: The ceiling and memory only (no jitter and barge-in scenarios).
    """
    if quick:
        cfg: dict[str, Any] = {
            "levels": [8, 16],
            "tries": 1,
            "max_failed": 0,
            "ceiling_cap_s": 60.0,
            "memory_levels": [1],
            "jitter_sessions": 2,
            "jitter_answers": 2,
            "jitter_seeds": JITTER_SEEDS[:1],
            "barge_in_one_rounds": 2,
            "barge_in_load_sessions": 16,
            "barge_in_load_spread_s": 2.0,
        }
    else:
        cfg = {
            "levels": STARVED_LEVELS if starved else NORMAL_LEVELS,
            "tries": 3,
            "max_failed": 1,
            "ceiling_cap_s": 1500.0,
            "memory_levels": [1, 32],
            "jitter_sessions": 8,
            "jitter_answers": 8,
            "jitter_seeds": JITTER_SEEDS,
            "barge_in_one_rounds": 5,
            "barge_in_load_sessions": 160,
            "barge_in_load_spread_s": 16.0,
        }
    return cfg | {"starved": starved, "extras": not (starved or ceiling_only)}


def scale_output_name(cfg: dict[str, Any], quick: bool) -> str:
    """``scale``, ``scale-ceiling`` or ``scale-starved``, with ``-quick`` for a smoke run."""
    name = "scale-starved" if cfg["starved"] else "scale" if cfg["extras"] else "scale-ceiling"
    return name + ("-quick" if quick else "")


async def bench_scale(cfg: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The scale table: ceiling per client, memory per session, jittered TTFA, barge-ins."""
    began = time.monotonic()
    pinned = pin_to_one_cpu() if cfg["starved"] else None
    out: dict[str, Any] = {
        "latency_model": dict(LATENCY_MODEL),
        "load_emulator": LOAD_EMULATOR,
        "jitter": JITTER,
        "config": cfg,
        "quick": quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "pinned_cpu": pinned,
            "allowed_cpus": sorted(os.sched_getaffinity(0)),
            "loop_steps": LOOP_STEPS,
            "at_start": snapshot(),
        },
        "clients": {c.key: {"label": c.label, "baseline": c.baseline} for c in SCALE_CLIENTS},
        "phase_s": {},
    }
    logger.info(
        f"machine: loop {out['machine']['at_start']['loop']['wall_s']:.3f} s, load average "
        f"{out['machine']['at_start']['load_average'][0]:.2f}"
        + (f", pinned with the emulator to CPU {pinned}" if pinned is not None else "")
    )
    emu = await start_emulator()
    try:
        await emu.set_latency(speed=CONCURRENCY_SPEED, **LOAD_EMULATOR)
        logger.info("ceiling: every client, level by level")
        ceilings = await run_ceilings(
            emu,
            SCALE_CLIENTS,
            CONCURRENCY_TRACE,
            cfg["levels"],
            tries=cfg["tries"],
            max_failed=cfg["max_failed"],
            time_cap_s=cfg["ceiling_cap_s"],
        )
        for key, ceiling in ceilings["clients"].items():
            out["clients"][key]["ceiling"] = ceiling
        out["machine"]["per_level"] = ceilings["machine"]
        out["phase_s"]["ceiling"] = time.monotonic() - began
        # Memory grows per session with the load (queues fill while the loop lags), so this
        # service and the built-in are also measured at each other's ceiling: side by side at
        # the same N.
        headline = {out["clients"][k]["ceiling"]["ceiling"] for k in ("ours", "builtin")}
        for spec in SCALE_CLIENTS:
            entry = out["clients"][spec.key]
            extra = headline if spec.key in ("ours", "builtin") else set()
            levels = sorted({*cfg["memory_levels"], entry["ceiling"]["ceiling"], *extra} - {0})
            entry["memory"] = []
            for n in levels:
                logger.info(f"memory: {spec.label}, {n} sessions, in a fresh process")
                entry["memory"].append(await memory.measure(spec.key, emu.ws_url, n))
        out["phase_s"]["memory"] = time.monotonic() - began - out["phase_s"]["ceiling"]
        if cfg["extras"]:
            await bench_scale_extras(emu, cfg, out)
    finally:
        await emu.close()
    out["machine"]["at_end"] = snapshot()
    out["runtime_s"] = time.monotonic() - began
    return out


async def bench_scale_extras(emu: EmulatorProcess, cfg: dict[str, Any], out: dict[str, Any]):
    """Barge-ins at 1 and N sessions, and TTFA under network jitter, for every client."""
    began = time.monotonic()
    await emu.set_latency(speed=CONCURRENCY_SPEED, **LOAD_EMULATOR)
    for spec in SCALE_CLIENTS:
        logger.info(f"barge-in, 1 and {cfg['barge_in_load_sessions']} sessions: {spec.label}")
        entry = out["clients"][spec.key]
        entry["barge_in_1"] = await run_barge_in_load(
            emu, spec, CONCURRENCY_TRACE, sessions=1, rounds=cfg["barge_in_one_rounds"]
        )
        entry["barge_in_load"] = await run_barge_in_load(
            emu,
            spec,
            CONCURRENCY_TRACE,
            sessions=cfg["barge_in_load_sessions"],
            spread_s=cfg["barge_in_load_spread_s"],
        )
    out["phase_s"]["barge_in"] = time.monotonic() - began
    for spec in SCALE_CLIENTS:
        logger.info(f"jitter: {spec.label}")
        runs = []
        for seed in cfg["jitter_seeds"]:
            await emu.set_latency(speed=SERIES_SPEED, **(JITTER | {"seed": seed}))
            runs.append(
                await run_jitter_ttfa(
                    emu,
                    spec,
                    STANDARD,
                    sessions=cfg["jitter_sessions"],
                    answers=cfg["jitter_answers"],
                )
            )
        out["clients"][spec.key]["jitter"] = pool_jitter_runs(runs, cfg["jitter_seeds"])


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """Run, print the markdown table, write results.json, results.md and ttfa.png."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="the scale table (ceiling, jittered TTFA, barge-ins under load): scale.md/.json",
    )
    parser.add_argument(
        "--starved",
        action="store_true",
        help="with --scale: this process and the emulator pinned to one CPU; ceiling and memory "
        "only (scale-starved.md/.json)",
    )
    parser.add_argument(
        "--ceiling-only",
        action="store_true",
        help="with --scale: the ceiling and memory only (scale-ceiling.md/.json)",
    )
    parser.add_argument(
        "--levels",
        type=lambda v: [int(x) for x in v.split(",")],
        help="with --scale: the session levels of the ceiling search, e.g. 64,96,128",
    )
    parser.add_argument(
        "--tries",
        type=int,
        help="with --scale: tries per level and client (a level passes when at most 1 of them "
        "has a gap; with fewer than 3 tries, none may)",
    )
    parser.add_argument(
        "--clients",
        type=lambda v: v.split(","),
        help="with --scale: the clients compared, by key (default: "
        + ",".join(c.key for c in SCALE_CLIENTS)
        + f"; also {', '.join(c.key for c in ALL_CLIENTS if c not in SCALE_CLIENTS)})",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="output directory")
    args = parser.parse_args(argv)
    if args.scale:
        cfg = scale_settings(args.quick, args.starved, args.ceiling_only)
        if args.levels:
            cfg["levels"] = args.levels
        if args.clients:
            known = {c.key: c for c in ALL_CLIENTS}
            unknown = [k for k in args.clients if k not in known]
            if unknown or not {"ours", "builtin"} <= set(args.clients):
                parser.error(f"--clients must name ours and builtin among {', '.join(known)}")
            SCALE_CLIENTS[:] = [known[k] for k in args.clients]
        if args.tries:
            cfg["tries"] = args.tries
            cfg["max_failed"] = 1 if args.tries >= 3 else 0
        results = asyncio.run(bench_scale(cfg, args.quick))
        given = sys.argv[1:] if argv is None else argv
        results["command"] = " ".join(["python -m benchmarks.run", *given])
        args.out.mkdir(parents=True, exist_ok=True)
        name = scale_output_name(cfg, args.quick)
        (args.out / f"{name}.json").write_text(json.dumps(_jsonable(results), indent=1))
        markdown = render_scale(results)
        (args.out / f"{name}.md").write_text(markdown)
        print(markdown)
        logger.info(f"wrote {args.out}/{name}.json, {name}.md")
        return 0
    results = asyncio.run(bench(args.quick))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    markdown = render(results)
    (args.out / "results.md").write_text(markdown)
    write_chart(results, args.out / "ttfa.png")
    print(markdown)
    chart = ", ttfa.png" if (args.out / "ttfa.png").exists() else ""
    logger.info(f"wrote {args.out}/results.json, results.md{chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
