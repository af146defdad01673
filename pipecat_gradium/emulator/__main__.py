"""Run the Gradium emulator from a shell: ``python -m pipecat_gradium.emulator --port 8765``.

The first line printed is ``ws_url=...`` and the second ``base_url=...`` (stdout is flushed so a
parent process can read them), then a log line per request on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from .faults import parse_faults
from .latency import LatencyModel
from .server import GradiumEmulator


def build_parser() -> argparse.ArgumentParser:
    """The command-line options.

    Returns:
        The parser.
    """
    d = LatencyModel()
    p = argparse.ArgumentParser(
        prog="python -m pipecat_gradium.emulator",
        description="A local Gradium TTS WebSocket server with an eSpeak NG voice.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--handshake-ms", type=float, default=d.handshake_s * 1000)
    p.add_argument("--setup-ms", type=float, default=d.setup_s * 1000)
    p.add_argument("--model-delay-ms", type=float, default=d.model_delay_s * 1000)
    p.add_argument("--lookahead-words", type=int, default=d.lookahead_words)
    p.add_argument("--speed", type=float, default=d.speed)
    p.add_argument(
        "--fault", action="append", default=[], help="a fault for every connection (repeatable)"
    )
    p.add_argument("--session-limit-s", type=float, default=300.0)
    p.add_argument("--idle-timeout-s", type=float, default=180.0)
    p.add_argument("--fault-after-chunks", type=int, default=3)
    p.add_argument("--slow-first-audio-s", type=float, default=2.0)
    return p


async def run(args: argparse.Namespace) -> None:
    """Serve until interrupted.

    Args:
        args: Parsed command-line options.
    """
    latency = LatencyModel(
        handshake_s=args.handshake_ms / 1000,
        setup_s=args.setup_ms / 1000,
        model_delay_s=args.model_delay_ms / 1000,
        lookahead_words=args.lookahead_words,
        speed=args.speed,
    )
    emu = GradiumEmulator(
        args.api_key,
        host=args.host,
        port=args.port,
        latency=latency,
        faults=parse_faults(args.fault),
        session_limit_s=args.session_limit_s,
        idle_timeout_s=args.idle_timeout_s,
        fault_after_chunks=args.fault_after_chunks,
        slow_first_audio_s=args.slow_first_audio_s,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with emu:
        print(f"ws_url={emu.ws_url}", flush=True)
        print(f"base_url={emu.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point.

    Args:
        argv: Arguments (None: ``sys.argv``).

    Returns:
        The exit status.
    """
    args = build_parser().parse_args(argv)
    try:
        parse_faults(args.fault)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
