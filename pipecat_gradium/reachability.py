"""Whether Gradium can be reached: outage probing, answers that got no socket, a rejected key.

Everything here decides and returns; nothing reports. The service turns a :class:`Verdict` into
one ``ErrorFrame`` and its events, so every error the user sees is written in one place.

* An answer that needs a socket during an outage makes one attempt (shared with a probe in
  flight), so it fails at once or speaks; a background prober retries with capped exponential
  back-off and calls back once Gradium answers again.
* Answers in a row that could not get a socket are counted: after :data:`MAX_CONNECT_FAILURES`
  the service reports itself unusable (so Pipecat's ``ServiceSwitcher`` can fail over), and
  comes back by itself when a probe succeeds.
* A rejected key (HTTP 401/403 at the handshake, or an auth error from Gradium) is the only
  permanent fault: probing stops for good.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loguru import logger
from pipecat.utils.network import exponential_backoff_time
from websockets.exceptions import InvalidStatus

from pipecat_gradium.sockets import TaskOwner

#: Answers in a row that could not get a socket before the service reports itself unusable.
MAX_CONNECT_FAILURES = 3


def rejected_key_status(e: Exception) -> int | None:
    """The HTTP status when a handshake failed because Gradium rejected the key, else None.

    Args:
        e: What a connection attempt raised.

    Returns:
        401 or 403, or None.
    """
    if isinstance(e, InvalidStatus) and e.response.status_code in (401, 403):
        return e.response.status_code
    return None


@dataclass(frozen=True)
class Verdict:
    """What a failed connection means for the user.

    Parameters:
        tail: How the message reporting it ends (what happens next).
        permanent: The service now reports itself unusable.
    """

    tail: str
    permanent: bool


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
        backoff_s: float,
        backoff_max_s: float,
    ):
        """Create an idle prober.

        Args:
            owner: Runs and cancels the probing task (the service).
            probe: One connection attempt; raises on failure.
            on_recovered: Called once when a probe (or an answer's attempt) succeeds.
            backoff_s: The first wait between probes; it doubles after each failed probe.
            backoff_max_s: The longest wait (the bound on how late recovery is noticed).
        """
        self._owner = owner
        self._probe = probe
        self._on_recovered = on_recovered
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
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

    def _delay(self, attempt: int) -> float:
        return exponential_backoff_time(
            attempt,
            min_wait=self._backoff_s,
            max_wait=self._backoff_max_s,
            multiplier=self._backoff_s,
        )

    async def _run(self) -> None:
        attempt = 0
        while True:
            attempt += 1
            await asyncio.sleep(self._delay(attempt))
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


class Reachability:
    """The service's view of whether Gradium can be reached, and what each failure means.

    Attributes:
        prober: Probes Gradium while it is down.
        failures: Answers in a row that got no socket.
        key_rejected: Gradium rejected the key: the only permanent fault.
    """

    def __init__(self, prober: OutageProber):
        """Create the state of one service.

        Args:
            prober: Probes Gradium while it is down; its ``on_recovered`` is the service's,
                which calls :meth:`connected`.
        """
        self.failures = ConnectFailures()
        self.key_rejected = False
        self.prober = prober

    async def before_connect(self) -> None:
        """During an outage, one attempt now (shared with a probe in flight).

        Raises:
            Exception: Why Gradium is still unreachable.
        """
        await self.prober.try_now()

    def connected(self) -> None:
        """A socket was had (an answer's, or a probe's): the run of failures is over."""
        self.failures.reset()

    def reject_key(self) -> bool:
        """Latch a rejected key and stop probing.

        Returns:
            Whether this is the first rejection (the caller reports it once).
        """
        if self.key_rejected:
            return False
        self.key_rejected = True
        self.prober.abandon()
        return True

    def connect_failed(self, context_id: str | None, *, usable: bool) -> Verdict:
        """A connection failed (not for a rejected key): probe, count, decide what to say.

        Args:
            context_id: The answer that needed the socket (None: the start-up connection).
            usable: Whether the service reports itself usable now.

        Returns:
            How the report ends and whether the service now reports itself unusable.
        """
        self.prober.start()
        if context_id is None:
            return Verdict("; probing in the background", permanent=False)
        counted = self.failures.record(context_id)
        if counted and self.failures.exhausted and usable:
            return Verdict(
                f"; {self.failures.count} answers in a row could not be spoken: the service "
                "reports itself unusable, and returns by itself when Gradium answers again",
                permanent=True,
            )
        return Verdict("; this answer is not spoken, Gradium is probed in the background", False)

    def continuation_failed(self, context_id: str) -> None:
        """A continuation got no socket (its fault is already reported): count it and probe.

        Args:
            context_id: The answer.
        """
        self.failures.record(context_id)
        self.prober.start()

    async def stop(self) -> None:
        """Stop probing (pipeline stop or cancel)."""
        await self.prober.stop()
