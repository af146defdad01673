"""``GradiumStreamingTTSService``: Gradium's streaming TTS as a Pipecat stage.

Pipecat glue only. Phrases come from :mod:`pipecat_gradium.phrases`, messages from
:mod:`pipecat_gradium.protocol`, sockets from :mod:`pipecat_gradium.connection`, the
per-request record from :mod:`pipecat_gradium.requests`, and what happens under faults from
:mod:`pipecat_gradium.recovery`.
"""

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from loguru import logger
from pipecat.frames.frames import (
    AggregatedTextFrame,
    AggregatedTextProgressFrame,
    ControlFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMTextFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TextAggregationMode, WebsocketTTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.transforms import StripMarkdown
from pipecat.utils.types import NOT_GIVEN, NotGiven, is_given
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from pipecat_gradium.batching import AudioBatcher
from pipecat_gradium.connection import ConnectionPool, GradiumSocket, StandbyPool
from pipecat_gradium.phrases import ChunkMode, PhraseAggregator, split_message, wire_text
from pipecat_gradium.playback import UNSUPPORTED, next_context_item
from pipecat_gradium.protocol import (
    Audio,
    EndOfStream,
    Ready,
    ServerError,
    ServerMessage,
    Word,
    build_json_config,
    output_format_for_rate,
    setup_message,
)
from pipecat_gradium.recovery import Backoff, Recovery, context_of, continuation_id, mask_secrets
from pipecat_gradium.requests import GradiumRequest
from pipecat_gradium.tracing import note_first_audio, traced_tts

DEFAULT_URL = "wss://api.gradium.ai/api/speech/tts"
DEFAULT_VOICE = "YTpq7expH9539ERJ"
#: Languages Gradium speaks; ``language`` maps onto its text normalisation (``rewrite_rules``).
GRADIUM_LANGUAGES = ("en", "fr", "de", "es", "pt")


@dataclass
class GradiumStreamingTTSSettings(TTSSettings):
    """Runtime-updatable settings; a change applies from the next request, on the same socket.

    Parameters:
        temp: Sampling temperature, 0.0 to 1.4 (Gradium's default 0.7).
        cfg_coef: Voice similarity, 1.0 to 4.0 (default 2.0).
        padding_bonus: Speaking speed, -4.0 to 4.0: negative speaks faster, positive slower.
        rewrite_rules: Text normalisation, e.g. ``"en"`` or ``"TimeEn,Date"``. When unset,
            ``language`` (en, fr, de, es, pt) is used as the rule set.
        pronunciation_id: A Gradium pronunciation dictionary.
    """

    temp: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    cfg_coef: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    padding_bonus: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    rewrite_rules: str | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    pronunciation_id: str | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)


@dataclass
class _QuietFlushFrame(ControlFrame):
    """Internal: the LLM went quiet mid-answer; speak what is already here."""

    req_id: str = ""


def _given(value: Any) -> Any:
    return value if is_given(value) else None


