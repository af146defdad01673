"""Fault injection: the failures a connection can be given, when they fire, and holds for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


class Fault(str, Enum):
    """A failure the emulator injects into a connection.

    Select it for every connection (``GradiumEmulator(faults=...)``), for the next ones
    (``fault_next_connection``) or per connection from outside (``?fault=<value>``).
    """

    REJECT_KEY = "reject_key"
    """Treat the key as wrong: error 1008, then close 1008."""
    ERROR_MID_ANSWER = "error_mid_answer"
    """After ``fault_after_chunks`` audio chunks: error 1011, then close 1011."""
    RESET_MID_ANSWER = "reset_mid_answer"
    """After ``fault_after_chunks`` audio chunks: abrupt TCP reset, no close frame."""
    SESSION_LIMIT = "session_limit"
    """Close (1008, reason "session limit reached") ``session_limit_s`` after the upgrade;
    with ``limit_error_frames``, an error 1008 naming the limit goes first."""
    IDLE_TIMEOUT = "idle_timeout"
    """Close (1008, reason "idle timeout") after ``idle_timeout_s`` without a client message;
    with ``limit_error_frames``, an error 1008 naming the limit goes first."""
    SLOW_FIRST_AUDIO = "slow_first_audio"
    """Add ``slow_first_audio_s`` before each request's first audio."""
    MALFORMED_JSON = "malformed_json"
    """Send a non-JSON text frame after ``fault_after_chunks`` audio chunks, then go on."""
    UNKNOWN_MESSAGES = "unknown_messages"
    """Send ``need_more_text`` after ``ready`` and ``flushed`` after each flush's audio."""
    REFUSE_CONNECTION = "refuse_connection"
    """Refuse at the HTTP level before the upgrade (HTTP 503)."""
    REQUEST_ERROR = "request_error"
    """After ``fault_after_chunks`` audio chunks: error 1011 for that request only; the socket
    stays open when it is multiplexed (Gradium's "terminal for that request only")."""
    RESET_MID_WORD = "reset_mid_word"
    """From ``fault_after_chunks`` audio chunks on: a TCP reset at the first chunk boundary
    that falls inside a word whose timing was already sent."""
    STALL_MID_ANSWER = "stall_mid_answer"
    """After ``fault_after_chunks`` audio chunks the request sends nothing more (no audio, word
    or end_of_stream) while the socket stays open, until the client closes it."""
    NO_WORKER = "no_worker"
    """The setup finds no worker for ``no_worker_s`` from its arrival: it waits up to its
    ``retry_for_s``, then gets error 1011 "no worker available" if the window outlasts it."""

    @property
    def per_request(self) -> bool:
        """Whether the fault acts on one request (so ``fault_next_request`` can target it)."""
        return self in _PER_REQUEST


_PER_REQUEST = frozenset(
    {
        Fault.ERROR_MID_ANSWER,
        Fault.RESET_MID_ANSWER,
        Fault.RESET_MID_WORD,
        Fault.REQUEST_ERROR,
        Fault.SLOW_FIRST_AUDIO,
        Fault.MALFORMED_JSON,
        Fault.STALL_MID_ANSWER,
        Fault.NO_WORKER,
    }
)


def parse_faults(values: Iterable[str]) -> set[Fault]:
    """Parse fault names (enum values or names, any case; comma-separated lists allowed).

    Args:
        values: Strings such as ``"reset_mid_answer"`` or ``"IDLE_TIMEOUT,malformed_json"``.

    Returns:
        The faults.

    Raises:
        ValueError: On an unknown name, listing the valid ones.
    """
    out: set[Fault] = set()
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            try:
                out.add(Fault(name))
            except ValueError:
                valid = ", ".join(f.value for f in Fault)
                raise ValueError(f"unknown fault {part!r}; valid: {valid}") from None
    return out


@dataclass(frozen=True)
class FaultTiming:
    """When the faults fire: the emulator's settings, fixed for a connection's life.

    Attributes:
        after_chunks: Audio chunks a request sends before a mid-answer fault fires.
        slow_first_audio_s: Extra delay ``Fault.SLOW_FIRST_AUDIO`` adds before first audio.
        session_limit_s: Seconds after which ``Fault.SESSION_LIMIT`` closes a connection.
        idle_timeout_s: Seconds without a client message after which ``Fault.IDLE_TIMEOUT``
            closes a connection.
        no_worker_s: How long ``Fault.NO_WORKER`` finds no worker for a setup.
        limit_error_frames: Whether the session and idle limits send an error frame (1008,
            naming the limit) before their close.
    """

    after_chunks: int
    slow_first_audio_s: float
    session_limit_s: float
    idle_timeout_s: float
    no_worker_s: float = 1.0
    limit_error_frames: bool = False


class Hold:
    """Pauses one request after it has sent ``chunks`` audio chunks, until released.

    Attributes:
        chunks: Audio chunks the request sends before pausing.
        client_req_id: Only a request with this id takes the hold (None: the next request).
        reached: Set when the request has sent ``chunks`` chunks and is paused.
    """

    def __init__(self, chunks: int, client_req_id: str | None = None) -> None:
        """Create a hold.

        Args:
            chunks: Audio chunks to send before pausing.
            client_req_id: The request id to match, or None for the next request.
        """
        self.chunks = chunks
        self.client_req_id = client_req_id
        self.reached = asyncio.Event()
        self._released = asyncio.Event()

    def release(self) -> None:
        """Let the held request continue."""
        self._released.set()

    @property
    def released(self) -> bool:
        """True once :meth:`release` was called."""
        return self._released.is_set()

    async def wait_released(self) -> None:
        """Wait until :meth:`release` is called."""
        await self._released.wait()
