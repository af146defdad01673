"""Sockets to Gradium: one socket, each service's active sockets, and the process's standby sockets.

Pipecat's ``WebsocketService`` assumes one socket and treats any close as a failure. This plugin
closes a socket on purpose at every barge-in (the only way to stop Gradium generating), so its
sockets live here instead:

* the *active* socket of each kind (interruptible speech, uninterruptible speech) carries that
  kind's requests, multiplexed by ``client_req_id``; it belongs to one service, so a barge-in
  closes only that service's socket;
* *standby* sockets are opened in advance, so the answer after a barge-in (or a rotation) does
  not wait for a handshake. They live in a :class:`StandbyPool` shared by every service of the
  process that talks to the same URL with the same key (LiveKit Agents' connection pool is the
  model: prewarm, reuse, invalidate). Its size follows how often sockets are taken (barge-ins),
  not how many services there are, so 160 sessions cost about 160 sockets, not 480;
* intentional closes run in tracked background tasks and never wait for the close handshake on
  the caller's path;
* a socket older than ``max_age_s`` takes no new request and closes once its requests finish,
  ahead of Gradium's 300 s session limit.
"""

import asyncio
import collections
import hashlib
import itertools
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Protocol

from loguru import logger
from pipecat.utils.network import QuickFailureTracker, exponential_backoff_time
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from pipecat_gradium.protocol import ProtocolError, ServerMessage, parse_server_message

#: Wait before retrying a failed standby connection; grows with each idle socket that dies young.
REFILL_BACKOFF_S = 1.0
#: An idle socket the server closes younger than this counts as a quick failure.
HEALTHY_AGE_S = 5.0
#: Quick failures in a row after which refills pause until a socket serves a request.
MAX_QUICK_DEATHS = 5


class TaskOwner(Protocol):
    """What the pool needs to run tasks the Pipecat way (a ``FrameProcessor`` provides it)."""

    def create_task(self, coroutine: Coroutine, name: str | None = None) -> asyncio.Task:
        """Start a tracked task."""
        ...

    async def cancel_task(self, task: asyncio.Task, timeout: float | None = None) -> None:
        """Cancel a tracked task and wait for it."""
        ...


class GradiumSocket:
    """One WebSocket to Gradium and the requests it carries.

    ``requests`` is the one record of what a socket carries: the service registers each request
    with whatever owns it (an answer) and routes the socket's messages and its loss through it.

    Attributes:
        id: A number for logs, unique in the process.
        ws: The connection.
        opened_at: ``time.monotonic()`` when the handshake completed.
        requests: The requests open on this socket: ``client_req_id`` -> their owner.
        retiring: Takes no new request; closes once ``requests`` is empty.
        closing: Closed on purpose; anything it still receives is dropped.
        error_reported: An error about this socket already reached the app (no second one).
        refusal: An account limit (concurrency cap, idle or session limit) Gradium named for
            the whole socket before closing it.
    """

    _ids = itertools.count(1)

    def __init__(self, ws: ClientConnection):
        """Wrap a connected WebSocket.

        Args:
            ws: The connection, already open.
        """
        self.id = next(self._ids)
        self.ws = ws
        self.opened_at = time.monotonic()
        self.requests: dict[str, Any] = {}
        self.retiring = False
        self.closing = False
        self.error_reported = False
        #: An account limit Gradium named for the whole socket (kind, its words), if any.
        self.refusal: tuple[Any, str] | None = None
        self.receive_task: asyncio.Task | None = None

    @property
    def age(self) -> float:
        """Seconds since the socket opened."""
        return time.monotonic() - self.opened_at

    @property
    def is_open(self) -> bool:
        """Whether requests can still be sent on this socket."""
        return not self.closing and self.ws.state is State.OPEN

    async def send(self, message: str) -> None:
        """Send one JSON text frame.

        Args:
            message: The frame.
        """
        await self.ws.send(message)

    def __repr__(self) -> str:
        return f"GradiumSocket#{self.id}"


MessageHandler = Callable[[GradiumSocket, ServerMessage], Awaitable[None]]
LostHandler = Callable[[GradiumSocket, str], Awaitable[None]]
Connector = Callable[[], Awaitable[ClientConnection]]


async def _close_ws(sock: GradiumSocket) -> None:
    try:
        await sock.ws.close()
    except Exception as e:
        logger.debug(f"Gradium: closing {sock}: {e}")


