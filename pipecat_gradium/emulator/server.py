"""The emulator's server: HTTP routes, the WebSocket upgrade, and its public handle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Iterable
from types import TracebackType
from typing import Any

from aiohttp import web
from loguru import logger

from . import voice
from .account import Account, CapCounts, Slot
from .connection import Connection
from .faults import Fault, FaultTiming, Hold, parse_faults
from .latency import LatencyModel
from .normalize import WordReports
from .stats import ConnectionStats, EmulatorStats

TTS_ROUTES = ("/api/speech/tts", "/speech/tts")
VOICE_ROUTES = ("/api/voices", "/voices")


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
        word_reports: What word reports carry for a rewritten word (see ``__init__``).
        max_sessions: The account's concurrency cap (None: no cap).
        cap_counts: What counts toward the cap: ``"sockets"`` or ``"requests"``.
        voices: The account's voice catalogue (None: every voice id is accepted).
        voice_check_s: Seconds from a setup with an unknown voice to its error.
        no_worker_s: How long ``Fault.NO_WORKER`` finds no worker for a setup.
        limit_error_frames: The session and idle limits send an error frame before closing.

    A connection takes ``session_limit_s``, ``idle_timeout_s``, ``fault_after_chunks``,
    ``slow_first_audio_s``, ``no_worker_s``, ``limit_error_frames`` and ``word_reports`` when
    it opens: changing those attributes on a running emulator applies to the connections
    opened afterwards. The account's settings (:attr:`account`) apply at once.

    **The account** (every limit off by default: no cap, any voice, a worker always free).
    What a client can rely on:

    * *Concurrency cap* (``max_sessions``; ``--max-sessions``). With
      ``cap_counts="sockets"`` (``--cap-counts sockets``, the default) a session is an open
      socket: a connection over the cap completes its handshake, then gets
      ``{"type":"error","code":1008,"message":"Concurrency limit exceeded: N concurrent
      sessions allowed"}`` (no ``client_req_id``; "session" singular when N is 1) and a close
      1008 with reason ``"concurrency limit exceeded"``, right away. With
      ``cap_counts="requests"`` a session is a request set up and not ended: a setup over the
      cap gets the same error carrying its ``client_req_id`` (if it has one), then the socket
      closes 1008 (whatever ``close_ws_on_eos`` says). A slot frees when its socket's end is
      decided (before the close frame is sent), or, counting requests, when the request's
      ``end_of_stream`` or error is about to be sent or its socket ends. The key is checked
      first: a wrong key is never counted against the cap. Records:
      ``stats.connections`` holds every attempt (refused ones too, with
      ``ConnectionStats.cap_refused``), ``stats.cap_refusals`` counts the refusals and
      ``stats.peak_sessions`` the most sessions held at once; ``emu.account.in_use`` is the
      count now.
    * *Voice catalogue* (``voices``; ``--voice ID``, repeatable). The voice is the setup's
      ``voice_id``, else its ``voice``; a setup with neither uses the server's default voice
      and is accepted. An unknown voice: no ``ready``; ``voice_check_s`` (default 0.3 s) after
      the setup, ``{"type":"error","code":1011,"message":"voice not found: <id>"}`` with the
      setup's ``client_req_id``, then a close 1011 (reason the same text), multiplexed or
      not. Recorded as ``RequestStats.voice_id`` and ``RequestStats.error``.
    * *Voice routes* (what the ``gradium`` SDK's ``voice_get`` / ``voice_list`` call):
      ``GET {base_url}voices/{uid}`` returns Gradium's voice record (``uid``, ``name``,
      ``description``, ``filename``, ``start_s``, ``is_catalog``, ``is_pro_clone``,
      ``language``, ``tags``) for a voice a setup may use (with no catalogue: every id, so
      the look-up never disagrees with the socket); any other id gets HTTP 404 with
      ``{"detail": "voice not found: <id>"}`` (the SDK raises
      ``aiohttp.ClientResponseError`` with ``status == 404`` and that text as its message).
      ``GET {base_url}voices/`` lists the catalogue (or, with none, the ids in
      ``DEFAULT_VOICES``: "YTpq7expH9539ERJ" and "_6Aslh2DxfmnRLmP"); the ids in
      ``DEFAULT_VOICES`` are catalogue voices (``is_catalog`` true), listed only with
      ``include_catalog=1``; ``skip`` and ``limit`` (0: all) page it. A missing or wrong
      ``x-api-key`` gets 401 ``{"detail": "invalid API key"}``. Every look-up is recorded in
      ``stats.voice_lookups``.
    * *No worker available* (:meth:`no_workers_for`, or ``Fault.NO_WORKER`` for
      ``no_worker_s`` from one setup: ``fault_next_request(Fault.NO_WORKER)``,
      ``--fault no_worker --no-worker-s S``, ``POST /_emulator/no_workers``). A setup that
      finds no worker waits up to its ``retry_for_s`` (absent or 0: no wait) for one; if a
      worker frees within it, the request goes on as usual (``ready`` comes ``setup_s`` after
      the worker); otherwise ``{"type":"error","code":1011,"message":"no worker available"}``
      with the setup's ``client_req_id``, before any ``ready`` or audio; the socket then
      closes 1011 unless the request is multiplexed (a ``client_req_id`` and
      ``close_ws_on_eos`` false), when only that request ends. Recorded as
      ``RequestStats.retry_for_s`` (every setup's, None when absent),
      ``RequestStats.worker_wait_s`` and ``RequestStats.error``. A ``retry_for_s`` that is not
      a finite number >= 0 is a bad setup (error 1008).
    * *Idle and session-duration limits* (``Fault.IDLE_TIMEOUT``, ``Fault.SESSION_LIMIT``).
      With ``limit_error_frames`` (``--limit-error-frames``; off by default, today's close
      alone) the close 1008 is preceded by an error frame without ``client_req_id``:
      ``"idle timeout: no message from the client for S s"`` or ``"session limit reached: a
      session lasts at most S s"``. The close reasons stay ``"idle timeout"`` and
      ``"session limit reached"``.
    * *Stall mid-answer* (``Fault.STALL_MID_ANSWER``): after ``fault_after_chunks`` audio
      chunks the request sends nothing more (no audio, word or ``end_of_stream``), the socket
      stays open until the client closes it; recorded as ``RequestStats.stalled_at``.
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
        max_sessions: int | None = None,
        cap_counts: CapCounts = "sockets",
        voices: Collection[str] | None = None,
        voice_check_s: float = 0.3,
        no_worker_s: float = 1.0,
        limit_error_frames: bool = False,
    ) -> None:
        """Configure the emulator (nothing runs until it is entered or started).

        ``word_reports`` says what the word reports carry when ``rewrite_rules`` rewrites a
        word (``"24"`` spoken as "twenty four"): ``"spoken"`` (one report per spoken word) or
        ``"source"`` (one report per source word, spanning its spoken words). Gradium's choice
        is not documented; the client must handle both.

        Raises:
            ValueError: If an account setting is out of range.
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
        self.no_worker_s = no_worker_s
        self.limit_error_frames = limit_error_frames
        self._account = Account(
            max_sessions=max_sessions,
            cap_counts=cap_counts,
            voices=voices,
            voice_check_s=voice_check_s,
        )
        self.stats = EmulatorStats()
        self._handshake_rng = self.latency.rng("handshake")
        self._next_faults: list[Fault] = []
        self._next_request_faults: list[Fault] = []
        self._outage_until: float | None = None
        self._holds: list[Hold] = []
        self._connections: set[Connection] = set()
        self._runner: web.AppRunner | None = None

    @property
    def account(self) -> Account:
        """The account behind the key.

        Its ``max_sessions``, ``cap_counts``, ``voices`` and ``voice_check_s`` may be changed
        at runtime; ``in_use`` is the number of sessions held now.
        """
        return self._account

    def take_session(self, stats: ConnectionStats) -> Slot | None:
        """A place under the concurrency cap, or None (the refusal is counted).

        Args:
            stats: The connection asking.

        Returns:
            The slot to release when the session ends, or None at the cap.
        """
        slot = self._account.take_slot()
        if slot is None:
            stats.cap_refused = True
            self.stats.cap_refusals += 1
        else:
            self.stats.peak_sessions = max(self.stats.peak_sessions, self._account.in_use)
        self.stats.changed()
        return slot

    def no_workers_for(self, seconds: float | None) -> None:
        """Find no worker for any setup for ``seconds`` from now (None: until workers_back).

        A setup in the window waits up to its ``retry_for_s`` for the window to end.

        Args:
            seconds: The window's length.
        """
        self._account.no_workers_for(seconds)

    def workers_back(self) -> None:
        """End a :meth:`no_workers_for` window now (setups waiting for a worker go on)."""
        self._account.workers_back()

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
        for route in VOICE_ROUTES:
            app.router.add_get(route, self._on_voice_list)
            app.router.add_get(route + "/", self._on_voice_list)
            app.router.add_get(route + "/{uid}", self._on_voice_get)
        app.router.add_get("/_emulator/stats", self._on_stats)
        app.router.add_post("/_emulator/no_workers", self._on_no_workers)
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
            no_worker_s=self.no_worker_s,
            limit_error_frames=self.limit_error_frames,
        )
        key = request.headers.get("x-api-key")
        key_ok = key == self.api_key and Fault.REJECT_KEY not in faults
        counts_sockets = key_ok and self._account.cap_counts == "sockets"
        session = self.take_session(conn_stats) if counts_sockets else None
        conn = Connection(
            self,
            ws,
            request,
            conn_stats,
            faults=faults,
            timing=timing,
            word_reports=self.word_reports,
            session=session,
        )
        self._connections.add(conn)
        try:
            if not key_ok:
                why = "missing" if key is None else "invalid"
                await conn.send(
                    {"type": "error", "message": f"{why} API key (x-api-key)", "code": 1008}
                )
                conn.request_close(1008, f"{why} API key")
            elif counts_sockets and session is None:
                await conn.refuse_for_cap()
            await conn.serve()
        finally:
            self._connections.discard(conn)
        return ws

    def _voice_key_error(self, request: web.Request) -> web.Response | None:
        if request.headers.get("x-api-key") != self.api_key:
            return web.json_response({"detail": "invalid API key"}, status=401)
        return None

    async def _on_voice_get(self, request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        self.stats.voice_lookups.append(uid)
        self.stats.changed()
        if (refused := self._voice_key_error(request)) is not None:
            return refused
        if not self._account.knows_voice(uid):
            return web.json_response({"detail": f"voice not found: {uid}"}, status=404)
        return web.json_response(self._account.voice_record(uid))

    async def _on_voice_list(self, request: web.Request) -> web.Response:
        self.stats.voice_lookups.append("")
        self.stats.changed()
        if (refused := self._voice_key_error(request)) is not None:
            return refused
        try:
            skip = int(request.query.get("skip", "0"))
            limit = int(request.query.get("limit", "100"))
            catalog = request.query.get("include_catalog", "0").lower() in ("1", "true")
            if skip < 0 or limit < 0:
                raise ValueError("skip and limit must be >= 0")
        except ValueError as exc:
            return web.json_response({"detail": str(exc)}, status=422)
        records = [self._account.voice_record(v) for v in self._account.listed_voices()]
        records = [r for r in records if catalog or not r["is_catalog"]][skip:]
        return web.json_response(records[:limit] if limit else records)

    async def _on_no_workers(self, request: web.Request) -> web.Response:
        try:
            body: Any = await request.json()
            seconds = body.get("seconds") if isinstance(body, dict) else None
            if seconds is not None and (
                isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0
            ):
                raise ValueError("seconds must be a number >= 0, or null (until 0 is posted)")
        except (ValueError, json.JSONDecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if seconds == 0:
            self.workers_back()
        else:
            self.no_workers_for(seconds)
        return web.json_response({"ok": True})

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
