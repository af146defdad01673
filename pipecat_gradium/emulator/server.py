"""The emulator's server: HTTP routes, the WebSocket upgrade, and its public handle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from aiohttp import web
from loguru import logger

from . import voice
from .connection import Connection
from .faults import Fault, FaultTiming, Hold, parse_faults
from .latency import LatencyModel
from .normalize import WordReports
from .stats import EmulatorStats

TTS_ROUTES = ("/api/speech/tts", "/speech/tts")


class GradiumEmulator:
    """A local server speaking Gradium's TTS WebSocket protocol with a real (eSpeak NG) voice.

    Use it as an async context manager; it serves on ``host:port`` (port 0: a free one)::

        async with GradiumEmulator(api_key="test-key") as emu:
            client = GradiumClient(base_url=emu.base_url, api_key="test-key")

    Args:
        api_key: The key clients must send in ``x-api-key``.
        host: Interface to listen on.
        port: Port to listen on; 0 picks a free one.
        latency: The latency model (None: ``LatencyModel()`` defaults). Mutable at runtime
            through :attr:`latency`; new requests use the new model.
        faults: Faults applied to every connection.
        session_limit_s: Seconds after which ``Fault.SESSION_LIMIT`` closes a connection.
        idle_timeout_s: Seconds without a client message after which ``Fault.IDLE_TIMEOUT``
            closes a connection.
        fault_after_chunks: Audio chunks a request sends before a mid-answer fault fires.
        slow_first_audio_s: Extra delay ``Fault.SLOW_FIRST_AUDIO`` adds before first audio.

    A connection takes ``session_limit_s``, ``idle_timeout_s``, ``fault_after_chunks``,
    ``slow_first_audio_s`` and ``word_reports`` when it opens: changing those attributes on a
    running emulator applies to the connections opened afterwards.
    """

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: LatencyModel | None = None,
        faults: Iterable[Fault] = (),
        session_limit_s: float = 300.0,
        idle_timeout_s: float = 180.0,
        fault_after_chunks: int = 3,
        slow_first_audio_s: float = 2.0,
        word_reports: WordReports | str = WordReports.SPOKEN,
    ) -> None:
        """Configure the emulator (nothing runs until it is entered or started).

        ``word_reports`` says what the word reports carry when ``rewrite_rules`` rewrites a
        word (``"24"`` spoken as "twenty four"): ``"spoken"`` (one report per spoken word) or
        ``"source"`` (one report per source word, spanning its spoken words). Gradium's choice
        is not documented; the client must handle both.
        """
        self.api_key = api_key
        self.host = host
        self.port = port
        self.latency = latency if latency is not None else LatencyModel()
        self.faults = set(faults)
        self.session_limit_s = session_limit_s
        self.idle_timeout_s = idle_timeout_s
        self.fault_after_chunks = fault_after_chunks
        self.slow_first_audio_s = slow_first_audio_s
        self.word_reports = WordReports(word_reports)
        self.stats = EmulatorStats()
        self._handshake_rng = self.latency.rng("handshake")
        self._next_faults: list[Fault] = []
        self._next_request_faults: list[Fault] = []
        self._outage_until: float | None = None
        self._holds: list[Hold] = []
        self._connections: set[Connection] = set()
        self._runner: web.AppRunner | None = None

    @property
    def ws_url(self) -> str:
        """The TTS WebSocket URL, e.g. ``ws://127.0.0.1:PORT/api/speech/tts``."""
        return f"ws://{self.host}:{self.port}/api/speech/tts"

    @property
    def base_url(self) -> str:
        """The API base URL for ``GradiumClient(base_url=...)``."""
        return f"http://{self.host}:{self.port}/api/"

    def fault_next_connection(self, fault: Fault, count: int = 1) -> None:
        """Apply ``fault`` to the next ``count`` connections opened.

        Args:
            fault: The fault.
            count: How many connections get it.
        """
        self._next_faults.extend([fault] * count)

    def fault_next_request(self, fault: Fault, count: int = 1) -> None:
        """Apply a per-request ``fault`` to the next ``count`` requests set up, on any socket.

        Args:
            fault: A fault that acts on one request (``fault.per_request``).
            count: How many requests get it.

        Raises:
            ValueError: If the fault acts on whole connections.
        """
        if not fault.per_request:
            raise ValueError(f"{fault.value} acts on connections: use fault_next_connection")
        self._next_request_faults.extend([fault] * count)

    def take_request_faults(self) -> set[Fault]:
        """The faults the next request gets (called by a connection at each setup).

        Returns:
            At most one fault, in the order they were asked for.
        """
        return {self._next_request_faults.pop(0)} if self._next_request_faults else set()

    def start_outage(self, duration_s: float | None = None, *, drop_open: bool = False) -> None:
        """Refuse every connection (HTTP 503) for ``duration_s`` seconds, or until ended.

        An outage that ends, as a deployment meets one.

        Args:
            duration_s: Length of the outage; None lasts until :meth:`end_outage`.
            drop_open: Also reset every open socket (a network outage cuts them too).
        """
        loop = asyncio.get_running_loop()
        self._outage_until = float("inf") if duration_s is None else loop.time() + duration_s
        if drop_open:
            for conn in list(self._connections):
                conn.request_reset()

    def end_outage(self) -> None:
        """Accept connections again."""
        self._outage_until = None

    @property
    def in_outage(self) -> bool:
        """Whether connections are being refused by :meth:`start_outage`."""
        if self._outage_until is None:
            return False
        if asyncio.get_running_loop().time() >= self._outage_until:
            self._outage_until = None
            return False
        return True

    def hold_after_chunks(self, n: int, client_req_id: str | None = None) -> Hold:
        """Pause the next request (with that id, if given) after it sent ``n`` audio chunks.

        Args:
            n: Audio chunks to send before pausing.
            client_req_id: Only a request with this id takes the hold.

        Returns:
            The hold: await ``hold.reached.wait()``, then call ``hold.release()``.
        """
        hold = Hold(n, client_req_id)
        self._holds.append(hold)
        return hold

    def take_hold(self, client_req_id: str | None) -> Hold | None:
        """Give a new request the first waiting hold that matches it.

        Args:
            client_req_id: The new request's id.

        Returns:
            The hold, or None.
        """
        for hold in self._holds:
            if hold.client_req_id is None or hold.client_req_id == client_req_id:
                self._holds.remove(hold)
                return hold
        return None

    async def start(self) -> None:
        """Start serving.

        Raises:
            VoiceUnavailableError: If eSpeak NG (the ``emulator`` extra) is missing.
        """
        await asyncio.to_thread(voice.ensure_available)
        app = web.Application()
        for route in TTS_ROUTES:
            app.router.add_get(route, self._on_tts)
        app.router.add_get("/_emulator/stats", self._on_stats)
        app.router.add_post("/_emulator/reset", self._on_reset)
        app.router.add_post("/_emulator/latency", self._on_latency)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        logger.info(f"emulator: serving {self.ws_url}")

    async def stop(self) -> None:
        """Close every socket, wait for every task, stop serving."""
        for conn in list(self._connections):
            conn.request_close(1001, "server shutting down")
        for hold in self._holds:
            hold.release()
        if self._connections:
            await asyncio.wait([asyncio.create_task(c.done.wait()) for c in self._connections])
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> GradiumEmulator:
        """Start serving.

        Returns:
            The emulator.
        """
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving."""
        await self.stop()

    # --- HTTP handlers ------------------------------------------------------------------

    async def _on_tts(self, request: web.Request) -> web.StreamResponse:
        try:
            faults = set(self.faults) | parse_faults(request.query.getall("fault", []))
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
        if self._next_faults:
            faults.add(self._next_faults.pop(0))
        conn_stats = self.stats.new_connection(request.path, sorted(f.value for f in faults))
        if Fault.REFUSE_CONNECTION in faults or self.in_outage:
            conn_stats.refused = True
            conn_stats.closed_at = conn_stats.opened_at
            conn_stats.closed_by = "server"
            self.stats.changed()
            return web.Response(status=503, text="Service unavailable (emulated fault)")
        await asyncio.sleep(self.latency.handshake_delay(self._handshake_rng))
        ws = web.WebSocketResponse(timeout=2.0, autoping=True, compress=self.latency.deflate)
        await ws.prepare(request)
        timing = FaultTiming(
            after_chunks=self.fault_after_chunks,
            slow_first_audio_s=self.slow_first_audio_s,
            session_limit_s=self.session_limit_s,
            idle_timeout_s=self.idle_timeout_s,
        )
        conn = Connection(
            self,
            ws,
            request,
            conn_stats,
            faults=faults,
            timing=timing,
            word_reports=self.word_reports,
        )
        self._connections.add(conn)
        try:
            key = request.headers.get("x-api-key")
            if key != self.api_key or Fault.REJECT_KEY in faults:
                why = "missing" if key is None else "invalid"
                await conn.send(
                    {"type": "error", "message": f"{why} API key (x-api-key)", "code": 1008}
                )
                conn.request_close(1008, f"{why} API key")
            await conn.serve()
        finally:
            self._connections.discard(conn)
        return ws

    async def _on_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.to_dict())

    async def _on_reset(self, request: web.Request) -> web.Response:
        self.stats.reset()
        return web.json_response({"ok": True})

    async def _on_latency(self, request: web.Request) -> web.Response:
        try:
            body: Any = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            self.latency = LatencyModel.from_dict(body, base=self.latency)
            self._handshake_rng = self.latency.rng("handshake")
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        logger.info(f"emulator: latency now {self.latency}")
        return web.json_response(self.latency.to_dict())
