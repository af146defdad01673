"""One WebSocket connection: client messages in, requests multiplexed, and how it ends."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import WSMsgType, web
from loguru import logger

from .account import Account, Slot, concurrency_message
from .config import SetupError, parse_setup
from .faults import Fault, FaultTiming, Hold
from .latency import DelayLine, LatencyModel
from .normalize import WordReports
from .request import Request
from .stats import ConnectionStats, EmulatorStats, RequestStats

_CLIENT_TYPES = ("setup", "text", "end_of_stream")


@dataclass
class _End:
    kind: str  # "client", "server" or "reset"
    code: int = 1000
    reason: str = ""


class Host(Protocol):
    """What a connection needs from the server that accepted it."""

    @property
    def latency(self) -> LatencyModel:
        """The latency model now: each new request runs with the one current at its setup."""
        ...

    @property
    def stats(self) -> EmulatorStats:
        """The server's stats, which every connection and request adds to."""
        ...

    @property
    def account(self) -> Account:
        """The account behind the key: its cap, voices and workers."""
        ...

    def take_session(self, stats: ConnectionStats) -> Slot | None:
        """A place under the concurrency cap for this connection, or None (the refusal counted)."""
        ...

    def take_request_faults(self) -> set[Fault]:
        """The faults asked for the next request, on any socket."""
        ...

    def take_hold(self, client_req_id: str | None) -> Hold | None:
        """The first waiting hold that matches a new request, if any."""
        ...


