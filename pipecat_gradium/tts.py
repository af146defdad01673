"""``GradiumStreamingTTSService``: Gradium's streaming TTS as a Pipecat stage.

The Pipecat glue: frames in and out, audio contexts, settings, metrics, events and errors. The
service maps Pipecat context ids to :class:`~pipecat_gradium.answer.Answer` objects, which own
everything about one answer (attempts, faults, timer, audio, words); sockets live in
:mod:`pipecat_gradium.sockets`, and whether Gradium can be reached is decided by
:mod:`pipecat_gradium.reachability`. Every error the user sees is pushed from here.
"""

import asyncio
import os
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from loguru import logger
from pipecat.frames.frames import (
    AggregatedTextFrame,
    ControlFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TTSAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TextAggregationMode, WebsocketTTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.transforms import StripMarkdown
from pipecat.utils.types import is_given
from websockets.asyncio.client import ClientConnection

from pipecat_gradium.answer import Answer, AnswerConfig, AnswerKind
from pipecat_gradium.loop_lag import LoopLagMonitor
from pipecat_gradium.phrases import ChunkMode, PhraseAggregator
from pipecat_gradium.pipecat_compat import complete_without_words, missing_members
from pipecat_gradium.playback import UNSUPPORTED, next_context_item
from pipecat_gradium.protocol import (
    POLICY_VIOLATION,
    ErrorKind,
    ServerError,
    ServerMessage,
    build_json_config,
    error_kind,
    mask_secrets,
    output_format_for_rate,
    setup_message,
)
from pipecat_gradium.reachability import OutageProber, Reachability, rejected_key_status
from pipecat_gradium.settings import GradiumStreamingTTSSettings, GradiumStreamingTTSTuning
from pipecat_gradium.sockets import GradiumSocket, ServiceSockets, StandbyPool
from pipecat_gradium.tracing import note_first_audio, traced_tts
from pipecat_gradium.voices import voice_exists

DEFAULT_URL = "wss://api.gradium.ai/api/speech/tts"
DEFAULT_VOICE = "YTpq7expH9539ERJ"
#: Languages Gradium speaks; ``language`` maps onto its text normalisation (``rewrite_rules``).
GRADIUM_LANGUAGES = ("en", "fr", "de", "es", "pt")


@dataclass
class _SpeakHeldFrame(ControlFrame):
    """Internal: speak what is held mid-answer (the LLM went quiet, or audio runs low)."""

    context_id: str = ""


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
    Tuning = GradiumStreamingTTSTuning
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
        quiet_flush_s: float = 0.6,
        standby_sockets: int = 2,
        strip_markdown: bool = True,
        tuning: Tuning | None = None,
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
                first phrase's audio ends; ``()`` waits for punctuation or the longest message.
            quiet_flush_s: When the LLM is quiet this long mid-answer (a tool call, a slow
                model), send the complete words held and a ``<flush>``.
            standby_sockets: Sockets kept open in advance for the answer after a barge-in;
                0 turns standby off.
            strip_markdown: Run Pipecat's ``strip_markdown`` transform first, so markers and
                link URLs are not read aloud (the context keeps the LLM's text either way).
            tuning: Limits most bots never change (timeouts, back-offs, message size, audio
                batching); see :class:`GradiumStreamingTTSTuning`.
            **kwargs: Passed to Pipecat's ``WebsocketTTSService`` (e.g. ``stop_frame_timeout_s``,
                Pipecat's audio-context idle timeout; the service keeps an answer's context
                open past it while Gradium still owes the answer audio).

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
        if standby_sockets < 0:
            raise ValueError("GradiumStreamingTTSService standby_sockets must be >= 0")
        tuning = tuning or GradiumStreamingTTSTuning()
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
        kwargs.setdefault("stop_frame_timeout_s", 3.0)
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
            sample_rate=sample_rate,
            settings=default_settings,
            **kwargs,
        )
        missing = missing_members(self)
        if missing:
            logger.warning(
                f"{self}: this Pipecat lacks {', '.join(missing)}, which pipecat-gradium relies "
                "on (tested with Pipecat 1.14): install a Pipecat version it supports"
            )
        self._json_config()  # fail fast on out-of-range values
        self._api_key = key
        self._url = url
        self._tuning = tuning
        self._quiet_flush_s = quiet_flush_s
        self._standby_sockets = standby_sockets
        self._phrases = PhraseAggregator(
            chunking=chunking,
            first_chunk_words=first_chunk_words,
            ramp_chunk_words=ramp_chunk_words,
            max_chars=tuning.max_chunk_chars,
            language=self._text_aggregator.language,
            loaded_first_chunk_words=tuning.loaded_first_chunk_words,
            loaded=lambda: self.loop_loaded,
        )
        # Set at start: the monitor belongs to the loop the pipeline runs on.
        self._lag: LoopLagMonitor | None = None
        # Installed in Pipecat's sentence mode: the base feeds it tokens and speaks its chunks.
        self._text_aggregator = self._phrases
        self._answers: dict[str, Answer] = {}
        # Set by a barge-in that ended an LLM answer, until that answer's end or the next one's
        # start: LLM text arriving meanwhile is the interrupted answer's, still in flight.
        self._after_barge_in = False
        self._sockets: ServiceSockets | None = None
        self._ending = False
        self._capped_reported = False  # the plan's concurrency limit is said once
        self._rejected_voice: str | None = None  # a voice Gradium does not know, said once
        self._voice_check: asyncio.Task | None = None
        self._answer_config: AnswerConfig | None = None
        self._output_format = "pcm_48000"
        self._reachability = Reachability(
            OutageProber(
                owner=self,
                probe=self._probe,
                on_recovered=self._on_recovered,
                backoff_s=tuning.probe_backoff_s,
                backoff_max_s=tuning.probe_backoff_max_s,
            )
        )
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
            The two-letter code, or ``None`` (with a warning, once) when Gradium lacks it.
        """
        code = str(language.value if isinstance(language, Language) else language)
        base = code.split("-")[0].lower()
        if base in GRADIUM_LANGUAGES:
            return base
        if code not in self._warned_languages:
            self._warned_languages.add(code)
            logger.warning(
                f"{self}: Gradium has no {code!r} language rules, so none are sent; "
                f"supported: {', '.join(GRADIUM_LANGUAGES)}"
            )
        return None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, frame: StartFrame):
        """Open the first socket and the standby sockets before any answer starts.

        Args:
            frame: The start frame.
        """
        await super().start(frame)
        self._output_format, gradium_rate = output_format_for_rate(self.sample_rate)
        if gradium_rate != self.sample_rate:
            logger.info(
                f"{self}: Gradium has no {self.sample_rate} Hz output; asking for "
                f"{self._output_format} and resampling"
            )
        tuning = self._tuning
        self._answer_config = AnswerConfig(
            tuning=tuning,
            gradium_rate=gradium_rate,
            output_rate=self.sample_rate,
            quiet_flush_s=self._quiet_flush_s,
            keepalive_s=max(self._stop_frame_timeout_s / 2, 0.01),
        )
        self._sockets = ServiceSockets(
            owner=self,
            connect=self._open_socket,
            on_message=self._on_message,
            on_lost=self._on_socket_lost,
            standby=self._standby_sockets,
            max_age_s=tuning.max_socket_age_s,
            # Every service of the process with this URL and key shares the standby sockets.
            share_key=StandbyPool.sharing_key(self._url, self._api_key),
        )
        self._ending = False
        if self._lag is None:
            self._lag = LoopLagMonitor.for_running_loop()
            self._lag.acquire()
        self._check_voice()
        await self._connect_websocket()

    async def stop(self, frame: EndFrame):
        """End gracefully: speak the text still held, end every request, let the audio drain.

        Pipecat calls ``stop`` before the base class flushes the turn, so the held text and the
        open requests are finished here, while the sockets are still open.

        Args:
            frame: The end frame.
        """
        turn = self._turn_answer
        if turn is not None and turn.attempt is not None:
            remaining = await self._text_aggregator.flush()
            if remaining and remaining.text.strip():
                await self._handle_aggregated_text(self._aggregated_text_frame(remaining))
        self._ending = True  # audio still owed is waited for stall_timeout_s at most
        for answer in list(self._answers.values()):
            await answer.end()
        await super().stop(frame)

    async def _connect_websocket(self):
        """Open the sockets; a failure is reported once and probed in the background."""
        if self._sockets is None or self._reachability.key_rejected:
            return
        try:
            await self._sockets.start()
            await self._call_event_handler("on_connected")
        except Exception as e:
            await self._connect_failed(e, None)

    async def _disconnect_websocket(self):
        """Close every socket (used at stop and cancel)."""
        if self._voice_check is not None:
            await self.cancel_task(self._voice_check)
            self._voice_check = None
        for answer in list(self._answers.values()):
            await answer.drop()
        await self._reachability.stop()
        if self._sockets and not self._sockets.stopped:
            await self._sockets.stop()
            await self._call_event_handler("on_disconnected")
        self._answers.clear()

    async def _disconnect(self):
        """Close the sockets on stop, cancel and cleanup (the base only sets a flag)."""
        await super()._disconnect()
        await self._disconnect_websocket()
        lag, self._lag = self._lag, None
        if lag is not None:
            lag.release()

    @property
    def loop_loaded(self) -> bool:
        """Whether the event loop runs late (asked at an answer's first phrase)."""
        return self._lag is not None and self._lag.loaded

    @property
    def _turn_answer(self) -> Answer | None:
        """The answer of the LLM turn in progress, if it has one."""
        return self._answers.get(self._turn_context_id) if self._turn_context_id else None

    @property
    def loop_strained(self) -> bool:
        """Whether the loop is loaded, or shared by many services and starting to run late."""
        return self._lag is not None and self._lag.strained

    async def _receive_messages(self):
        """Unused: each socket has its own receive task in :mod:`pipecat_gradium.sockets`."""

    async def _open_socket(self) -> ClientConnection:
        # No permessage-deflate: base64 PCM shrinks by about 40%, but inflating every audio
        # frame costs CPU on the hot path.
        return await self._websocket_connect(
            self._url,
            additional_headers={"x-api-key": self._api_key, "x-api-source": "pipecat-gradium"},
            open_timeout=self._tuning.connect_timeout_s,
            compression=None,
        )

    # ------------------------------------------------------------------ frames in

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Handle the service's own quiet-flush frame; note LLM tokens; the rest as Pipecat does.

        Args:
            frame: The frame.
            direction: Its direction.
        """
        if isinstance(frame, _SpeakHeldFrame):
            await self._speak_held(frame.context_id)
            return
        if self._after_barge_in and self._drop_after_barge_in(frame):
            return
        if isinstance(frame, LLMTextFrame) and not frame.skip_tts:
            answer = self._turn_answer
            if answer is not None and answer.attempt is not None:
                answer.note_token()
        await super().process_frame(frame, direction)

    def _drop_after_barge_in(self, frame: Frame) -> bool:
        """Whether ``frame`` is the interrupted answer's LLM text, still in flight: dropped.

        A barge-in (a system frame) overtakes the LLM tokens still moving through the
        processors before this one, and a cancelled LLM still pushes its answer's end. That
        text would otherwise be spoken as a request of its own after the barge-in, or at the
        head of the next answer. It is dropped until the interrupted answer's end (passed on,
        with nothing left to speak) or the next answer's start, either of which ends this state.

        Args:
            frame: A frame arriving after the barge-in.

        Returns:
            True for the interrupted answer's LLM text, False for any other frame.
        """
        if isinstance(frame, LLMTextFrame) and not frame.skip_tts:
            logger.debug(f"{self}: dropping LLM text of an interrupted answer: {frame.text!r}")
            return True
        if isinstance(frame, LLMFullResponseEndFrame | LLMFullResponseStartFrame):
            self._after_barge_in = False
        return False

    async def on_turn_context_created(self, context_id: str):
        """Set up the answer's Gradium request now, so set-up overlaps the LLM's first token.

        Args:
            context_id: The new turn's context id (used as ``client_req_id``).
        """
        # A TTSSpeakFrame registers its context before its turn starts; an LLM answer's is
        # registered with its first phrase.
        kind = AnswerKind.SPEAK if context_id in self._tts_contexts else AnswerKind.LLM
        await self._open(context_id, kind=kind)

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Send one phrase of the answer; its audio arrives on the socket's receive task.

        Args:
            text: The phrase, with its trailing separator.
            context_id: The answer's context id.

        Yields:
            ``None``: audio is delivered through the audio context.
        """
        answer = self._answers.get(context_id)
        if answer is None or not answer.open_for_text:
            answer = await self._open(context_id, kind=AnswerKind.SPEAK)
        if answer is not None:
            await answer.send_text(text)
            if context_id != self._turn_context_id:
                # Text outside any turn: a request of its own, ended at once.
                await answer.end()
        yield None

    async def flush_audio(self, context_id: str | None = None):
        """End the answer's request: Gradium speaks what it holds and sends end_of_stream.

        Args:
            context_id: The answer's context id.
        """
        answer = self._answers.get(context_id or "")
        if answer is not None:
            await answer.end()

    async def on_turn_context_completed(self):
        """End the turn's request even when it never got text, so nothing stays open."""
        context_id = self._turn_context_id
        await super().on_turn_context_completed()
        answer = self._answers.get(context_id) if context_id else None
        if answer is not None:
            await answer.end()  # a no-op when flush_audio already ended it
        if context_id and not self.audio_context_available(context_id):
            await self._forget(context_id)

    async def _open(self, context_id: str, *, kind: AnswerKind) -> Answer | None:
        """The answer of ``context_id`` with an attempt open for its text, or None.

        Args:
            context_id: The Pipecat context the answer speaks for.
            kind: What it speaks, when it is new.

        Returns:
            The answer, or None when no request can be opened (the reason is reported).
        """
        if not self._may_connect():
            return None
        answer = self._answers.get(context_id)
        if answer is not None and answer.cut:
            return None  # cut or unreachable: one error per answer, never a second request
        if answer is not None and answer.attempt is not None:
            if answer.open_for_text:
                return answer  # a new response start inside an open turn continues it
            # Ended but still playing: its audio keeps routing until end_of_stream.
            logger.debug(f"{self}: context {context_id} reopened after it ended")
            return None
        if answer is None:
            answer = self._new_answer(context_id, kind)
        if self._rejected_voice is not None and self._rejected_voice == str(self._settings.voice):
            # Said once already, naming the voice: no request, no second error.
            answer.mark_cut()
            answer.reported = True
            return None
        return answer if await answer.start() else None

    def _new_answer(self, context_id: str, kind: AnswerKind) -> Answer:
        assert self._sockets is not None and self._answer_config is not None
        context = self._tts_contexts.get(context_id)
        answer = Answer(
            context_id,
            kind=kind,
            interruptible=context.interruptible if context else True,
            host=self,
            sockets=self._sockets,
            config=self._answer_config,
        )
        self._answers[context_id] = answer
        return answer

    async def _speak_held(self, context_id: str) -> None:
        answer = self._answers.get(context_id)
        if answer is None or not answer.open_for_text or context_id != self._turn_context_id:
            return
        ready = self._phrases.take_ready_text()
        if ready:
            await self._handle_aggregated_text(
                self._aggregated_text_frame(Aggregation(ready, TextType.SENTENCE))
            )
        if answer.unflushed:
            logger.debug(f"{self}: speaking the words held for {context_id} (<flush>)")
            await answer.flush()

    async def _handle_interruption(self, frame: InterruptionFrame, direction: FrameDirection):
        """Drop the interrupted answers and close the sockets still generating them."""
        doomed = [a for a in self._answers.values() if a.attempt is not None and a.interruptible]
        turn = self._turn_context_id
        await super()._handle_interruption(frame, direction)
        if turn is not None and self._turn_context_id is None:
            self._after_barge_in = True
        generating = {a.attempt.socket for a in doomed if a.attempt and a.attempt.generating}
        for answer in doomed:
            self._answers.pop(answer.context_id, None)
            attempt = answer.attempt
            await answer.drop()
            if attempt is None or attempt.socket in generating:
                continue
            # Nothing is being generated for it: end it politely; the socket stays.
            await attempt.end()
            if self._sockets:
                self._sockets.release(attempt.socket, attempt.req_id)
        for sock in generating:
            logger.debug(f"{self}: barge-in, closing {sock} to stop Gradium generating")
            if self._sockets:
                self._sockets.close_soon(sock)

    async def _update_settings(self, delta: TTSSettings) -> dict[str, Any]:
        """Apply a settings delta; the next request's setup carries it, on the same socket.

        Args:
            delta: The changed settings.

        Returns:
            The changed fields with their previous values.
        """
        changed = await super()._update_settings(delta)
        if "voice" in changed:
            self._rejected_voice = None
            self._check_voice()
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

    def _json_config(self) -> dict[str, Any]:
        s = self._settings
        language = _given(s.language)
        return build_json_config(
            temp=_given(s.temp),
            cfg_coef=_given(s.cfg_coef),
            padding_bonus=_given(s.padding_bonus),
            rewrite_rules=_given(s.rewrite_rules)
            or (self.language_to_service_language(language) if language else None),
        )

    # ------------------------------------------------------------------ what answers need

    async def socket_for(self, answer: Answer, *, continuation: bool) -> GradiumSocket | None:
        """A socket for an answer's next attempt; None when none can be had (reported).

        One attempt per answer, shared with a probe in flight during an outage.

        Args:
            answer: The answer.
            continuation: Whether the attempt continues a cut one (its fault is reported).

        Returns:
            The socket, or None.
        """
        sockets = self._sockets
        if sockets is None or not self._may_connect():
            return None
        try:
            await self._reachability.before_connect()
            sock = await sockets.acquire(interruptible=answer.interruptible)
        except Exception as e:
            # No socket: the answer ends now, with one error, and Gradium is probed.
            answer.mark_cut()
            if self.audio_context_available(answer.context_id):
                await self.remove_audio_context(answer.context_id)
            if continuation:
                self._reachability.continuation_failed(answer.context_id)
            else:
                await self._connect_failed(e, answer)
            return None
        self._reachability.connected()
        return sock

    def _may_connect(self) -> bool:
        """Whether a new request may go out: sockets running, service usable, key not rejected."""
        return (
            self._sockets is not None
            and not self._sockets.stopped
            and self.is_usable
            and not self._reachability.key_rejected
        )

    def setup_message(self, req_id: str) -> str:
        """The setup of a new request under the current settings.

        Args:
            req_id: Its ``client_req_id``.

        Returns:
            The JSON frame.
        """
        s = self._settings
        return setup_message(
            client_req_id=req_id,
            voice_id=str(s.voice),
            output_format=self._output_format,
            model_name=_given(s.model) or "default",
            json_config=self._json_config(),
            pronunciation_id=_given(s.pronunciation_id),
            retry_for_s=self._tuning.retry_for_s,
        )

    def may_continue(self, answer: Answer) -> bool:
        """Whether a cut attempt may go on: the key holds and the answer still plays.

        An answer whose request failed before its first phrase has no audio context yet: it
        still goes on.

        Args:
            answer: The answer.

        Returns:
            Whether a continuation may be opened.
        """
        if self._reachability.key_rejected:
            return False
        if self.audio_context_available(answer.context_id):
            return True
        return answer.first_audio_at is None and self._answers.get(answer.context_id) is answer

    @property
    def ending(self) -> bool:
        """Whether the pipeline is ending (an ``EndFrame`` arrived)."""
        return self._ending

    async def concurrency_capped(self, answer: Answer | None, message: str) -> None:
        """Gradium refused a session for the account's concurrency cap: say so once.

        Args:
            answer: The answer that met it (None: a socket of the service's own).
            message: Gradium's words.
        """
        if answer is not None:
            answer.reported = True  # its wait and retry follow; Pipecat need not repeat it
        if self._capped_reported:
            return
        self._capped_reported = True
        await self.report(
            None,
            f"Gradium refused a session: the account's plan concurrency limit is reached "
            f"({message}). Each call holds one socket and every process keeps "
            f"standby_sockets={self._standby_sockets} more for barge-ins; answers wait for a "
            "free session and retry. Raise the plan's limit, or lower standby_sockets.",
            ErrorCategory.RATE_LIMIT,
        )

    async def voice_rejected(self, answer: Answer | None, message: str) -> None:
        """Gradium does not know the voice: say so once, naming it; no request retries it.

        Args:
            answer: The answer set up with it (None: the check at start).
            message: Gradium's words, or the check's.
        """
        voice = str(self._settings.voice)
        if answer is not None:
            answer.reported = True
        if self._rejected_voice == voice:
            return
        self._rejected_voice = voice
        await self.report(
            None,
            f"Gradium does not know the voice {voice!r} ({message}): check the voice id in "
            "settings (GradiumStreamingTTSService.Settings(voice=...)); answers are not spoken "
            "until it changes.",
            ErrorCategory.INVALID_REQUEST,
        )

    def _check_voice(self) -> None:
        """Ask Gradium's REST API, in the background, whether the voice exists."""
        if self._voice_check is not None and not self._voice_check.done():
            return
        self._voice_check = self.create_task(self._run_voice_check(), name="gradium-voice-check")

    async def _run_voice_check(self) -> None:
        voice = str(self._settings.voice)
        exists = await voice_exists(self._url, self._api_key, voice)
        if exists is False and str(self._settings.voice) == voice:
            await self.voice_rejected(None, "not found by Gradium's voice look-up")

    async def report(
        self,
        answer: Answer | None,
        message: str,
        category: ErrorCategory,
        *,
        exception: Exception | None = None,
        permanent: bool = False,
    ) -> None:
        """Push one error, with any key in the URL masked; the answer counts as told.

        Args:
            answer: The answer it concerns, or None.
            message: What happened and what follows, without the service's name.
            category: Pipecat's error category.
            exception: What was raised, if anything.
            permanent: The service now reports itself unusable.
        """
        if answer is not None:
            answer.reported = True
        await self.push_error(
            error_msg=mask_secrets(f"{self}: {message}", self._url),
            exception=exception,
            category=category,
            force_treat_as_permanent=permanent,
        )

    async def play(self, answer: Answer, pcm: bytes) -> None:
        """Queue an answer's audio in its audio context.

        Args:
            answer: The answer.
            pcm: 16-bit mono PCM at the pipeline's rate.
        """
        frame = TTSAudioRawFrame(pcm, self.sample_rate, 1, context_id=answer.context_id)
        await self.append_to_audio_context(answer.context_id, frame)

    async def show_words(self, answer: Answer, words: list[tuple[str, float]]) -> None:
        """Pass an answer's heard words to Pipecat's word timestamps.

        Args:
            answer: The answer.
            words: ``(word, start_s)`` in the answer's audio time.
        """
        await self.add_word_timestamps(words, answer.context_id)

    async def start_text_aggregation_metrics(self):
        """Time the aggregation of an answer's first phrase only.

        Once an answer speaks, its later phrases gather words while its audio plays: that wait
        delays nothing, and Pipecat would report one figure (and one message) per phrase.
        """
        turn = self._turn_answer
        if turn is not None and turn.spoke:
            return
        await super().start_text_aggregation_metrics()

    async def text_sent(self, text: str) -> None:
        """Count text sent to Gradium in the usage metrics.

        Args:
            text: The text.
        """
        await self.start_tts_usage_metrics(text)

    def first_audio(self, answer: Answer, ttfa_s: float | None) -> None:
        """Record an answer's time to first audio.

        Args:
            answer: The answer.
            ttfa_s: Seconds from its first LLM token, or None when it had no token.
        """
        if ttfa_s is None:
            return
        self.last_time_to_first_audio_s = ttfa_s
        note_first_audio(self, answer.context_id, ttfa_s)
        logger.debug(f"{self}: time to first audio from first token {ttfa_s * 1000:.0f} ms")

    def keep_alive(self, answer: Answer) -> None:
        """Keep the answer's audio context open while Gradium owes it audio.

        Args:
            answer: The answer.
        """
        self._refresh_audio_context(answer.context_id)

    async def speak_held(self, answer: Answer) -> None:
        """Speak what is held: through the frame queue, in order with the tokens before it.

        Args:
            answer: The answer.
        """
        await self.queue_frame(_SpeakHeldFrame(context_id=answer.context_id))

    async def finished(self, answer: Answer) -> None:
        """An answer has no live attempt any more: its audio context ends once played.

        Args:
            answer: The answer.
        """
        if self.audio_context_available(answer.context_id):
            await self.remove_audio_context(answer.context_id)

    # ------------------------------------------------------------------ sockets and faults

    async def _on_message(self, sock: GradiumSocket, msg: ServerMessage) -> None:
        if isinstance(msg, ServerError) and msg.client_req_id is None:
            await self._on_socket_error(sock, msg)
            return
        answer = sock.requests.get(msg.client_req_id or "")
        if answer is not None:
            await answer.on_message(sock, msg)

    async def _on_socket_error(self, sock: GradiumSocket, msg: ServerError) -> None:
        """An error Gradium sent for a whole socket (no ``client_req_id``)."""
        kind = msg.kind
        if kind is ErrorKind.KEY:
            await self._reject_key(msg.message)
            return
        if kind in (ErrorKind.CONCURRENCY, ErrorKind.SESSION_LIMIT):
            # A limit of the account, not a fault: the close that follows says what happens.
            sock.refusal = (kind, msg.message)
            if kind is ErrorKind.CONCURRENCY:
                await self.concurrency_capped(None, msg.message)
            return
        sock.error_reported = True
        await self.report(
            None, f"Gradium error on {sock}: {msg.message} (code {msg.code})", ErrorCategory.SERVER
        )

    async def _on_socket_lost(self, sock: GradiumSocket, reason: str) -> None:
        """A socket died under its requests: each answer still playing goes on on a new one.

        The continuation re-sends the text whose words were not heard, into the same audio
        context, so the answer keeps one Started/Stopped pair and loses no words.
        """
        carried: list[Answer] = [a for a in sock.requests.values() if a.carried_by(sock)]
        for answer in carried:
            await answer.flush_audio()  # what arrived was heard: it goes before what follows
        refusal = sock.refusal or self._close_refusal(sock)
        if refusal is not None and refusal[0] is ErrorKind.CONCURRENCY:
            await self.concurrency_capped(None, refusal[1])
            for answer in carried:
                if answer.fail() is not None:
                    await answer.wait_for_slot()
            return
        if refusal is not None:
            reason = f"closed by Gradium at its {refusal[1]!r} limit"
        # An attempt that failed already is being continued or cut by the fault that failed it.
        lost = [a for a in carried if a.fail() is not None]
        if not lost:
            return
        resumable = [a for a in lost if a.can_continue()]
        if not sock.error_reported and not self._reachability.key_rejected:
            action = (
                f"re-sending what was not heard on a new socket ({len(resumable)} request(s))"
                if resumable
                else "those answers are cut short"
            )
            await self.report(
                None,
                f"Gradium socket {reason} during {len(lost)} request(s); {action}",
                ErrorCategory.CONNECTIVITY,
            )
            for answer in lost:
                answer.reported = True
        for answer in lost:
            await answer.continue_or_cut()

    @staticmethod
    def _close_refusal(sock: GradiumSocket) -> tuple[ErrorKind, str] | None:
        """A close (1008) that names an account limit, when no error frame did."""
        code = sock.ws.close_code
        if code != POLICY_VIOLATION:
            return None
        reason = sock.ws.close_reason or ""
        kind = error_kind(code, reason)
        if kind in (ErrorKind.CONCURRENCY, ErrorKind.SESSION_LIMIT):
            return kind, reason
        return None

    async def _connect_failed(self, e: Exception, answer: Answer | None) -> None:
        """Report a failed connection once; count it when an answer needed it; probe."""
        status = rejected_key_status(e)
        if status is not None:
            await self._reject_key(f"HTTP {status}")
            return
        verdict = self._reachability.connect_failed(
            answer.context_id if answer else None, usable=self.is_usable
        )
        await self.report(
            answer,
            f"cannot connect to Gradium at {self._url}: {e}{verdict.tail}",
            ErrorCategory.CONNECTIVITY,
            exception=e,
            # Unusable now, so Pipecat's ServiceSwitcher can fail over; probing goes on.
            permanent=verdict.permanent,
        )
        await self._call_event_handler("on_connection_error", mask_secrets(str(e), self._url))

    async def _reject_key(self, detail: str) -> None:
        """A rejected key is permanent: stop connecting and say which variable to fix."""
        if not self._reachability.reject_key():
            return
        if self._sockets:
            # Called from a socket's receive task: stopping the sockets cancels that task, so
            # it runs as a task of its own.
            self.create_task(self._sockets.stop(), name="gradium-sockets-stop")
        await self.report(
            None,
            f"Gradium rejected the API key ({detail}). Check GRADIUM_API_KEY (or api_key=); "
            "the service will not reconnect.",
            ErrorCategory.AUTHENTICATION,
            permanent=True,
        )

    async def _probe(self) -> None:
        """One connection attempt while Gradium is unreachable (raises on failure)."""
        assert self._sockets is not None
        try:
            await self._sockets.acquire(interruptible=True)
        except Exception as e:
            status = rejected_key_status(e)
            if status is not None:
                await self._reject_key(f"HTTP {status}")
            raise

    async def _on_recovered(self) -> None:
        """Gradium answers again: back in service, the next answer speaks."""
        self._reachability.connected()
        logger.info(f"{self}: Gradium is reachable again; the service is back in service")
        await self.set_usable(True)
        await self._call_event_handler("on_connected")

    # ------------------------------------------------------------------ the context's truth

    async def _forget(self, context_id: str) -> None:
        """The answer's turn and audio are over: its fault bookkeeping goes."""
        answer = self._answers.get(context_id)
        if answer is None:
            return
        await answer.forget()
        if answer.attempt is None:
            del self._answers[context_id]

    async def _start_audio_context(self, context_id: str):
        # An answer that can get no request (unreachable, unusable service) opens no audio
        # context: Pipecat would hold the pipeline stop_frame_timeout_s waiting for audio.
        answer = self._answers.get(context_id)
        if not self.is_usable and self._sockets is not None and self._answer_config is not None:
            answer = answer or self._new_answer(context_id, AnswerKind.SPEAK)
            answer.mark_cut()
        if answer is not None and answer.cut:
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

    def _is_cut(self, context_id: str) -> bool:
        answer = self._answers.get(context_id)
        return answer is not None and answer.cut

    async def _register_spoken_text(
        self, src_frame: AggregatedTextFrame, text: str, context_id: str
    ):
        await super()._register_spoken_text(src_frame, text, context_id)
        if self._is_cut(context_id) and not self.audio_context_available(context_id):
            # Never spoken: complete its slot at once, with no words, so nothing waits on it.
            await self._apply_force_complete(context_id)

    async def _apply_force_complete(self, context_id: str):
        """At an answer's end Pipecat writes its unspoken text as spoken; not for a cut answer.

        An answer cut by a fault (no continuation possible) keeps only the words heard: its
        slots are completed without the word frames Pipecat builds for the rest.
        """
        if not self._is_cut(context_id) or not await complete_without_words(self, context_id):
            await super()._apply_force_complete(context_id)

    async def _record_context_audio_outcome(self, context_id: str, received_audio: bool):
        # An answer already given its error (or cut short) is not reported a second time.
        answer = self._answers.get(context_id)
        if answer is None or not answer.reported:
            await super()._record_context_audio_outcome(context_id, received_audio)

    async def on_audio_context_completed(self, context_id: str):
        """Forget the fault bookkeeping of an answer whose audio context has ended.

        Args:
            context_id: The answer.
        """
        await super().on_audio_context_completed(context_id)
        # A cut answer whose LLM still streams stays cut until its turn completes, so none of
        # its later phrases opens a request under a used client_req_id.
        answer = self._answers.get(context_id)
        if (answer is None or answer.attempt is None) and context_id != self._turn_context_id:
            await self._forget(context_id)
