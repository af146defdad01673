"""The account behind the API key: its concurrency cap, its voices, and whether a worker is free.

A bare emulator has no account (no cap, any voice, a worker always free); each limit here is
off until a :class:`~pipecat_gradium.emulator.GradiumEmulator` option turns it on.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Collection
from typing import Any, Literal

#: What counts toward the concurrency cap: open sockets, or requests set up (and not ended).
CapCounts = Literal["sockets", "requests"]
CAP_COUNTS: tuple[CapCounts, ...] = ("sockets", "requests")

#: The voices the voice routes know when no catalogue is given: the project's default voice
#: and the default of Pipecat's built-in Gradium service (both public catalogue voices).
DEFAULT_VOICES: dict[str, str] = {
    "YTpq7expH9539ERJ": "Emulated catalogue voice (the service's default)",
    "_6Aslh2DxfmnRLmP": "Emulated catalogue voice (Pipecat's built-in default)",
}


def concurrency_message(max_sessions: int) -> str:
    """The error message of a refusal for the cap.

    Args:
        max_sessions: The cap.

    Returns:
        The message, e.g. "Concurrency limit exceeded: 2 concurrent sessions allowed".
    """
    plural = "" if max_sessions == 1 else "s"
    return f"Concurrency limit exceeded: {max_sessions} concurrent session{plural} allowed"


class Slot:
    """One place under the concurrency cap, held by a socket or a request until released."""

    def __init__(self, account: Account) -> None:
        """Take the place (the account counts it in use).

        Args:
            account: The account it counts against.
        """
        self._account: Account | None = account
        account.in_use += 1

    def release(self) -> None:
        """Give the place back; later calls do nothing."""
        if self._account is not None:
            self._account.in_use -= 1
            self._account = None


class Account:
    """An account's limits and voices.

    Args:
        max_sessions: Concurrent sessions allowed (None: no cap).
        cap_counts: What a session is: an open socket, or a request set up on one.
        voices: The voice ids a setup may use (None: any id).
        voice_check_s: How long after a setup with an unknown voice its error comes.
    """

    def __init__(
        self,
        *,
        max_sessions: int | None = None,
        cap_counts: CapCounts = "sockets",
        voices: Collection[str] | None = None,
        voice_check_s: float = 0.3,
    ) -> None:
        """Set the limits (all off by default)."""
        if max_sessions is not None and max_sessions < 0:
            raise ValueError(f"max_sessions must be >= 0, not {max_sessions}")
        if cap_counts not in CAP_COUNTS:
            raise ValueError(f"cap_counts must be one of {', '.join(CAP_COUNTS)}: {cap_counts!r}")
        if voice_check_s < 0:
            raise ValueError(f"voice_check_s must be >= 0, not {voice_check_s}")
        self.max_sessions = max_sessions
        self.cap_counts: CapCounts = cap_counts
        self.voices = frozenset(voices) if voices is not None else None
        self.voice_check_s = voice_check_s
        self.in_use = 0
        self._no_workers_until = -math.inf  # loop time; inf: until workers_back()
        self._workers_changed = asyncio.Event()

    # --- the concurrency cap ------------------------------------------------------------

    def take_slot(self) -> Slot | None:
        """A place under the cap, or None when the cap is reached.

        Returns:
            The slot, to release when the session ends.
        """
        if self.max_sessions is not None and self.in_use >= self.max_sessions:
            return None
        return Slot(self)

    # --- voices -------------------------------------------------------------------------

    def knows_voice(self, voice_id: str) -> bool:
        """Whether a setup may use this voice (every id, when there is no catalogue)."""
        return self.voices is None or voice_id in self.voices

    def listed_voices(self) -> list[str]:
        """The voice ids the list route returns: the catalogue, or :data:`DEFAULT_VOICES`."""
        return sorted(self.voices) if self.voices is not None else list(DEFAULT_VOICES)

    def voice_record(self, voice_id: str) -> dict[str, Any]:
        """The record the voice routes return for a known voice (Gradium's ``APIVoiceResponse``).

        Args:
            voice_id: The voice's uid.

        Returns:
            ``uid``, ``name``, ``description``, ``filename``, ``start_s``, ``is_catalog``,
            ``is_pro_clone``, ``language`` and ``tags``. Ids in :data:`DEFAULT_VOICES` are
            catalogue voices; others are the account's own (custom) voices.
        """
        catalog = voice_id in DEFAULT_VOICES
        return {
            "uid": voice_id,
            "name": f"Emulator voice {voice_id}",
            "description": DEFAULT_VOICES.get(voice_id, "Emulated custom voice"),
            "filename": None,
            "start_s": None,
            "is_catalog": catalog,
            "is_pro_clone": False,
            "language": "en",
            "tags": [],
        }

    # --- workers ------------------------------------------------------------------------

    def no_workers_for(self, seconds: float | None) -> None:
        """Find no worker for any setup for ``seconds`` from now (None: until workers_back).

        Args:
            seconds: The window's length.
        """
        now = asyncio.get_running_loop().time()
        self._no_workers_until = math.inf if seconds is None else now + seconds
        self._wake()

    def workers_back(self) -> None:
        """End a window of :meth:`no_workers_for` now."""
        self._no_workers_until = -math.inf
        self._wake()

    def _wake(self) -> None:
        self._workers_changed.set()
        self._workers_changed = asyncio.Event()

    async def wait_for_worker(self, retry_for_s: float, busy_until: float | None = None) -> bool:
        """Wait up to ``retry_for_s`` for a worker.

        Args:
            retry_for_s: The setup's retry window (0: no wait).
            busy_until: Loop time until which this setup finds no worker whatever the window
                of :meth:`no_workers_for` (a fault of its own), or None.

        Returns:
            True when a worker is free within the window, False when none is.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_for_s
        while True:
            until = max(self._no_workers_until, busy_until if busy_until is not None else -1.0)
            now = loop.time()
            if now >= until:
                return True
            if now >= deadline:
                return False
            event = self._workers_changed
            try:
                await asyncio.wait_for(event.wait(), min(until, deadline) - now)
            except TimeoutError:
                pass
