"""Run every benchmark and write the table, the JSON and the chart.

Usage::

    python -m benchmarks.run            # the full run (about 8 minutes on 2 cores)
    python -m benchmarks.run --quick    # a smoke run (about 2 minutes)
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

from benchmarks.clients import CLIENTS, FIRST_CHUNK_SWEEP  # noqa: E402
from benchmarks.emulator import LATENCY_MODEL, start_emulator  # noqa: E402
from benchmarks.measure import run_barge_in, run_concurrency, run_series  # noqa: E402
from benchmarks.report import render, write_chart  # noqa: E402
from benchmarks.traces import ANSWER_FIRST_6, ANSWER_FIRST_20, STANDARD, TRACES, Trace  # noqa: E402

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
#: Concurrency sessions speak one 20-word sentence each (about 7 s of audio).
CONCURRENCY_TRACE = Trace("20-word sentence", ANSWER_FIRST_20.split(". ")[0] + ".", 33.0)


def settings(quick: bool) -> dict[str, Any]:
    """Answer counts and levels for a full or a quick run."""
    if quick:
        return {
            "standard_answers": 3,
            "other_answers": 0,
            "sweep_answers": 0,
            "barge_in_rounds": 1,
            "barge_in_whole_rounds": 1,
            "concurrency_levels": [4],
            "concurrency_cap_s": 10.0,
        }
    return {
        "standard_answers": 8,
        "other_answers": 2,
        "sweep_answers": 3,
        "barge_in_rounds": 3,
        "barge_in_whole_rounds": 2,
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
    parser.add_argument("--out", type=Path, default=RESULTS, help="output directory")
    args = parser.parse_args(argv)
    results = asyncio.run(bench(args.quick))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    markdown = render(results)
    (args.out / "results.md").write_text(markdown)
    write_chart(results, args.out / "ttfa.png")
    print(markdown)
    logger.info(f"wrote {args.out}/results.json, results.md, ttfa.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
