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

from .account import CAP_COUNTS, DEFAULT_VOICES
from .faults import Fault, parse_faults
from .latency import LatencyModel
from .server import GradiumEmulator
from .voice import VoiceUnavailableError, ensure_available

#: One line per fault, for ``--help``.
FAULT_HELP: dict[Fault, str] = {
    Fault.REJECT_KEY: "the key is wrong: error 1008, then close 1008",
    Fault.ERROR_MID_ANSWER: "after --fault-after-chunks audio chunks: error 1011, then close",
    Fault.RESET_MID_ANSWER: "after --fault-after-chunks audio chunks: TCP reset, no close frame",
    Fault.SESSION_LIMIT: "close 1008 'session limit reached' --session-limit-s after connecting",
    Fault.IDLE_TIMEOUT: "close 1008 'idle timeout' after --idle-timeout-s with no client message",
    Fault.SLOW_FIRST_AUDIO: "each request's first audio --slow-first-audio-s later",
    Fault.MALFORMED_JSON: "a non-JSON text frame after --fault-after-chunks chunks, then go on",
    Fault.UNKNOWN_MESSAGES: "send need_more_text after ready and flushed after each flush",
    Fault.REFUSE_CONNECTION: "refuse the WebSocket upgrade with HTTP 503",
    Fault.REQUEST_ERROR: "after --fault-after-chunks chunks: error 1011 for that request only",
    Fault.RESET_MID_WORD: "from --fault-after-chunks chunks on: TCP reset inside a timed word",
    Fault.STALL_MID_ANSWER: "after --fault-after-chunks chunks: nothing more, the socket left open",
    Fault.NO_WORKER: "no worker for --no-worker-s after each setup; retry_for_s waits for one",
}

INSTALL_HINT = (
    "pip install 'pipecat-gradium[emulator]' (from a clone: pip install -e '.[emulator]')"
)


#: The latency model's options, in ``--help`` order: the field and what it means. A field in
#: seconds (``*_s``) is given in milliseconds (``--handshake-ms``).
LATENCY_OPTIONS: tuple[tuple[str, str], ...] = (
    ("handshake_s", "milliseconds before the WebSocket upgrade completes"),
    ("handshake_jitter_s", "the handshake varies uniformly by +/- this many ms"),
    ("setup_s", "milliseconds from setup received to ready sent"),
    ("model_delay_s", "milliseconds from a request's first speakable word to its first audio"),
    ("lookahead_words", "complete words held until more text, <flush> or end_of_stream"),
    ("speed", "generation speed, multiple of real time"),
    ("net_delay_s", "network model: mean one-way delay of every message, ms"),
    ("net_jitter_s", "each message's delay varies uniformly by +/- this many ms"),
    ("stall_probability", "chance, 0 to 1, that a message also stalls"),
    ("stall_s", "length of a stall, ms"),
    ("seed", "seed of every random draw"),
)


def _latency_flag(name: str) -> tuple[str, bool]:
    """A latency field's option, and whether it is given in milliseconds."""
    if name.endswith("_s"):
        return f"--{name[:-2].replace('_', '-')}-ms", True
    return f"--{name.replace('_', '-')}", False


