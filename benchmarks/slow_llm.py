"""An LLM about as fast as speech: the silences a listener hears, per client.

Usage::

    python -m benchmarks.slow_llm            # about 4 minutes; prints the table

A local or overloaded model can stream at a few tokens a second, about the pace of speech (some
2.5-3 words, 3.5-4 tokens, a second). Then the text, not the synthesis, sets the pace, and what
matters is how the client hands over what it has: whole sentences (the built-in's default), or
phrases whose last words Gradium holds back to read ahead. Each client speaks the standard
40-word answer at 4, 6 and 10 tokens per second, one session, against the emulator process with
the benchmarks' latency model; the listener plays audio at real time from the first frame and
waits whenever the next frame is not there yet. Per client and pace: time to first audio, the
silences longer than 100 ms after the first audio and their total (medians over the answers).
``ours_no_lowbuf`` is this service with ``Tuning(low_buffer_flush_s=0)``.
"""

import sys

from loguru import logger

logger.remove()
logger.add(sys.stderr, level="WARNING", filter=lambda r: r["name"].startswith("benchmarks"))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import statistics  # noqa: E402
from dataclasses import replace  # noqa: E402

from benchmarks.clients import client_by_key  # noqa: E402
from benchmarks.emulator import start_emulator  # noqa: E402
from benchmarks.measure import Session, silences  # noqa: E402
from benchmarks.traces import STANDARD  # noqa: E402

PACES = (4.0, 6.0, 10.0)
CLIENT_KEYS = ("ours", "ours_no_lowbuf", "builtin")
#: A wait for audio shorter than this is not heard as a gap.
GAP_S = 0.1


async def run(answers: int) -> list[dict[str, object]]:
    """Every client at every pace, ``answers`` answers each, one session per client and pace."""
    emu = await start_emulator()
    rows: list[dict[str, object]] = []
    try:
        for pace in PACES:
            trace = replace(STANDARD, name=f"{pace:g} tok/s", tokens_per_s=pace)
            for key in CLIENT_KEYS:
                session = await Session.start(client_by_key(key), emu.ws_url)
                ttfas: list[float] = []
                gaps: list[int] = []
                silent: list[float] = []
                try:
                    for _ in range(answers):
                        answer = await session.speak(trace)
                        waits = silences(session.audio_arrivals.get(answer.context_id or "", []))
                        if answer.ttfa is not None:
                            ttfas.append(answer.ttfa)
                        gaps.append(sum(1 for w in waits if w > GAP_S))
                        silent.append(sum(w for w in waits if w > GAP_S))
                finally:
                    await session.stop()
                rows.append(
                    {
                        "pace": pace,
                        "client": key,
                        "ttfa_ms": 1000 * statistics.median(ttfas) if ttfas else None,
                        "gaps": statistics.median(gaps),
                        "silence_s": statistics.median(silent),
                    }
                )
                logger.warning(f"{key} at {pace:g} tok/s: {rows[-1]}")
    finally:
        await emu.close()
    return rows


def table(rows: list[dict[str, object]]) -> str:
    """The rows as a Markdown table, one line per pace and client."""
    lines = [
        "| LLM pace | client | TTFA median (ms) | gaps > 100 ms per answer | silence per answer (s) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ttfa = r["ttfa_ms"]
        lines.append(
            f"| {r['pace']:g} tok/s | {r['client']} | "
            f"{'n/a' if ttfa is None else f'{ttfa:.0f}'} | {r['gaps']:g} | {r['silence_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.slow_llm")
    parser.add_argument("--answers", type=int, default=2, help="answers per client and pace")
    args = parser.parse_args(argv)
    print(table(asyncio.run(run(args.answers))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
