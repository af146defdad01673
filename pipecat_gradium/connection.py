"""Sockets to Gradium: a small pool with a receive task per socket and standby sockets.

Pipecat's ``WebsocketService`` assumes one socket and treats any close as a failure. This plugin
closes a socket on purpose at every barge-in (the only way to stop Gradium generating), so its
sockets live here instead:

* the *active* socket of each kind (interruptible speech, uninterruptible speech) carries that
  kind's requests, multiplexed by ``client_req_id``;
* *standby* sockets are opened in advance, so the answer after a barge-in (or a rotation) does
  not wait for a handshake;
* intentional closes run in tracked background tasks and never wait for the close handshake on
  the caller's path;
* a socket older than ``max_age_s`` takes no new request and closes once its requests finish,
  ahead of Gradium's 300 s session limit.
"""

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from loguru import logger
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from pipecat_gradium.protocol import ProtocolError, ServerMessage, parse_server_message


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

    Attributes:
        id: A number for logs, unique in the process.
        ws: The connection.
        opened_at: ``time.monotonic()`` when the handshake completed.
        requests: ``client_req_id`` of the requests open on this socket.
        retiring: Takes no new request; closes once ``requests`` is empty.
        closing: Closed on purpose; anything it still receives is dropped.
        error_reported: An error about this socket already reached the app (no second one).
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
        self.requests: set[str] = set()
        self.retiring = False
        self.closing = False
        self.error_reported = False
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