class StandbyPool:
    """Idle sockets kept open in advance, shared by every service with the same URL and key.

    Obtain one with :meth:`for_key` (one per event loop and key). Services join it with their
    wanted standby size; it keeps ``max(sizes)`` sockets open, plus enough to cover the rate at
    which sockets were taken over the last ``rate_window_s`` during one handshake (twice the
    measured handshake time), never more than one per member beyond the base. It is closed when
    its last member leaves.

    It runs its own asyncio tasks (refill, a watcher per idle socket, background closes): they
    belong to no single service, which may stop while others go on.
    """

    _registry: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, StandbyPool]]"
    _registry = weakref.WeakKeyDictionary()

    def __init__(self, key: Hashable, *, rate_window_s: float = 10.0):
        """Create an empty pool; members bring its size and their way to connect.

        Args:
            key: What services sharing it have in common (URL and a digest of the key).
            rate_window_s: How far back taken sockets count towards the size.
        """
        self.key = key
        self._rate_window_s = rate_window_s
        self._members: dict[Any, tuple[int, float, Connector]] = {}
        self._idle: list[GradiumSocket] = []
        self._watchers: dict[GradiumSocket, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._takes: collections.deque[float] = collections.deque()
        self._connect_s = 0.1  # running estimate of one handshake
        # An idle socket the server closes young is a quick failure: a server that drops idle
        # sockets at once must not cause a reconnect storm.
        self._quick_deaths = QuickFailureTracker(HEALTHY_AGE_S, MAX_QUICK_DEATHS)
        self._refill_task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    @classmethod
    def for_key(cls, key: Hashable, **kwargs: Any) -> "StandbyPool":
        """The running loop's pool for ``key``, created on first use.

        Args:
            key: The sharing key.
            **kwargs: Passed to the constructor when it is created.

        Returns:
            The shared pool.
        """
        pools = cls._registry.setdefault(asyncio.get_running_loop(), {})
        pool = pools.get(key)
        if pool is None:
            pool = pools[key] = cls(key, **kwargs)
        return pool

    @staticmethod
    def sharing_key(url: str, api_key: str) -> tuple[str, str]:
        """The key under which services share standby sockets: the URL and a key digest.

        Args:
            url: The WebSocket URL.
            api_key: The API key (only its digest is kept).

        Returns:
            The key.
        """
        return url, hashlib.sha256(api_key.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ members

    @property
    def members(self) -> int:
        """Services sharing the pool."""
        return len(self._members)

    @property
    def idle(self) -> list[GradiumSocket]:
        """The standby sockets open now."""
        return list(self._idle)

    def join(self, member: Any, *, size: int, max_age_s: float, connect: Connector) -> None:
        """Add a service (or update its wishes).

        Args:
            member: The service's pool (any hashable identity).
            size: The standby sockets it asks for.
            max_age_s: Age after which it would take no new request on a socket.
            connect: Opens one authenticated WebSocket.
        """
        self._members[member] = (size, max_age_s, connect)

    async def leave(self, member: Any) -> None:
        """Remove a service; the last one out closes every standby socket and ends the tasks.

        Args:
            member: The service's pool.
        """
        self._members.pop(member, None)
        if self._members:
            return
        pools = self._registry.get(asyncio.get_running_loop(), {})
        if pools.get(self.key) is self:
            del pools[self.key]
        if self._refill_task:
            self._refill_task.cancel()
            await asyncio.gather(self._refill_task, return_exceptions=True)
            self._refill_task = None
        idle, self._idle = self._idle, []
        for sock in idle:
            self._discard(sock)
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    @property
    def size(self) -> int:
        """How many idle sockets the pool aims to hold now."""
        if not self._members:
            return 0
        base = max(size for size, _, _ in self._members.values())
        if base == 0:
            return 0
        now = time.monotonic()
        while self._takes and self._takes[0] < now - self._rate_window_s:
            self._takes.popleft()
        rate = len(self._takes) / self._rate_window_s
        extra = math.ceil(rate * 2 * self._connect_s)
        return base + min(extra, len(self._members))

    @property
    def max_age_s(self) -> float:
        """The strictest age limit of the members."""
        return min((age for _, age, _ in self._members.values()), default=240.0)

    # ------------------------------------------------------------------ use

    def take(self) -> GradiumSocket | None:
        """Hand out an idle socket (the caller starts reading it), or None if none is ready.

        Every call counts towards the pool's size, whether it found a socket or not. The
        caller wakes the refill (:meth:`wake`) once its own socket is open, so a server that
        refuses connections is not hammered by refills.

        Returns:
            An open socket younger than the age limit, or None.
        """
        self._takes.append(time.monotonic())
        sock = None
        while self._idle:
            candidate = self._idle.pop(0)
            if self._usable(candidate):
                sock = candidate
                break
            self._drop_idle(candidate)
        if sock is not None:
            watcher = self._watchers.pop(sock, None)
            if watcher:
                watcher.cancel()
        return sock

    def discard(self, sock: GradiumSocket) -> bool:
        """Close ``sock`` if it is one of the pool's idle sockets.

        Args:
            sock: The socket.

        Returns:
            Whether it was the pool's.
        """
        if sock not in self._idle:
            return False
        self._idle.remove(sock)
        self._discard(sock)
        self.wake()
        return True

    def note_healthy(self) -> None:
        """A socket carried a request to its end: the server keeps sockets; refills resume."""
        if self._quick_deaths.count:
            self._quick_deaths.reset()
            self.wake()

    def note_idle_death(self, age_s: float) -> None:
        """An idle socket (standby or a service's idle active socket) was closed by the server.

        Args:
            age_s: How long it had lived.
        """
        self._quick_deaths.record(age_s)
        self.wake()

    def wake(self) -> None:
        """Check the pool's size now (start the refill task if it is not running)."""
        if not self._members or self.size == 0:
            return
        self._wake.set()
        if self._refill_task is None or self._refill_task.done():
            self._refill_task = asyncio.create_task(self._refill(), name="gradium-standby-refill")

    # ------------------------------------------------------------------ internals

    def _usable(self, sock: GradiumSocket) -> bool:
        return sock.is_open and sock.age < self.max_age_s

    def _drop_idle(self, sock: GradiumSocket) -> None:
        """Close an idle socket that cannot be used; one the server closed young counts.

        A server that closes sockets right after their handshake (a plan's concurrency cap
        counting open sockets) must slow the refills down, not meet a new one at once.
        """
        closed_by_server = not sock.closing and sock.ws.state is not State.OPEN
        self._discard(sock)
        if closed_by_server:
            self.note_idle_death(sock.age)

    def _discard(self, sock: GradiumSocket) -> None:
        watcher = self._watchers.pop(sock, None)
        if watcher:
            watcher.cancel()
        if sock.closing:
            return
        sock.closing = True
        task = asyncio.create_task(_close_ws(sock), name=f"gradium-close-{sock.id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _connector(self) -> Connector | None:
        # Any member's way to connect will do: they share URL and key.
        for _, _, connect in reversed(self._members.values()):
            return connect
        return None

    async def _refill(self) -> None:
        """Keep ``size`` idle sockets open and young while the pool has members."""
        failures = 0
        while self._members:
            self._wake.clear()
            for sock in list(self._idle):
                if not self._usable(sock):
                    self._idle.remove(sock)
                    self._drop_idle(sock)
            size = self.size
            if len(self._idle) >= size:
                if not self._idle:
                    return
                oldest = min(s.opened_at for s in self._idle)
                expires_in = oldest + self.max_age_s - time.monotonic()
                # The size shrinks as takes age out of the window: re-check now and then.
                wait = min(max(expires_in, 0.001), self._rate_window_s)
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except TimeoutError:
                    pass
                if len(self._idle) > self.size:
                    self._discard(self._idle.pop())
                continue
            deaths = self._quick_deaths.count
            if deaths >= MAX_QUICK_DEATHS:
                logger.warning(
                    f"Gradium: the server closed {deaths} idle sockets in a row "
                    "soon after opening them; standby sockets paused until one serves a request"
                )
                return
            if deaths:
                await asyncio.sleep(
                    exponential_backoff_time(
                        deaths,
                        min_wait=REFILL_BACKOFF_S,
                        max_wait=REFILL_BACKOFF_S * 2 ** (MAX_QUICK_DEATHS - 1),
                        multiplier=REFILL_BACKOFF_S,
                    )
                )
            connect = self._connector()
            if connect is None:
                return
            began = time.monotonic()
            try:
                ws = await connect()
            except Exception as e:
                failures += 1
                # The next request reports the failure if it persists; retry a few times.
                logger.warning(f"Gradium: standby connection failed ({failures}): {e}")
                if failures >= 3:
                    return
                await asyncio.sleep(REFILL_BACKOFF_S * failures)
                continue
            failures = 0
            self._connect_s = 0.8 * self._connect_s + 0.2 * (time.monotonic() - began)
            sock = GradiumSocket(ws)
            if not self._members:
                self._discard(sock)
                return
            self._idle.append(sock)
            self._watchers[sock] = asyncio.create_task(
                self._watch(sock), name=f"gradium-standby-{sock.id}"
            )
            logger.debug(f"Gradium: standby {sock} open ({len(self._idle)}/{self.size})")

    async def _watch(self, sock: GradiumSocket) -> None:
        """Wait for an idle socket to die; replace it silently, backing off if it died young."""
        await sock.ws.wait_closed()
        self._watchers.pop(sock, None)
        if sock in self._idle:
            self._idle.remove(sock)
            sock.closing = True
            logger.debug(f"Gradium: idle standby {sock} closed by the server; replacing it")
            self.note_idle_death(sock.age)


class ServiceSockets:
    """One service's sockets: its active ones, their tasks, and its share of the standby.

    The pool never reports errors itself: it calls ``on_lost`` when a socket that carried
    requests dies, and lets ``acquire`` raise when no socket can be opened. A standby socket
    that dies idle is replaced silently.
    """

    def __init__(
        self,
        *,
        owner: TaskOwner,
        connect: Connector,
        on_message: MessageHandler,
        on_lost: LostHandler,
        standby: int = 2,
        max_age_s: float = 240.0,
        share_key: Hashable | None = None,
    ):
        """Create an empty pool; :meth:`start` opens its first socket.

        Args:
            owner: Runs and cancels tasks (the service).
            connect: Opens one authenticated WebSocket.
            on_message: Called for every parsed message of a socket that is not closing.
            on_lost: Called when a socket closes without being asked to, with a reason. Not
                called for idle sockets.
            standby: Standby sockets this service asks the shared standby to keep open; 0 turns
                standby off (each barge-in then pays a handshake).
            max_age_s: Age after which a socket takes no new request.
            share_key: Services with equal keys share standby sockets (see
                :meth:`StandbyPool.sharing_key`); None gives this pool a standby of its own.
        """
        if standby < 0:
            raise ValueError("standby must be >= 0")
        self._owner = owner
        self._connect = connect
        self._on_message = on_message
        self._on_lost = on_lost
        self._standby_size = standby
        self._max_age_s = max_age_s
        self._share_key: Hashable = share_key if share_key is not None else object()
        self._shared: StandbyPool | None = None
        self._active: dict[bool, GradiumSocket] = {}
        self._draining: set[GradiumSocket] = set()
        self._background: set[asyncio.Task] = set()
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """Whether the pool was stopped (or disabled after a permanent failure)."""
        return self._stopped

    @property
    def standby(self) -> StandbyPool | None:
        """The standby pool this service draws from (None when standby is off or stopped)."""
        return self._shared

    def own_sockets(self) -> list[GradiumSocket]:
        """The sockets that belong to this service alone: active and draining."""
        return [*self._active.values(), *self._draining]

    async def start(self) -> None:
        """Join the shared standby and open this service's interruptible socket.

        The first socket is opened, not taken from the standby: a burst of services starting
        together must not drain the sockets kept for barge-ins.

        Raises:
            Exception: Whatever ``connect`` raises when the first socket cannot be opened.
        """
        self._stopped = False
        if self._standby_size and self._shared is None:
            self._shared = StandbyPool.for_key(self._share_key)
            self._shared.join(
                self, size=self._standby_size, max_age_s=self._max_age_s, connect=self._connect
            )
        sock = self._active.get(True)
        if sock is None or not self._usable(sock):
            if sock:
                self.retire(sock)
            self._active[True] = await self._open()
        self._schedule_refill()

    async def acquire(self, *, interruptible: bool) -> GradiumSocket:
        """Return the socket a new request of this kind goes on, taking a standby if needed.

        Interruptible and uninterruptible speech never share a socket, so closing one at a
        barge-in never cuts the other.

        Args:
            interruptible: The kind of speech the request carries.

        Returns:
            An open socket.

        Raises:
            RuntimeError: If the pool is stopped.
            Exception: Whatever ``connect`` raises.
        """
        if self._stopped:
            raise RuntimeError("Gradium connection pool is stopped")
        sock = self._active.get(interruptible)
        if sock and self._usable(sock):
            return sock
        if sock:
            # Too old or dead: finish what it carries, take nothing new.
            self.retire(sock)
        sock = self._shared.take() if self._shared else None
        if sock is not None:
            self._adopt(sock)
        else:
            sock = await self._open()
        other = self._active.get(interruptible)
        if other is not None and other is not sock:
            # Another request of this kind got a socket while this one connected: one stays
            # active, the other finishes what it carries and closes.
            self.retire(other)
        self._active[interruptible] = sock
        self._schedule_refill()
        return sock

    def release(self, sock: GradiumSocket, req_id: str) -> None:
        """Forget a finished request; a retiring socket closes after its last one.

        Args:
            sock: The socket the request was on.
            req_id: The request's ``client_req_id``.
        """
        sock.requests.pop(req_id, None)
        # A socket that carried a request to its end is proof the server keeps sockets.
        if self._shared:
            self._shared.note_healthy()
        if sock.retiring and not sock.requests:
            self.close_soon(sock)

    def retire(self, sock: GradiumSocket) -> None:
        """Take no new request on ``sock``; close it once its requests finish.

        Args:
            sock: The socket to retire.
        """
        self._drop_active(sock)
        sock.retiring = True
        if sock.requests:
            self._draining.add(sock)
        else:
            self.close_soon(sock)

    def close_soon(self, sock: GradiumSocket) -> None:
        """Close ``sock`` in the background; the caller does not wait for the handshake.

        Everything it still receives is dropped. The standby is refilled. A shared standby
        socket passed here is closed by the standby pool.

        Args:
            sock: The socket to close.
        """
        if self._shared and self._shared.discard(sock):
            return
        if sock.closing:
            return
        sock.closing = True
        self._forget(sock)
        self._run_background(self._close(sock), f"gradium-close-{sock.id}")
        self._schedule_refill()

    async def stop(self) -> None:
        """Close this service's sockets, leave the shared standby, wait for the pool's tasks."""
        self._stopped = True
        shared, self._shared = self._shared, None
        for sock in self.own_sockets():
            self.close_soon(sock)
        if shared:
            await shared.leave(self)
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def _adopt(self, sock: GradiumSocket) -> None:
        """Start reading a socket this service now owns."""
        sock.receive_task = self._owner.create_task(
            self._receive(sock), name=f"gradium-receive-{sock.id}"
        )

    async def _open(self) -> GradiumSocket:
        sock = GradiumSocket(await self._connect())
        self._adopt(sock)
        logger.debug(f"Gradium: opened {sock}")
        return sock

    def _usable(self, sock: GradiumSocket) -> bool:
        """Whether a new request may go on ``sock``: open and younger than the age limit."""
        return sock.is_open and sock.age < self._max_age_s

    def _drop_active(self, sock: GradiumSocket) -> None:
        for kind, active in list(self._active.items()):
            if active is sock:
                del self._active[kind]

    def _forget(self, sock: GradiumSocket) -> None:
        self._drop_active(sock)
        self._draining.discard(sock)

    def _schedule_refill(self) -> None:
        if not self._stopped and self._shared:
            self._shared.wake()

    async def _receive(self, sock: GradiumSocket) -> None:
        reason = "closed by the server"
        on_message = self._on_message
        try:
            async for raw in sock.ws:
                if sock.closing:
                    continue
                try:
                    msg = parse_server_message(raw)
                except ProtocolError as e:
                    # One bad frame loses nothing else: say so and keep reading.
                    logger.warning(f"Gradium: ignoring a malformed frame on {sock}: {e}")
                    continue
                await on_message(sock, msg)
            if sock.ws.close_code not in (None, 1000):
                reason = f"closed by the server with {sock.ws.close_code} {sock.ws.close_reason}"
        except ConnectionClosed as e:
            reason = f"connection lost ({e})"
        except OSError as e:
            reason = f"connection lost ({e})"
        if sock.closing or self._stopped:
            return
        was_idle = not sock.requests
        self._forget(sock)
        sock.closing = True
        if was_idle:
            # An idle socket timing out is routine: replace it silently, but back off when the
            # server drops them young, or a refill loop would hammer it.
            if self._shared:
                self._shared.note_idle_death(sock.age)
            logger.debug(f"Gradium: idle {sock} {reason}; replacing it")
            return
        self._schedule_refill()
        await self._on_lost(sock, reason)

    async def _close(self, sock: GradiumSocket) -> None:
        await _close_ws(sock)
        if sock.receive_task and sock.receive_task is not asyncio.current_task():
            await self._owner.cancel_task(sock.receive_task)
        logger.debug(f"Gradium: closed {sock}")

    def _run_background(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = self._owner.create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
