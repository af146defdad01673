"""Recovery from faults: continuation, slow starts, outages and failure accounting.

What users feel under a fault is decided here, not in the Pipecat glue:

* a request cut by a lost socket or a request error goes on as a *continuation* (a new
  ``client_req_id`` re-sending the unheard text), a bounded number of times per answer;
* a slow first audio is waited for up to a stated limit, the answer's audio context kept open
  meanwhile (Pipecat would otherwise close it after ``stop_frame_timeout_s``);
* connection failures are counted per answer that needed a socket, and while Gradium is
  unreachable a background prober retries with capped exponential back-off, so the service
  comes back by itself once Gradium answers again.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from loguru import logger

from pipecat_gradium.connection import TaskOwner
from pipecat_gradium.requests import GradiumRequest

#: Requests per answer: the first, then continuations after a lost socket or request error.
MAX_ATTEMPTS = 3
#: Answers in a row that could not get a socket before the service reports itself unusable.
MAX_CONNECT_FAILURES = 3


def continuation_id(context_id: str, attempt: int) -> str:
    """The ``client_req_id`` of an answer's ``attempt``-th request: never reused in a call.

    Args:
        context_id: The answer's Pipecat context id.
        attempt: 1 for the first request, 2 for the first continuation...

    Returns:
        ``context_id`` itself, then ``<context_id>#2``, ``#3``...
    """
    return context_id if attempt == 1 else f"{context_id}#{attempt}"


def context_of(client_req_id: str) -> str:
    """The Pipecat context id a ``client_req_id`` speaks for (inverse of continuation_id)."""
    return client_req_id.partition("#")[0]


def mask_secrets(text: str, url: str) -> str:
    """Hide every query-string value of ``url`` (a key or token put there) inside ``text``.

    Args:
        text: An error message or log line that may quote the URL or its parts.
        url: The service's URL.

    Returns:
        ``text`` with each query value replaced by ``***``.
    """
    for _, value in parse_qsl(urlsplit(url).query, keep_blank_values=False):
        if len(value) >= 3:
            text = text.replace(value, "***")
    return text


@dataclass
class Backoff:
    """Capped exponential back-off between probes of an unreachable Gradium.

    Parameters:
        initial_s: The first wait.
        max_s: The longest wait (the bound on how late recovery is noticed).
        factor: Growth per failed probe.
    """

    initial_s: float = 0.5
    max_s: float = 15.0
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        """Yield the waits before each probe, forever."""
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_s)


class ConnectFailures:
    """Answers in a row that needed a socket and could not get one.

    The start-up connection does not count (no answer needed it); an answer counts once,
    however many of its phrases found no socket.
    """

    def __init__(self, limit: int = MAX_CONNECT_FAILURES):
        """Count up to ``limit``.

        Args:
            limit: Answers in a row after which the service reports itself unusable.
        """
        self.limit = limit
        self.count = 0
        self._last_context: str | None = None

    def record(self, context_id: str) -> bool:
        """Count an answer that could not get a socket.

        Args:
            context_id: The answer.

        Returns:
            Whether this answer was new (a second failure of one answer is not counted).
        """
        if context_id == self._last_context:
            return False
        self._last_context = context_id
        self.count += 1
        return True

    @property
    def exhausted(self) -> bool:
        """Whether ``limit`` answers in a row failed."""
        return self.count >= self.limit

    def reset(self) -> None:
        """A socket was obtained: the run of failures is over."""
        self.count = 0
        self._last_context = None


class OutageProber:
    """Probes Gradium in the background with capped exponential back-off while it is down.

    An answer that needs a socket during an outage makes one attempt through
    :meth:`try_now` (shared with a probe already in flight), so it fails at once or speaks; the
    prober keeps going after the service has reported itself unusable, and calls
    ``on_recovered`` once a connection succeeds.
    """

    def __init__(
        self,
        *,
        owner: TaskOwner,
        probe: Callable[[], Awaitable[None]],
        on_recovered: Callable[[], Awaitable[None]],
        backoff: Backoff,
    ):
        """Create an idle prober.

        Args:
            owner: Runs and cancels the probing task (the service).
            probe: One connection attempt; raises on failure.
            on_recovered: Called once when a probe (or an answer's attempt) succeeds.
            backoff: The waits between probes.
        """
        self._owner = owner
        self._probe = probe
        self._on_recovered = on_recovered
        self._backoff = backoff
        self._down = False
        self._abandoned = False
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self.down_since: float | None = None
        self.last_error: Exception | None = None
        self.probes = 0

    @property
    def down(self) -> bool:
        """Whether Gradium is considered unreachable."""
        return self._down

    def start(self) -> None:
        """Gradium could not be reached: probe in the background until it answers."""
        if self._abandoned:
            return
        if not self._down:
            self._down = True
            self.down_since = time.monotonic()
        if self._task is None or self._task.done():
            self._task = self._owner.create_task(self._run(), name="gradium-outage-probe")

    async def try_now(self) -> None:
        """One attempt now, for an answer that needs a socket (or the result of one in flight).

        Raises:
            Exception: Why Gradium is still unreachable.
        """
        if self._down and not await self._attempt():
            raise self.last_error or ConnectionError("Gradium is unreachable")

    def abandon(self) -> None:
        """Stop probing for good (a rejected key: retrying cannot help)."""
        self._abandoned = True
        self._down = False
        if self._task and self._task is not asyncio.current_task():
            self._task.cancel()

    async def stop(self) -> None:
        """Stop the probing task (pipeline stop or cancel)."""
        if self._task and self._task is not asyncio.current_task():
            await self._owner.cancel_task(self._task)
        self._task = None

    async def _run(self) -> None:
        for delay in self._backoff.delays():
            await asyncio.sleep(delay)
            if not self._down or self._abandoned or await self._attempt():
                return

    async def _attempt(self) -> bool:
        was_probes = self.probes
        async with self._lock:
            if not self._down or self._abandoned:
                return not self._down
            if self.probes != was_probes:
                return False  # an attempt finished while this one waited: same outcome
            self.probes += 1
            try:
                await self._probe()
            except Exception as e:
                self.last_error = e
                logger.debug(f"Gradium: still unreachable (probe {self.probes}): {e}")
                return False
            if self._abandoned:
                return False
            down_s = time.monotonic() - (self.down_since or time.monotonic())
            self._down = False
            self.down_since = None
        logger.info(f"Gradium reachable again after {down_s:.1f} s ({self.probes} attempts)")
        self.probes = 0
        await self._on_recovered()
        return True


class AnswerWatch:
    """Keeps one answer's audio context open while Gradium owes it audio, within a limit.

    Pipecat closes an audio context after ``stop_frame_timeout_s`` without an item; a cold
    start, an LLM pause or a continuation's reconnect can take longer. The watch refreshes the
    context for as long as the answer has a live request, and calls ``on_overdue`` when audio
    owed (text flushed or ended) has not come within ``limit_s``.
    """

    def __init__(
        self,
        *,
        owner: TaskOwner,
        current: Callable[[], GradiumRequest | None],
        keepalive: Callable[[], None],
        on_overdue: Callable[[GradiumRequest, float], Awaitable[None]],
        keepalive_s: float,
        limit_s: float,
    ):
        """Start watching.

        Args:
            owner: Runs and cancels the task (the service).
            current: The answer's live request, or None once the answer is over.
            keepalive: Refreshes the answer's audio context.
            on_overdue: Called once with the request and the seconds waited.
            keepalive_s: Interval between refreshes (under ``stop_frame_timeout_s``).
            limit_s: Longest wait for owed audio.
        """
        self._current = current
        self._keepalive = keepalive
        self._on_overdue = on_overdue
        self._keepalive_s = keepalive_s
        self._limit_s = limit_s
        self._owner = owner
        self.task = owner.create_task(self._run(), name="gradium-answer-watch")

    async def stop(self) -> None:
        """Stop watching."""
        if self.task is not asyncio.current_task():
            await self._owner.cancel_task(self.task)

    async def _run(self) -> None:
        while (req := self._current()) is not None:
            now = time.monotonic()
            wake = now + self._keepalive_s
            owed = req.audio_owed_since()
            if owed is not None:
                waited = now - owed
                if waited >= self._limit_s:
                    await self._on_overdue(req, waited)
                    return
                wake = min(wake, owed + self._limit_s)
            self._keepalive()
            await asyncio.sleep(max(wake - time.monotonic(), 0.001))