class GradiumStreamingTTSService(WebsocketTTSService):
    """Streams an LLM's answer to Gradium phrase by phrase and plays the audio as it comes.

    One Gradium request per answer, set up at ``LLMFullResponseStartFrame`` on a socket that is
    already open; whole-word phrases as the tokens arrive; one ``<flush>`` after the first
    phrase; ``end_of_stream`` at the end of the response. A barge-in closes the socket of the
    answer still generating (the only way to stop Gradium) and the next answer goes out on a
    standby socket opened in advance.

    Example::

        tts = GradiumStreamingTTSService(
            settings=GradiumStreamingTTSService.Settings(voice="YTpq7expH9539ERJ"),
        )
    """

    Settings = GradiumStreamingTTSSettings
    _settings: Settings

    def __init__(
        self,
        *,
        api_key: str | None = None,
        url: str = DEFAULT_URL,
        sample_rate: int | None = None,
        settings: Settings | None = None,
        chunking: ChunkMode | str = ChunkMode.PHRASE,
        first_chunk_words: int = 2,
        ramp_chunk_words: Sequence[int] = (4, 8),
        max_chunk_chars: int = 80,
        flush_after_first_chunk: bool = True,
        quiet_flush_s: float = 0.6,
        standby_sockets: int = 2,
        max_socket_age_s: float = 240.0,
        connect_timeout_s: float = 10.0,
        stop_frame_timeout_s: float = 3.0,
        first_audio_timeout_s: float = 10.0,
        probe_backoff_s: float = 0.5,
        probe_backoff_max_s: float = 5.0,
        audio_batch_s: float = 0.4,
        strip_markdown: bool = True,
        **kwargs,
    ):
        """Create the service.

        Args:
            api_key: Gradium API key; ``None`` reads ``GRADIUM_API_KEY``.
            url: Gradium's TTS WebSocket URL (regional hosts: ``eu.api.gradium.ai``,
                ``us.api.gradium.ai``; the emulator's ``ws_url`` for offline use).
            sample_rate: Output rate; ``None`` uses the pipeline's. Gradium is asked for this
                rate when it offers it (8, 16, 22.05, 24, 44.1, 48 kHz), else resampled.
            settings: Voice, model, language and Gradium's generation settings.
            chunking: ``"phrase"`` (default), ``"sentence"`` or ``"word"``.
            first_chunk_words: Complete words that make the first phrase go out.
            ramp_chunk_words: In ``"phrase"`` chunking, the phrases after the first also go
                out at these many words, in turn, so Gradium has the next words before the
                first phrase's audio ends; ``()`` waits for punctuation or ``max_chunk_chars``.
            max_chunk_chars: Longest phrase sent in one message.
            flush_after_first_chunk: Send one ``<flush>`` after the first phrase, so Gradium
                does not hold its last words back while the LLM produces the next ones.
            quiet_flush_s: When the LLM is quiet this long mid-answer (a tool call, a slow
                model), send the complete words held and a ``<flush>``.
            standby_sockets: Sockets kept open in advance for the answer after a barge-in;
                0 turns standby off.
            max_socket_age_s: A socket this old takes no new request (Gradium ends sessions
                at 300 s).
            connect_timeout_s: Limit on one WebSocket handshake.
            stop_frame_timeout_s: Pipecat's audio-context idle timeout; the service keeps an
                answer's context open past it while Gradium still owes the answer audio.
            first_audio_timeout_s: Longest wait for audio Gradium owes (a cold start, a stall
                after the answer ended); past it the answer ends with one error.
            probe_backoff_s: First wait before probing an unreachable Gradium again.
            probe_backoff_max_s: Longest wait between probes (doubling from the first).
            audio_batch_s: While Gradium is more than 0.5 s ahead of playback, its 80 ms
                chunks are merged into frames of up to this long (every frame costs the
                pipeline the same CPU, so this halves the CPU per audio second under load);
                0 pushes each chunk as it arrives.
            strip_markdown: Run Pipecat's ``strip_markdown`` transform first, so markers and
                link URLs are not read aloud (the context keeps the LLM's text either way).
            **kwargs: Passed to Pipecat's ``WebsocketTTSService``.

        Raises:
            ValueError: If no API key is given or set, the URL is not ``ws://``/``wss://``, or
                a setting is out of range.
        """
        key = api_key if api_key is not None else os.environ.get("GRADIUM_API_KEY")
        if not key:
            raise ValueError(
                "GradiumStreamingTTSService needs a Gradium API key: pass api_key= or set "
                "GRADIUM_API_KEY (for offline use, run pipecat_gradium.emulator and pass its "
                "ws_url as url= with its key)."
            )
        if urlsplit(url).scheme not in ("ws", "wss"):
            raise ValueError(
                f"GradiumStreamingTTSService url must start with wss:// (or ws:// for a local "
                f"emulator), got {mask_secrets(url, url)!r}; Gradium's is {DEFAULT_URL}"
            )
        if first_audio_timeout_s <= 0 or probe_backoff_s <= 0 or probe_backoff_max_s <= 0:
            raise ValueError("first_audio_timeout_s and the probe back-offs must be > 0")
        default_settings = self.Settings(
            model="default",
            voice=DEFAULT_VOICE,
            language=None,
            temp=None,
            cfg_coef=None,
            padding_bonus=None,
            rewrite_rules=None,
            pronunciation_id=None,
        )
        if settings is not None:
            default_settings.apply_update(settings)
        kwargs.setdefault("reconnect_on_error", False)
        self._warned_languages: set[str] = set()  # the base's __init__ may already warn
        if strip_markdown:
            transforms = list(kwargs.get("text_transforms") or [])
            if not any(isinstance(t, StripMarkdown) for _, t in transforms):
                transforms.insert(0, ("*", StripMarkdown()))
            kwargs["text_transforms"] = transforms
        super().__init__(
            text_aggregation_mode=TextAggregationMode.SENTENCE,
            push_text_frames=False,
            push_stop_frames=True,
            push_start_frame=True,
            pause_frame_processing=False,
            stop_frame_timeout_s=stop_frame_timeout_s,
            sample_rate=sample_rate,
            settings=default_settings,
            **kwargs,
        )
        self._json_config()  # fail fast on out-of-range values
        self._api_key = key
        self._url = url
        self._flush_after_first_chunk = flush_after_first_chunk
        self._quiet_flush_s = quiet_flush_s
        self._standby_sockets = standby_sockets
        self._max_socket_age_s = max_socket_age_s
        self._connect_timeout_s = connect_timeout_s
        self._batcher = AudioBatcher(
            self._push_frame,
            lambda coro: self.create_task(coro, name="gradium-audio-batch"),
            max_s=audio_batch_s,
        )
        self._max_chunk_chars = max_chunk_chars
        self._phrases = PhraseAggregator(
            chunking=chunking,
            first_chunk_words=first_chunk_words,
            ramp_chunk_words=ramp_chunk_words,
            max_chars=max_chunk_chars,
            language=self._text_aggregator.language,
        )
        # Installed in Pipecat's sentence mode: the base feeds it tokens and speaks its chunks.
        self._text_aggregator = self._phrases
        self._requests: dict[str, GradiumRequest] = {}
        self._pool: ConnectionPool | None = None
        self._output_format = "pcm_48000"
        self._gradium_rate = 48000
        self._recovery = Recovery(
            self,
            url=url,
            first_audio_timeout_s=first_audio_timeout_s,
            keepalive_s=max(stop_frame_timeout_s / 2, 0.01),
            backoff=Backoff(initial_s=probe_backoff_s, max_s=probe_backoff_max_s),
        )
        self._watchdog: asyncio.Task | None = None
        #: The latest answer's time from its first LLM token to its first audio, in seconds.
        self.last_time_to_first_audio_s: float | None = None

    def can_generate_metrics(self) -> bool:
        """Whether this service reports metrics (TTFB, TTFA, usage): it does."""
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        """Map a Pipecat language to the Gradium rule set (``en``, ``fr``, ...).

        Args:
            language: The language.

        Returns:
            The two-letter code, or ``None`` (with a warning) when Gradium lacks it.
        """
        code = str(language.value if isinstance(language, Language) else language)
        base = code.split("-")[0].lower()
        if base in GRADIUM_LANGUAGES:
            return base
        self._warn_language(code)
        return None

    def _warn_language(self, code: str) -> None:
        if code not in self._warned_languages:
            self._warned_languages.add(code)
            logger.warning(
                f"{self}: Gradium has no {code!r} language rules, so none are sent; "
                f"supported: {', '.join(GRADIUM_LANGUAGES)}"
            )

    # ------------------------------------------------------------------ lifecycle

    async def start(self, frame: StartFrame):
        """Open the first socket and the standby sockets before any answer starts.

        Args:
            frame: The start frame.
        """
        await super().start(frame)
        self._output_format, self._gradium_rate = output_format_for_rate(self.sample_rate)
        if self._gradium_rate != self.sample_rate:
            logger.info(
                f"{self}: Gradium has no {self.sample_rate} Hz output; asking for "
                f"{self._output_format} and resampling"
            )
        self._pool = ConnectionPool(
            owner=self,
            connect=self._open_socket,
            on_message=self._on_message,
            on_lost=self._on_socket_lost,
            standby=self._standby_sockets,
            max_age_s=self._max_socket_age_s,
            # Every service of the process with this URL and key shares the standby sockets.
            share_key=StandbyPool.sharing_key(self._url, self._api_key),
        )
        await self._connect_websocket()

    async def stop(self, frame: EndFrame):
        """End gracefully: speak the text still held, end every request, let the audio drain.

        Pipecat calls ``stop`` before the base class flushes the turn, so the held text and the
        open requests are finished here, while the sockets are still open.

        Args:
            frame: The end frame.
        """
        if self._turn_context_id and self._turn_context_id in self._requests:
            remaining = await self._text_aggregator.flush()
            if remaining and remaining.text.strip():
                await self._handle_aggregated_text(self._aggregated_text_frame(remaining))
        for req in list(self._requests.values()):
            await self._end_request(req)
        await super().stop(frame)

    async def _connect_websocket(self):
        """Open the pool's sockets; a failure is reported once and probed in the background."""
        if self._pool is None or self._recovery.auth_failed:
            return
        try:
            await self._pool.start()
            await self._call_event_handler("on_connected")
        except Exception as e:
            await self._recovery.connect_failed(e, context_id=None)

    async def _disconnect_websocket(self):
        """Close every socket (used at stop and cancel)."""
        await self._stop_watchdog()
        self._batcher.clear()
        await self._recovery.stop()
        if self._pool and not self._pool.stopped:
            await self._pool.stop()
            await self._call_event_handler("on_disconnected")
        self._requests.clear()

    async def _disconnect(self):
        """Close the sockets on stop, cancel and cleanup (the base only sets a flag)."""
        await super()._disconnect()
        await self._disconnect_websocket()

    async def _receive_messages(self):
        """Unused: each socket has its own receive task in the pool."""

    async def _open_socket(self) -> ClientConnection:
        # No permessage-deflate: base64 PCM shrinks by about 40%, but inflating every audio
        # frame costs CPU on the hot path (about the margin between us and the built-in).
        return await self._websocket_connect(
            self._url,
            additional_headers={"x-api-key": self._api_key, "x-api-source": "pipecat-gradium"},
            open_timeout=self._connect_timeout_s,
            compression=None,
        )

    # ------------------------------------------------------------------ frames in

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Handle the service's own quiet-flush frame; note LLM tokens; the rest as Pipecat does.

        Args:
            frame: The frame.
            direction: Its direction.
        """
        if isinstance(frame, _QuietFlushFrame):
            await self._quiet_flush(frame.req_id)
            return
        if isinstance(frame, LLMTextFrame) and not frame.skip_tts and self._turn_context_id:
            req = self._requests.get(self._turn_context_id)
            if req:
                req.note_token()
        await super().process_frame(frame, direction)

    async def on_turn_context_created(self, context_id: str):
        """Set up the answer's Gradium request now, so set-up overlaps the LLM's first token.

        Args:
            context_id: The new turn's context id (used as ``client_req_id``).
        """
        req = await self._open_request(context_id)
        # Only LLM answers get the quiet-flush watchdog: a TTSSpeakFrame (which registers its
        # context first) is all text at once and must not replace the answer's watchdog.
        if req and context_id not in self._tts_contexts:
            await self._start_watchdog(req)

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Send one phrase of the answer; its audio arrives on the socket's receive task.

        Args:
            text: The phrase, with its trailing separator.
            context_id: The answer's context id.

        Yields:
            ``None``: audio is delivered through the audio context.
        """
        req = self._requests.get(context_id)
        if req is None or req.ended:
            req = await self._open_request(context_id)
        if req is not None:
            await self._send_text(req, text)
            if context_id != self._turn_context_id:
                # Text outside any turn: a request of its own, ended at once.
                await self._end_request(req)
        yield None

    async def flush_audio(self, context_id: str | None = None):
        """End the answer's request: Gradium speaks what it holds and sends end_of_stream.

        Args:
            context_id: The answer's context id.
        """
        req = self._requests.get(context_id or "")
        if req:
            await self._end_request(req)

    async def on_turn_context_completed(self):
        """End the turn's request even when it never got text, so nothing stays open."""
        context_id = self._turn_context_id
        await super().on_turn_context_completed()
        req = self._requests.get(context_id) if context_id else None
        if req:
            await self._end_request(req)  # a no-op when flush_audio already ended it
        if context_id and not self.audio_context_available(context_id):
            await self._recovery.forget(context_id)

    async def _handle_interruption(self, frame: InterruptionFrame, direction: FrameDirection):
        """Drop the interrupted answers and close the sockets still generating them."""
        doomed = [r for r in self._requests.values() if r.interruptible]
        await super()._handle_interruption(frame, direction)
        await self._stop_watchdog()
        generating = {r.socket for r in doomed if r.generating}
        for req in doomed:
            self._requests.pop(req.context_id, None)
            self._batcher.drop(req)
            await self._recovery.forget(req.context_id)
            if req.socket in generating:
                continue
            # Nothing is being generated for it: end it politely; the socket stays.
            await self._end_request(req, forget=True)
        for sock in generating:
            logger.debug(f"{self}: barge-in, closing {sock} to stop Gradium generating")
            assert self._pool is not None
            self._pool.close_soon(sock)

    async def _update_settings(self, delta: TTSSettings) -> dict[str, Any]:
        """Apply a settings delta; the next request's setup carries it, on the same socket.

        Args:
            delta: The changed settings.

        Returns:
            The changed fields with their previous values.
        """
        changed = await super()._update_settings(delta)
        try:
            self._json_config()
        except ValueError as e:
            for name, previous in changed.items():
                setattr(self._settings, name, previous)
            await self.push_error(
                error_msg=f"{self}: settings update rejected, previous values kept: {e}",
                # The application sent a bad value; the service itself is fine.
                category=ErrorCategory.APPLICATION,
            )
            return {}
        return changed

    # ------------------------------------------------------------------ requests

    def _json_config(self) -> dict[str, Any]:
        s = self._settings
        return build_json_config(
            temp=_given(s.temp),
            cfg_coef=_given(s.cfg_coef),
            padding_bonus=_given(s.padding_bonus),
            rewrite_rules=_given(s.rewrite_rules) or self._rewrite_language(),
        )

    def _rewrite_language(self) -> str | None:
        language = _given(self._settings.language)
        if language is None:
            return None
        code = str(language.value if isinstance(language, Language) else language)
        if code in GRADIUM_LANGUAGES:
            return code
        self._warn_language(code)
        return None

    async def _open_request(
        self, context_id: str, *, resume: GradiumRequest | None = None
    ) -> GradiumRequest | None:
        """Send a request's setup on the socket its kind goes on.

        Args:
            context_id: The Pipecat context the request speaks for.
            resume: A request of this context cut by a fault: the new one continues it.

        Returns:
            The open request, or None when none can be opened (the reason is reported).
        """
        if self._pool is None or self._pool.stopped or not self.is_usable:
            return None
        if not self._recovery.may_open(context_id):
            return None  # cut or unreachable: one error per answer, never a second request
        current = self._requests.get(context_id)
        if current and not resume and not current.ended:
            # A new response start inside an open turn continues the same answer.
            return current
        if current and not resume:
            # Ended but still playing: its audio keeps routing until end_of_stream.
            logger.debug(f"{self}: context {context_id} reopened after it ended")
            return None
        if resume:
            interruptible = resume.interruptible
        else:
            context = self._tts_contexts.get(context_id)
            interruptible = context.interruptible if context else True
        sock = await self._recovery.get_socket(
            context_id, interruptible=interruptible, resume=resume is not None
        )
        if sock is None:
            return None
        attempt = resume.attempt + 1 if resume else 1
        req = GradiumRequest(
            req_id=continuation_id(context_id, attempt),
            context_id=context_id,
            socket=sock,
            interruptible=interruptible,
            gradium_rate=self._gradium_rate,
            output_rate=self.sample_rate,
            attempt=attempt,
        )
        if resume:
            req.aligner.already_shown = resume.shown_not_heard()
            req.time_offset_s = resume.time_offset_s + resume.audio_s
            req.first_token_at = resume.first_token_at
            req.last_token_at = resume.last_token_at
            req.first_audio_at = resume.first_audio_at
        s = self._settings
        msg = setup_message(
            client_req_id=req.req_id,
            voice_id=str(s.voice),
            output_format=self._output_format,
            model_name=_given(s.model) or "default",
            json_config=self._json_config(),
            pronunciation_id=_given(s.pronunciation_id),
        )
        if not await req.send(msg):
            return None
        sock.requests.add(req.req_id)
        self._requests[context_id] = req
        self._recovery.watch(context_id)
        return req

    async def _send_text(self, req: GradiumRequest, text: str) -> None:
        # What goes on the wire: no control characters, no '<' that could open a tag Gradium
        # does not know, no message longer than max_chunk_chars (cut between words).
        for piece in split_message(wire_text(text), self._max_chunk_chars):
            await self._send_message(req, piece)

    async def _send_message(self, req: GradiumRequest, text: str) -> None:
        sent = await req.send_text(text, flush_first=self._flush_after_first_chunk)
        if sent is not None:
            await self.start_tts_usage_metrics(sent)
            return
        newer = self._requests.get(req.context_id)
        if newer is not None and newer is not req and req.texts:
            # The continuation was opened while this send failed: the text goes there.
            req.texts.pop()
            await self._send_message(newer, text)

    async def _end_request(self, req: GradiumRequest, *, forget: bool = False) -> None:
        await req.end()
        if forget and self._pool:
            self._pool.release(req.socket, req.req_id)

    async def _finish_request(self, req: GradiumRequest) -> None:
        await self._batcher.flush(req)  # audio received before the end (or a cut) was heard
        self._batcher.drop(req)
        if self._requests.get(req.context_id) is req:
            del self._requests[req.context_id]
            await self._recovery.unwatch(req.context_id)
        if self._pool:
            self._pool.release(req.socket, req.req_id)
        if self.audio_context_available(req.context_id):
            await self.remove_audio_context(req.context_id)

    # ------------------------------------------------------------------ quiet LLM

    async def _start_watchdog(self, req: GradiumRequest) -> None:
        await self._stop_watchdog()
        self._watchdog = self.create_task(self._watch_turn(req), name="gradium-quiet-watchdog")

    async def _stop_watchdog(self) -> None:
        if self._watchdog:
            await self.cancel_task(self._watchdog)
            self._watchdog = None

    async def _watch_turn(self, req: GradiumRequest) -> None:
        """While the answer is open: flush when the LLM goes quiet.

        A timer, not an event per token: it wakes at the next deadline only, so a fast token
        stream costs nothing here. (The answer's audio context is kept open by its
        :class:`~pipecat_gradium.recovery.AnswerWatch`.)
        """
        flushed_for: float | None = None  # the last_token_at a quiet flush was sent for
        while not req.ended and self._requests.get(req.context_id) is req:
            wake = time.monotonic() + self._quiet_flush_s
            last = req.last_token_at
            if last is not None and flushed_for != last:
                due = last + self._quiet_flush_s
                if time.monotonic() >= due:
                    await self.queue_frame(_QuietFlushFrame(req_id=req.req_id))
                    flushed_for = last
                else:
                    wake = due
            await asyncio.sleep(max(wake - time.monotonic(), 0.001))

    async def _quiet_flush(self, req_id: str) -> None:
        req = self._requests.get(context_of(req_id))
        if req is None or req.ended or req.context_id != self._turn_context_id:
            return
        ready = self._phrases.take_ready_text()
        if ready:
            await self._handle_aggregated_text(
                self._aggregated_text_frame(Aggregation(ready, TextType.SENTENCE))
            )
        if req.unflushed:
            logger.debug(f"{self}: LLM quiet for {self._quiet_flush_s}s, flushing {req.req_id}")
            await req.flush()

    # ------------------------------------------------------------------ frames out

    async def _on_message(self, sock: GradiumSocket, msg: ServerMessage) -> None:
        if isinstance(msg, ServerError) and msg.client_req_id is None:
            await self._recovery.on_socket_error(sock, msg)
            return
        wire_id = msg.client_req_id or ""
        req = self._requests.get(context_of(wire_id))
        if req is None or req.req_id != wire_id or req.socket is not sock or req.failed:
            return  # an interrupted, replaced or unknown request: drop
        if isinstance(msg, Audio):
            await self._on_audio(req, msg)
        elif isinstance(msg, Word):
            req.add_word(msg.text, msg.start_s, msg.stop_s)
            await self._release_heard_words(req)
        elif isinstance(msg, EndOfStream):
            req.done = True
            tail = req.convert(b"", last=True)
            if tail:
                await self._push_audio(req, tail)
            await self._release_heard_words(req)
            await self._finish_request(req)
        elif isinstance(msg, ServerError):
            await self._recovery.on_request_error(req, msg)
        elif isinstance(msg, Ready):
            logger.trace(f"{self}: request {req.req_id} ready ({msg.request_id})")

    async def _on_audio(self, req: GradiumRequest, msg: Audio) -> None:
        if req.first_audio_at is None:
            req.first_audio_at = time.monotonic()
            if req.first_token_at is not None:
                ttfa = req.first_audio_at - req.first_token_at
                self.last_time_to_first_audio_s = ttfa
                note_first_audio(self, req.context_id, ttfa)
                logger.debug(f"{self}: time to first audio from first token {ttfa * 1000:.0f} ms")
        pcm = req.convert(msg.pcm)
        if pcm:
            await self._push_audio(req, pcm)
        if req.released < len(req.words):
            await self._release_heard_words(req)

    async def _push_audio(self, req: GradiumRequest, pcm: bytes) -> None:
        await self._batcher.add(req, pcm, bytes_per_s=self.sample_rate * 2)

    async def _push_frame(self, req: GradiumRequest, pcm: bytes) -> None:
        if self._requests.get(req.context_id) is not req:
            return  # interrupted or replaced while its audio was held
        frame = TTSAudioRawFrame(pcm, self.sample_rate, 1, context_id=req.context_id)
        await self.append_to_audio_context(req.context_id, frame)

    async def _release_heard_words(self, req: GradiumRequest) -> None:
        """Pass on the words whose audio has fully arrived, after that audio.

        A word reported but cut mid-way by a fault never reaches the context; its
        continuation re-sends it.
        """
        heard = req.take_heard()
        if heard:
            await self._batcher.flush(req)  # the words go after their audio
            await self.add_word_timestamps(
                [(word, start + req.time_offset_s) for word, start in heard], req.context_id
            )

    # ------------------------------------------------------------------ the context's truth

    async def _start_audio_context(self, context_id: str):
        # An answer that can get no request (unreachable, unusable service) opens no audio
        # context: Pipecat would hold the pipeline stop_frame_timeout_s waiting for audio.
        if not self.is_usable:
            self._recovery.dead.add(context_id)
        if context_id in self._recovery.dead:
            return
        await super()._start_audio_context(context_id)

    async def _next_audio_context_item(self, context_id: str) -> Any:
        # Pipecat's read costs a task and ~3 loop turns per item: too slow under load.
        item = await next_context_item(
            self._audio_context_manager, context_id, self._stop_frame_timeout_s
        )
        if item is UNSUPPORTED:
            return await super()._next_audio_context_item(context_id)
        return item

    async def _register_spoken_text(
        self, src_frame: AggregatedTextFrame, text: str, context_id: str
    ):
        await super()._register_spoken_text(src_frame, text, context_id)
        if context_id in self._recovery.dead and not self.audio_context_available(context_id):
            # Never spoken: complete its slot at once, with no words, so nothing waits on it.
            await self._apply_force_complete(context_id)

    async def _apply_force_complete(self, context_id: str):
        """At an answer's end Pipecat writes its unspoken text as spoken; not for a cut answer.

        An answer cut by a fault (no continuation possible) keeps only the words heard: its
        slots are completed without the word frames Pipecat builds for the rest.
        """
        if context_id not in self._recovery.dead:
            await super()._apply_force_complete(context_id)
            return
        frames = self._aggregated_frame_sequencer.force_complete(
            context_id, self._word_timestamp_tracker.last_pts
        )
        await self._push_word_frames(
            [f for f in frames if not isinstance(f, (TTSTextFrame, AggregatedTextProgressFrame))]
        )

    async def _record_context_audio_outcome(self, context_id: str, received_audio: bool):
        # An answer already given its error (or cut short) is not reported a second time.
        if context_id not in self._recovery.reported:
            await super()._record_context_audio_outcome(context_id, received_audio)

    async def on_audio_context_completed(self, context_id: str):
        """Forget the fault bookkeeping of an answer whose audio context has ended.

        Args:
            context_id: The answer.
        """
        await super().on_audio_context_completed(context_id)
        # A cut answer whose LLM still streams stays dead until its turn completes, so none of
        # its later phrases opens a request under a used client_req_id.
        if context_id not in self._requests and context_id != self._turn_context_id:
            await self._recovery.forget(context_id)

    # ------------------------------------------------------------------ used by recovery

    async def _on_socket_lost(self, sock: GradiumSocket, reason: str) -> None:
        # The audio held for the socket's requests was heard: it goes before a continuation's.
        for req in self._requests_on(sock):
            await self._batcher.flush(req)
        await self._recovery.on_socket_lost(sock, reason)

    def _requests_on(self, sock: GradiumSocket) -> list[GradiumRequest]:
        return [r for r in self._requests.values() if r.socket is sock]

    async def _resend(self, new: GradiumRequest, text: str, *, ended: bool) -> None:
        """Give a continuation the text its cut request had not spoken, and its end if due."""
        if text.strip():
            await self._send_text(new, text)
        if ended:
            await self._end_request(new)
        elif new.context_id == self._turn_context_id and new.context_id not in self._tts_contexts:
            await self._start_watchdog(new)

    def _run_pool_stop(self) -> None:
        # Called from a socket's receive task: stopping the pool cancels that task, so it
        # runs as a task of its own.
        if self._pool:
            self.create_task(self._pool.stop(), name="gradium-pool-stop")
