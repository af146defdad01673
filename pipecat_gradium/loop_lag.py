"""How late the event loop runs: one cheap timer per loop, shared by every service on it.

With many bots in one process (or one bot on a fraction of a CPU), Pipecat turns every LLM token
into several frames and messages, and while the tokens of many answers stream at once one turn
of the event loop can take 100-500 ms. An answer that starts speaking inside that burst has its
next phrases reach Gradium, and their audio reach the pipeline, while the loop is slowest, and
the listener hears a gap. While the loop is *loaded*, the service lets an answer's first phrase
wait for more words: its audio then covers the burst (first audio comes a little later, the
audio after it without gaps).

The loop is loaded when a periodic timer woke at least :data:`MIN_LATE_TICKS` times more than
:data:`LATE_S` late within the last :data:`WINDOW_S`. One long block (a pipeline starting, a
garbage collection) is one late tick, not a load. Unloaded, the timer wakes within a few
milliseconds and nothing changes.

With many services on one loop (:data:`MANY_USERS`), the loop is *strained* earlier, at
:data:`MIN_MILD_TICKS` wake-ups :data:`MILD_LATE_S` late: an answer's first audio frame then
gathers audio before it plays (``Tuning.loaded_prebuffer_s``).
"""

import asyncio
import weakref
from collections import deque

#: Interval of the timer.
TICK_S = 0.05
#: A wake-up this late counts as a late tick.
LATE_S = 0.05
#: Late ticks are counted over this long.
WINDOW_S = 2.0
#: This many late ticks within the window make the loop loaded.
MIN_LATE_TICKS = 3

#: With this many services on one loop (many bots in one process), a milder lag already
#: strains it: the token burst that follows makes turns of 100-400 ms.
MANY_USERS = 16
#: A wake-up this late counts as a mild late tick.
MILD_LATE_S = 0.02
#: This many mild late ticks within the window, with many users, strain the loop.
MIN_MILD_TICKS = 2


class LateTicks:
    """The late wake-ups of a periodic timer within a sliding window (pure: no clock, no I/O)."""

    def __init__(
        self, *, late_s: float = LATE_S, window_s: float = WINDOW_S, min_late: int = MIN_LATE_TICKS
    ):
        """Create the record.

        Args:
            late_s: A wake-up at least this late counts.
            window_s: How far back late wake-ups count.
            min_late: Late wake-ups within the window that make the loop loaded.
        """
        self._late_s = late_s
        self._window_s = window_s
        self._min_late = min_late
        self._late_at: deque[float] = deque()

    def observe(self, now: float, lateness: float) -> None:
        """Record one wake-up.

        Args:
            now: When it happened (the loop's clock).
            lateness: How long after its due time.
        """
        if lateness >= self._late_s:
            self._late_at.append(now)
        self._expire(now)

    def loaded(self, now: float) -> bool:
        """Whether enough late wake-ups fall within the window ending at ``now``.

        Args:
            now: The loop's clock.
        """
        self._expire(now)
        return len(self._late_at) >= self._min_late

    def _expire(self, now: float) -> None:
        while self._late_at and self._late_at[0] <= now - self._window_s:
            self._late_at.popleft()


class LoopLagMonitor:
    """The timer of one event loop; it runs while at least one service holds it.

    Use :meth:`for_running_loop` to get the loop's monitor, :meth:`acquire` when a service
    starts and :meth:`release` (once per acquire) when it ends.
    """

    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLagMonitor]" = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, *, tick_s: float = TICK_S):
        """Create a stopped monitor for ``loop``.

        Args:
            loop: The event loop watched.
            tick_s: Interval of the timer.
        """
        self._loop = loop
        self._tick_s = tick_s
        self._ticks = LateTicks()
        self._mild = LateTicks(late_s=MILD_LATE_S, min_late=MIN_MILD_TICKS)
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._users = 0

    @classmethod
    def for_running_loop(cls) -> "LoopLagMonitor":
        """The running loop's monitor (created stopped on first use)."""
        loop = asyncio.get_running_loop()
        monitor = cls._by_loop.get(loop)
        if monitor is None:
            monitor = cls._by_loop[loop] = cls(loop)
        return monitor

    @property
    def running(self) -> bool:
        """Whether the timer runs."""
        return self._handle is not None

    @property
    def loaded(self) -> bool:
        """Whether the loop has been running late (see the module's description)."""
        return self._ticks.loaded(self._loop.time())

    @property
    def strained(self) -> bool:
        """Whether the loop is loaded, or many services share it and it begins to run late.

        Many bots in one process meet a token burst together: the first seconds of lag are
        mild (20-60 ms turns) and the 100-400 ms turns come a second later, after the answers
        that started early began to play. This earlier signal lets them start with audio in
        hand. One service, or a few, never see it: only :attr:`loaded` counts for them.
        """
        if self.loaded:
            return True
        return self._users >= MANY_USERS and self._mild.loaded(self._loop.time())

    def acquire(self) -> None:
        """One more service uses the monitor: start the timer if it is the first."""
        self._users += 1
        if self._handle is None:
            self._schedule()

    def release(self) -> None:
        """A service no longer uses the monitor: stop the timer after the last one."""
        self._users = max(self._users - 1, 0)
        if self._users == 0 and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        self._due = self._loop.time() + self._tick_s
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self._ticks.observe(now, now - self._due)
        self._mild.observe(now, now - self._due)
        self._schedule()