class ConnectionPool:
    """The active sockets, the standby sockets, and their receive and close tasks.

    The pool never reports errors itself: it calls ``on_lost`` when a socket that carried
    requests dies, and lets ``acquire`` raise when no socket can be opened. A standby socket
    that dies idle is replaced silently.
    """

    def __init__(
        self,
        *,
        owner: TaskOwner,
        connect: Callable[[], Awaitable[ClientConnection]],
        on_message: MessageHandler,
        on_lost: LostHandler,
        standby: int = 2,
        max_age_s: float = 240.0,
        refill_backoff_s: float = 1.0,
        healthy_age_s: float = 5.0,
        max_quick_deaths: int = 5,
    ):
        """Create an empty pool; :meth:`start` opens its sockets.

        Args:
            owner: Runs and cancels tasks (the service).
            connect: Opens one authenticated WebSocket.
            on_message: Called for every parsed message of a socket that is not closing.
            on_lost: Called when a socket closes without being asked to, with a reason. Not
                called for idle standby sockets.
            standby: Sockets kept open in advance; 0 turns standby off (each barge-in then pays
                a handshake).
            max_age_s: Age after which a socket takes no new request.
            refill_backoff_s: Wait before retrying a failed standby connection; doubles with
                every idle socket the server closes young.
            healthy_age_s: An idle socket closed by the server younger than this counts as a
                failure, so a server that drops idle sockets at once cannot cause a storm.
            max_quick_deaths: After this many such closes in a row, standby refills pause until
                a socket serves a request.
        """
        if standby < 0:
            raise ValueError("standby must be >= 0")
        self._owner = owner
        self._connect = connect
        self._on_message = on_message
        self._on_lost = on_lost
        self._standby_size = standby
        self._max_age_s = max_age_s
        self._refill_backoff_s = refill_backoff_s
        self._healthy_age_s = healthy_age_s
        self._max_quick_deaths = max_quick_deaths
        self._quick_deaths = 0
        self._active: dict[bool, GradiumSocket] = {}
        self._standby: list[GradiumSocket] = []
        self._draining: set[GradiumSocket] = set()
        self._background: set[asyncio.Task] = set()
        self._refill_task: asyncio.Task | None = None
        self._refill_wake = asyncio.Event()
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """Whether the pool was stopped (or disabled after a permanent failure)."""
        return self._stopped

    def sockets(self) -> list[GradiumSocket]:
        """Every socket the pool holds: active, standby and draining."""
        return [*self._active.values(), *self._standby, *self._draining]

    async def start(self) -> None:
        """Open the interruptible socket now and the standby sockets in the background.

        Raises:
            Exception: Whatever ``connect`` raises when the first socket cannot be opened.
        """
        self._stopped = False
        await self.acquire(interruptible=True)

    async def acquire(self, *, interruptible: bool) -> GradiumSocket:
        """Return the socket a new request of this kind goes on, opening one if needed.

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
        sock = self._take_standby()
        if sock is None:
            sock = await self._open()
        self._active[interruptible] = sock
        self._schedule_refill()
        return sock

    def release(self, sock: GradiumSocket, req_id: str) -> None:
        """Forget a finished request; a retiring socket closes after its last one.

        Args:
            sock: The socket the request was on.
            req_id: The request's ``client_req_id``.
        """
        sock.requests.discard(req_id)
        # A socket that carried a request to its end is proof the server keeps sockets.
        self._quick_deaths = 0
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

        Everything it still receives is dropped. The standby is refilled.

        Args:
            sock: The socket to close.
        """
        if sock.closing:
            return
        sock.closing = True
        self._forget(sock)
        self._run_background(self._close(sock), f"gradium-close-{sock.id}")
        self._schedule_refill()

    async def stop(self) -> None:
        """Close every socket and wait for the pool's tasks to end."""
        self._stopped = True
        if self._refill_task:
            await self._owner.cancel_task(self._refill_task)
            self._refill_task = None
        for sock in self.sockets():
            self.close_soon(sock)
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _open(self) -> GradiumSocket:
        ws = await self._connect()
        sock = GradiumSocket(ws)
        sock.receive_task = self._owner.create_task(
            self._receive(sock), name=f"gradium-receive-{sock.id}"
        )
        logger.debug(f"Gradium: opened {sock}")
        return sock

    def _take_standby(self) -> GradiumSocket | None:
        while self._standby:
            sock = self._standby.pop(0)
            if self._usable(sock):
                return sock
            self.close_soon(sock)
        return None

    def _usable(self, sock: GradiumSocket) -> bool:
        """Whether a new request may go on ``sock``: open and younger than the age limit."""
        return sock.is_open and sock.age < self._max_age_s

    def _drop_active(self, sock: GradiumSocket) -> None:
        for kind, active in list(self._active.items()):
            if active is sock:
                del self._active[kind]

    def _forget(self, sock: GradiumSocket) -> None:
        self._drop_active(sock)
        if sock in self._standby:
            self._standby.remove(sock)
        self._draining.discard(sock)

    def _schedule_refill(self) -> None:
        if self._stopped or self._standby_size == 0:
            return
        self._refill_wake.set()
        if self._refill_task is None or self._refill_task.done():
            self._refill_task = self._owner.create_task(self._refill(), name="gradium-refill")

    async def _refill(self) -> None:
        """Keep ``standby`` sockets open and young, for as long as the pool runs.

        A standby socket is replaced before it reaches ``max_age_s``, so the answer after a
        barge-in late in a long call still finds one it can use without a handshake.
        """
        failures = 0
        while not self._stopped:
            self._refill_wake.clear()
            for sock in list(self._standby):
                if not self._usable(sock):
                    self._standby.remove(sock)
                    self.close_soon(sock)
            if len(self._standby) >= self._standby_size:
                oldest = min(s.opened_at for s in self._standby)
                expires_in = oldest + self._max_age_s - time.monotonic()
                try:
                    await asyncio.wait_for(self._refill_wake.wait(), max(expires_in, 0.001))
                except TimeoutError:
                    pass
                continue
            if self._quick_deaths >= self._max_quick_deaths:
                logger.warning(
                    f"Gradium: the server closed {self._quick_deaths} idle sockets in a row "
                    "soon after opening them; standby sockets paused until one serves a request"
                )
                return
            if self._quick_deaths:
                await asyncio.sleep(self._refill_backoff_s * 2 ** (self._quick_deaths - 1))
            try:
                sock = await self._open()
            except Exception as e:
                failures += 1
                # The next request reports the failure if it persists; retry a few times.
                logger.warning(f"Gradium: standby connection failed ({failures}): {e}")
                if failures >= 3:
                    return
                await asyncio.sleep(self._refill_backoff_s * failures)
                continue
            failures = 0
            if self._stopped:
                self.close_soon(sock)
                return
            self._standby.append(sock)

    async def _receive(self, sock: GradiumSocket) -> None:
        reason = "closed by the server"
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
                await self._on_message(sock, msg)
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
        self._schedule_refill()
        if was_idle:
            # An idle socket timing out is routine: replace it silently, but back off when the
            # server drops them young, or a refill loop would hammer it.
            if sock.age < self._healthy_age_s:
                self._quick_deaths += 1
            else:
                self._quick_deaths = 0
            logger.debug(f"Gradium: idle {sock} {reason}; replacing it")
            return
        await self._on_lost(sock, reason)

    async def _close(self, sock: GradiumSocket) -> None:
        try:
            await sock.ws.close()
        except Exception as e:
            logger.debug(f"Gradium: closing {sock}: {e}")
        if sock.receive_task and sock.receive_task is not asyncio.current_task():
            await self._owner.cancel_task(sock.receive_task)
        logger.debug(f"Gradium: closed {sock}")

    def _run_background(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = self._owner.create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