class Connection:
    """The server side of one socket.

    Args:
        host: The server it runs on (latency, request faults, holds, stats).
        ws: The prepared WebSocket.
        http: The HTTP request that was upgraded.
        stats: Its stats record.
        faults: The faults applied to it.
        timing: When faults fire.
        word_reports: What its requests' word reports carry for rewritten words.
        session: Its place under the concurrency cap when the cap counts sockets: released
            as soon as the connection's end is decided (before its close frame goes out).
    """

    def __init__(
        self,
        host: Host,
        ws: web.WebSocketResponse,
        http: web.Request,
        stats: ConnectionStats,
        *,
        faults: set[Fault],
        timing: FaultTiming,
        word_reports: WordReports,
        session: Slot | None = None,
    ) -> None:
        """Create the connection (call :meth:`serve` to run it)."""
        self.host = host
        self.ws = ws
        self.http = http
        self.stats = stats
        self.faults = faults
        self.timing = timing
        self.word_reports = word_reports
        self.session = session
        self.client_gone = False
        self.requests: dict[str | None, Request] = {}  # active requests by client_req_id
        self._all_requests: list[Request] = []
        self._had_setup = False
        self._close_when_idle = False
        self._send_lock = asyncio.Lock()
        self._end: asyncio.Future[_End] = asyncio.get_running_loop().create_future()
        self._activity = asyncio.Event()
        self.done = asyncio.Event()
        # The network model, when on: each direction delays its messages, in order.
        net = host.latency
        self._out: DelayLine[str] | None = None
        self._in: DelayLine[str] | None = None
        if net.has_network:
            self._out = DelayLine(net, net.rng(stats.id, "down"), self._send_now)
            self._in = DelayLine(net, net.rng(stats.id, "up"), self._handle)

    # --- called by requests -------------------------------------------------------------

    def stats_changed(self) -> None:
        """Tell stats waiters something changed."""
        self.host.stats.changed()

    async def send(self, msg: dict[str, Any]) -> None:
        """Send one JSON message (dropped once the socket is closing).

        Args:
            msg: The message.
        """
        await self.send_raw(json.dumps(msg))

    async def send_raw(self, data: str) -> None:
        """Send one text frame as is (dropped once the socket is closing).

        Args:
            data: The frame's text.
        """
        if self.ws.closed or self._end.done():
            return
        if self._out is not None:
            self._out.put(data)
            return
        await self._send_now(data)

    async def _send_now(self, data: str) -> None:
        if self.ws.closed:
            return
        async with self._send_lock:
            try:
                await self.ws.send_str(data)
            except (ConnectionError, RuntimeError):
                self._finish(_End("client"))

    def request_close(self, code: int, reason: str = "") -> None:
        """Ask for the socket to be closed by the server with ``code``.

        Args:
            code: The WebSocket close code.
            reason: The close reason.
        """
        self._finish(_End("server", code, reason))

    def request_reset(self) -> None:
        """Ask for an abrupt TCP reset (no close frame)."""
        self._finish(_End("reset"))

    async def request_error(
        self, req: Request | None, code: int, message: str, close: bool = False
    ) -> None:
        """Send an error; terminal for the request only when the socket is multiplexed.

        Args:
            req: The request it concerns, if known.
            code: 1008 (policy) or 1011 (internal).
            message: What went wrong.
            close: Close the socket whatever the mode.
        """
        req_id = req.client_req_id if req is not None else None
        await self._error(req_id, code, message, scoped=not close and self._scoped(req))
        if req is not None:
            req.done = True
            req.stats.error = message
            if self.requests.get(req_id) is req:
                del self.requests[req_id]
            self.stats_changed()

    async def request_finished(self, req: Request) -> None:
        """A request sent its end_of_stream: close the socket if that is what it asked for.

        Args:
            req: The request.
        """
        if self.requests.get(req.client_req_id) is req:
            del self.requests[req.client_req_id]
        if req.config.close_ws_on_eos or (self._close_when_idle and not self.requests):
            self.request_close(1000)

    # --- internals ----------------------------------------------------------------------

    def _scoped(self, req: Request | None) -> bool:
        # An error can be terminal for one request only when the socket outlives requests and
        # the request has an id the client can route by.
        return req is not None and req.client_req_id is not None and not req.config.close_ws_on_eos

    def _finish(self, end: _End) -> None:
        if not self._end.done():
            self._end.set_result(end)

    async def _error(self, req_id: str | None, code: int, message: str, scoped: bool) -> None:
        msg: dict[str, Any] = {"type": "error", "message": message, "code": code}
        if req_id is not None:
            msg["client_req_id"] = req_id
        logger.info(f"emulator: connection {self.stats.id}: error {code}: {message}")
        await self.send(msg)
        if not scoped:
            self.request_close(code, message[:120])

    async def serve(self) -> None:
        """Run the connection until the client or the server ends it."""
        reader = asyncio.create_task(self._read_loop())
        timers: list[asyncio.Task[None]] = []
        if Fault.SESSION_LIMIT in self.faults:
            timers.append(asyncio.create_task(self._session_limit()))
        if Fault.IDLE_TIMEOUT in self.faults:
            timers.append(asyncio.create_task(self._idle_timeout()))
        try:
            await asyncio.wait({reader, self._end}, return_when=asyncio.FIRST_COMPLETED)
            end = self._end.result() if self._end.done() else _End("client")
            self._finish(end)
            if self.session is not None:
                self.session.release()
            if end.kind == "client":
                # Closing the socket stops generation: record it before cancelling anything.
                self.client_gone = True
            await self._stop_requests()
            if self._out is not None and end.kind == "server":
                # What the server sent before closing still arrives, then the close.
                try:
                    await asyncio.wait_for(self._out.drain(), 5.0)
                except TimeoutError:
                    pass
            for line in (self._out, self._in):
                if line is not None:
                    await line.close()
            for task in [reader, *timers]:
                task.cancel()
            await asyncio.gather(reader, *timers, return_exceptions=True)
            if end.kind == "server":
                await self.ws.close(code=end.code, message=end.reason.encode()[:120])
                self.stats.close_code = end.code
            elif end.kind == "reset":
                self._reset()
            self.stats.closed_by = end.kind
        finally:
            if self.session is not None:
                self.session.release()
            self.stats.closed_at = time.monotonic()
            for req in self._all_requests:
                if not req.stats.finished:
                    req.stats.left_open = True
            self.done.set()
            self.stats_changed()
            logger.info(
                f"emulator: connection {self.stats.id} closed by {self.stats.closed_by}"
                + (f" ({self.stats.close_code})" if self.stats.close_code else "")
            )

    async def _stop_requests(self) -> None:
        await asyncio.gather(*(r.stop() for r in self._all_requests))

    def _reset(self) -> None:
        transport = self.http.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()

    async def refuse_for_cap(self, req_id: str | None = None) -> None:
        """Refuse this socket for the concurrency cap: error 1008 (``req_id`` if a setup's), close.

        Args:
            req_id: The ``client_req_id`` of the setup that met the cap, if any.
        """
        self.stats.cap_refused = True
        message = concurrency_message(self.host.account.max_sessions or 0)
        msg: dict[str, Any] = {"type": "error", "message": message, "code": 1008}
        if req_id is not None:
            msg["client_req_id"] = req_id
        logger.info(f"emulator: connection {self.stats.id}: {message}")
        await self.send(msg)
        self.request_close(1008, "concurrency limit exceeded")

    async def _limit_close(self, message: str, reason: str) -> None:
        if self.timing.limit_error_frames:
            logger.info(f"emulator: connection {self.stats.id}: error 1008: {message}")
            await self.send({"type": "error", "message": message, "code": 1008})
        self.request_close(1008, reason)

    async def _session_limit(self) -> None:
        limit = self.timing.session_limit_s
        await asyncio.sleep(limit)
        await self._limit_close(
            f"session limit reached: a session lasts at most {limit:g} s", "session limit reached"
        )

    async def _idle_timeout(self) -> None:
        while True:
            self._activity.clear()
            try:
                await asyncio.wait_for(self._activity.wait(), self.timing.idle_timeout_s)
            except TimeoutError:
                # A socket still generating audio is not idle, however long since the client spoke.
                if any(r.stats.texts for r in self.requests.values()):
                    continue
                await self._limit_close(
                    f"idle timeout: no message from the client for {self.timing.idle_timeout_s:g} s",
                    "idle timeout",
                )
                return

    async def _read_loop(self) -> None:
        async for msg in self.ws:
            if self._end.done():
                return
            self._activity.set()
            if msg.type == WSMsgType.TEXT:
                if self._in is not None:
                    self._in.put(msg.data)
                else:
                    await self._handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await self._error(None, 1008, "binary frames are not accepted", scoped=False)
            elif msg.type == WSMsgType.ERROR:
                return

    async def _handle(self, data: str) -> None:
        try:
            msg = json.loads(data)
        except json.JSONDecodeError:
            await self._error(None, 1008, "message is not valid JSON", scoped=False)
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            await self._error(None, 1008, "message must be an object with a 'type'", scoped=False)
            return
        kind = msg["type"]
        req_id = msg.get("client_req_id")
        if kind not in _CLIENT_TYPES:
            await self._error(
                req_id if isinstance(req_id, str) else None,
                1008,
                f"unknown message type {kind!r}; expected one of {', '.join(_CLIENT_TYPES)}",
                scoped=False,
            )
            return
        if kind == "setup":
            await self._on_setup(msg)
            return
        if not self._had_setup:
            await self._error(None, 1008, f"setup must come first (got {kind!r})", scoped=False)
            return
        req = self._find(req_id)
        if kind == "text":
            text = msg.get("text")
            if not isinstance(text, str):
                await self._error(req_id, 1008, "text message needs a string 'text'", False)
                return
            if req is None:
                await self._unknown_request(req_id, kind)
                return
            req.stats.texts.append(text)
            req.stats.text_times.append(time.monotonic())
            self.host.stats.total_text_messages += 1
            req.add_text(text)
            self.stats_changed()
        else:
            if req is not None:
                req.stats.eos_at = time.monotonic()
                req.end_of_stream()
                self.stats_changed()
            elif req_id is None and self.requests:
                # Unscoped on a multiplexed socket: end every request, close once all finish.
                self._close_when_idle = True
                now = time.monotonic()
                for r in self.requests.values():
                    r.stats.eos_at = now
                    r.end_of_stream()
                self.stats_changed()
            elif req_id is None:
                self.request_close(1000)
            else:
                await self._unknown_request(req_id, kind)

    def _find(self, req_id: Any) -> Request | None:
        if req_id in self.requests:
            return self.requests[req_id]
        return None

    async def _unknown_request(self, req_id: Any, kind: str) -> None:
        if isinstance(req_id, str):
            await self._error(
                req_id, 1008, f"{kind} for unknown or finished client_req_id {req_id!r}", True
            )
        else:
            await self._error(
                None, 1008, f"{kind} without an active request: send a new setup first", False
            )

    async def _on_setup(self, msg: dict[str, Any]) -> None:
        self._had_setup = True
        raw_id = msg.get("client_req_id")
        req_id = raw_id if isinstance(raw_id, str) else None
        multiplexed = req_id is not None and msg.get("close_ws_on_eos") is False
        try:
            config = parse_setup(msg)
        except SetupError as exc:
            await self._error(req_id, 1008, str(exc), scoped=multiplexed)
            return
        if config.client_req_id in self.requests:
            await self._error(
                req_id,
                1008,
                f"client_req_id {req_id!r} is already active on this connection",
                scoped=multiplexed,
            )
            return
        stats = RequestStats(
            connection_id=self.stats.id,
            client_req_id=config.client_req_id,
            setup=msg,
            setup_at=time.monotonic(),
            voice_id=config.voice_id,
            retry_for_s=config.retry_for_s,
        )
        self.stats.requests.append(stats)
        self.host.stats.requests.append(stats)
        slot: Slot | None = None
        if self.host.account.cap_counts == "requests":
            slot = self.host.take_session(self.stats)
            if slot is None:
                stats.error = concurrency_message(self.host.account.max_sessions or 0)
                await self.refuse_for_cap(req_id)
                return
        faults = self.host.take_request_faults()
        stats.faults = sorted(f.value for f in faults)
        req = Request(
            self,
            config,
            stats,
            latency=self.host.latency,
            faults=self.faults | faults,
            timing=self.timing,
            word_reports=self.word_reports,
            account=self.host.account,
            hold=self.host.take_hold(req_id),
            slot=slot,
        )
        self.requests[config.client_req_id] = req
        self._all_requests.append(req)
        self.stats_changed()
        req.start()
