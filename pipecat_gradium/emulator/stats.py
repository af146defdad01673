"""What the emulator observed: connections, requests, text received and audio sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestStats:
    """One request (one ``setup``) and everything that happened to it.

    Times are ``time.monotonic()`` values; audio times in ``words`` are seconds from the start
    of the request's audio.

    Attributes:
        voice_id: The voice the setup asked for (``voice_id``, else ``voice``), or None.
        retry_for_s: The setup's ``retry_for_s`` (None when it sent none).
        worker_wait_s: Seconds the setup waited for a worker (None until it got one or gave up).
        stalled_at: When ``Fault.STALL_MID_ANSWER`` stopped the request, or None.
        error: The message of the error that ended the request, or None.
    """

    connection_id: int
    client_req_id: str | None
    setup: dict[str, Any]
    setup_at: float
    texts: list[str] = field(default_factory=list)
    text_times: list[float] = field(default_factory=list)
    eos_at: float | None = None
    ready_at: float | None = None
    first_audio_at: float | None = None
    audio_chunks: list[tuple[float, float]] = field(default_factory=list)
    words: list[tuple[str, float, float]] = field(default_factory=list)
    audio_after_client_gone_s: float = 0.0
    finished: bool = False
    left_open: bool = False
    error: str | None = None
    faults: list[str] = field(default_factory=list)
    voice_id: str | None = None
    retry_for_s: float | None = None
    worker_wait_s: float | None = None
    stalled_at: float | None = None

    @property
    def audio_s(self) -> float:
        """Seconds of audio sent for this request."""
        return sum(d for _, d in self.audio_chunks)

    @property
    def heard_words(self) -> list[str]:
        """The source words whose audio was sent in full (a word cut by a fault is not)."""
        sent = self.audio_s + 1e-6
        return [w for w, _, stop in self.words if stop <= sent]

    @property
    def text(self) -> str:
        """All text received, concatenated as sent."""
        return "".join(self.texts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary.

        Returns:
            The fields, with ``audio_s`` added.
        """
        return {
            "connection_id": self.connection_id,
            "client_req_id": self.client_req_id,
            "setup": self.setup,
            "setup_at": self.setup_at,
            "texts": list(self.texts),
            "text_times": list(self.text_times),
            "eos_at": self.eos_at,
            "ready_at": self.ready_at,
            "first_audio_at": self.first_audio_at,
            "audio_chunks": [list(c) for c in self.audio_chunks],
            "audio_s": self.audio_s,
            "words": [list(w) for w in self.words],
            "heard_words": self.heard_words,
            "faults": list(self.faults),
            "audio_after_client_gone_s": self.audio_after_client_gone_s,
            "finished": self.finished,
            "left_open": self.left_open,
            "error": self.error,
            "voice_id": self.voice_id,
            "retry_for_s": self.retry_for_s,
            "worker_wait_s": self.worker_wait_s,
            "stalled_at": self.stalled_at,
        }


@dataclass
class ConnectionStats:
    """One WebSocket connection (or one refused attempt).

    Attributes:
        closed_by: ``"client"``, ``"server"`` or ``"reset"`` once closed.
        close_code: The close code the server sent (None for a client close or a reset).
        faults: Values of the faults applied to this connection.
        refused: Refused at the HTTP level (503: ``Fault.REFUSE_CONNECTION`` or an outage).
        cap_refused: Closed 1008 for the concurrency cap (at its upgrade when the cap counts
            sockets, at a setup when it counts requests).
    """

    id: int
    opened_at: float
    path: str
    refused: bool = False
    cap_refused: bool = False
    closed_at: float | None = None
    closed_by: str | None = None
    close_code: int | None = None
    faults: list[str] = field(default_factory=list)
    requests: list[RequestStats] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary.

        Returns:
            The fields, requests summarised by index into the top-level request list.
        """
        return {
            "id": self.id,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "closed_by": self.closed_by,
            "close_code": self.close_code,
            "refused": self.refused,
            "cap_refused": self.cap_refused,
            "path": self.path,
            "faults": list(self.faults),
            "client_req_ids": [r.client_req_id for r in self.requests],
        }


@dataclass
class EmulatorStats:
    """Everything the emulator observed since start (or the last reset).

    Attributes:
        connections: Every connection attempt, refused ones included (in order).
        requests: Every setup accepted for validation, refused ones included (in order).
        total_text_messages: Text messages received.
        cap_refusals: Sockets closed 1008 for the concurrency cap.
        peak_sessions: The most sessions (as the cap counts them) in use at once.
        voice_lookups: The voice ids asked of the voice routes ("" for a list), in order.
    """

    connections: list[ConnectionStats] = field(default_factory=list)
    requests: list[RequestStats] = field(default_factory=list)
    total_text_messages: int = 0
    cap_refusals: int = 0
    peak_sessions: int = 0
    voice_lookups: list[str] = field(default_factory=list)
    _event: asyncio.Event | None = field(default=None, repr=False, compare=False)
    _last_connection_id: int = field(default=0, repr=False, compare=False)

    def changed(self) -> None:
        """Wake every :meth:`wait_for` (called by the server on each change)."""
        if self._event is not None:
            self._event.set()
            self._event = None

    def reset(self) -> None:
        """Forget everything observed so far."""
        self.connections.clear()
        self.requests.clear()
        self.total_text_messages = 0
        self.cap_refusals = 0
        self.peak_sessions = 0
        self.voice_lookups.clear()
        self.changed()

    def new_connection(self, path: str, faults: list[str]) -> ConnectionStats:
        """Record a new connection.

        Args:
            path: The request path.
            faults: Values of the faults applied to it.

        Returns:
            Its stats record.
        """
        # Ids keep rising across resets, so they stay unique for one emulator.
        self._last_connection_id += 1
        conn = ConnectionStats(
            id=self._last_connection_id, opened_at=time.monotonic(), path=path, faults=faults
        )
        self.connections.append(conn)
        self.changed()
        return conn

    async def wait_for(
        self, predicate: Callable[[EmulatorStats], bool], timeout: float = 5.0
    ) -> None:
        """Return as soon as ``predicate(stats)`` is true, re-checked on every change.

        Args:
            predicate: The condition to wait for.
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: If the condition is still false after ``timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"emulator stats condition still false after {timeout:.2f} s: "
                    f"{len(self.connections)} connections, {len(self.requests)} requests, "
                    f"{self.total_text_messages} text messages"
                )
            if self._event is None:
                self._event = asyncio.Event()
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except TimeoutError:
                continue

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary of everything observed.

        Returns:
            Connections, requests and totals.
        """
        return {
            "connections": [c.to_dict() for c in self.connections],
            "requests": [r.to_dict() for r in self.requests],
            "total_text_messages": self.total_text_messages,
            "cap_refusals": self.cap_refusals,
            "peak_sessions": self.peak_sessions,
            "voice_lookups": list(self.voice_lookups),
            "total_audio_s": sum(r.audio_s for r in self.requests),
            "audio_after_client_gone_s": sum(r.audio_after_client_gone_s for r in self.requests),
        }