def _fault_lines() -> str:
    width = max(len(f.value) for f in Fault)
    return "\n".join(
        f"  {f.value:<{width}}  {FAULT_HELP.get(f, f.name.lower().replace('_', ' '))}"
        for f in Fault
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line options, each with its unit and default.

    Returns:
        The parser.
    """
    d = LatencyModel()
    p = argparse.ArgumentParser(
        prog="python -m pipecat_gradium.emulator",
        description=(
            "A local Gradium TTS WebSocket server with an eSpeak NG voice.\n"
            "Prints ws_url=... and base_url=..., then a log line per request; Ctrl-C stops it.\n"
            "Control routes: GET /_emulator/stats, POST /_emulator/reset, POST /_emulator/latency"
            ' (JSON latency fields),\nPOST /_emulator/no_workers ({"seconds": S}: no worker'
            ' for S s; null: until {"seconds": 0}).\n'
            "Voice routes (the gradium SDK's voice_get / voice_list): GET /api/voices/[ID]."
        ),
        epilog="faults (--fault NAME, or ?fault=NAME on one connection's URL):\n" + _fault_lines(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    add(
        "--port", type=int, default=8765, help="TCP port, 0 picks a free one (default: %(default)s)"
    )
    add("--api-key", default="test-key", help="the key clients must send (default: %(default)s)")
    latency = p.add_argument_group("latency model")
    for name, text in LATENCY_OPTIONS:
        flag, ms = _latency_flag(name)
        default = getattr(d, name)
        latency.add_argument(
            flag,
            type=float if ms else type(default),
            default=default * 1000 if ms else default,
            help=f"{text} (default: %(default)g)",
        )
    latency.add_argument(
        "--voice-cache",
        action="store_true",
        help="synthesize each word once and reuse it, for load runs (default: off)",
    )
    faults = p.add_argument_group("faults")
    flt = faults.add_argument
    flt(
        "--fault",
        action="append",
        default=[],
        metavar="NAME",
        help="a fault for every connection; repeatable or comma-separated (default: none)",
    )
    flt(
        "--fault-after-chunks",
        type=int,
        default=3,
        help="audio chunks a request sends before a mid-answer fault (default: %(default)s)",
    )
    flt(
        "--session-limit-s",
        type=float,
        default=300.0,
        help="seconds after connecting that session_limit closes (default: %(default)g)",
    )
    flt(
        "--idle-timeout-s",
        type=float,
        default=180.0,
        help="seconds without a client message that idle_timeout waits (default: %(default)g)",
    )
    flt(
        "--slow-first-audio-s",
        type=float,
        default=2.0,
        help="seconds slow_first_audio adds before first audio (default: %(default)g)",
    )
    flt(
        "--no-worker-s",
        type=float,
        default=1.0,
        help="seconds no_worker finds no worker after a setup (default: %(default)g)",
    )
    flt(
        "--limit-error-frames",
        action="store_true",
        help="idle_timeout and session_limit send error 1008 naming the limit before their "
        "close 1008, as Gradium does (default: off, the close alone)",
    )
    account = p.add_argument_group("the account")
    acc = account.add_argument
    acc(
        "--max-sessions",
        type=int,
        default=None,
        help="concurrent sessions allowed; over it: error 1008 'Concurrency limit exceeded', "
        "close 1008 (default: no cap)",
    )
    acc(
        "--cap-counts",
        choices=CAP_COUNTS,
        default="sockets",
        help="what a session is: an open socket, or a request set up (default: %(default)s)",
    )
    acc(
        "--voice",
        action="append",
        default=None,
        metavar="ID",
        help="a voice id of the catalogue; repeatable or comma-separated; an unknown voice_id "
        "gets error 1011 'voice not found: ID', then close 1011 (default: any voice id; "
        f"the voice list route lists {', '.join(DEFAULT_VOICES)})",
    )
    acc(
        "--voice-check-s",
        type=float,
        default=0.3,
        help="seconds from a setup with an unknown voice to its error (default: %(default)g)",
    )
    return p


def voices_from(args: argparse.Namespace) -> list[str] | None:
    """The voice catalogue the options describe.

    Args:
        args: Parsed command-line options.

    Returns:
        The voice ids, or None when no ``--voice`` was given (every id accepted).
    """
    if args.voice is None:
        return None
    return [v.strip() for value in args.voice for v in value.split(",") if v.strip()]


def latency_from(args: argparse.Namespace) -> LatencyModel:
    """The latency model the options describe.

    Args:
        args: Parsed command-line options.

    Returns:
        The model.

    Raises:
        ValueError: If a value is out of range.
    """
    values = {}
    for name, _ in LATENCY_OPTIONS:
        flag, ms = _latency_flag(name)
        value = getattr(args, flag[2:].replace("-", "_"))
        values[name] = value / 1000 if ms else value
    return LatencyModel(**values, voice_cache=args.voice_cache)


async def run(args: argparse.Namespace) -> None:
    """Serve until interrupted.

    Args:
        args: Parsed command-line options.
    """
    latency = latency_from(args)
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
        no_worker_s=args.no_worker_s,
        limit_error_frames=args.limit_error_frames,
        max_sessions=args.max_sessions,
        cap_counts=args.cap_counts,
        voices=voices_from(args),
        voice_check_s=args.voice_check_s,
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
        latency_from(args)  # validates the values before anything starts
        if args.max_sessions is not None and args.max_sessions < 0:
            raise ValueError(f"--max-sessions must be >= 0, not {args.max_sessions}")
        if args.voice_check_s < 0 or args.no_worker_s < 0:
            raise ValueError("--voice-check-s and --no-worker-s must be >= 0")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        ensure_available()
    except VoiceUnavailableError:
        # One line, no traceback: the fix is an install.
        print(
            f"error: the emulator's voice (eSpeak NG) is not installed: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 1
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
