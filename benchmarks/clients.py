"""The clients compared, and a LiveKit-style client reimplemented as a Pipecat TTS service.

:class:`LiveKitStyleTTSService` is NOT LiveKit's code: it is a short reimplementation of the
strategy its Gradium plugin follows (a new socket per answer, one word per text message,
``close_ws_on_eos`` left at its default, word timestamps ignored), so that strategy can run in
the same Pipecat pipeline as the other clients.
"""

import asyncio
import base64
import inspect
import json
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TextType,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.gradium.tts import GradiumTTSService
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TextAggregationMode, TTSService
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pipecat_gradium import GradiumStreamingTTSService

API_KEY = "test-key"
VOICE = "YTpq7expH9539ERJ"
# Pipecat's built-in always asks Gradium for 48 kHz, so every client runs at 48 kHz.
SAMPLE_RATE = 48000

_WORD = re.compile(r"\s*(\S+)\s")


#: The service's default first-chunk size, read from its signature so the sweep never repeats it.
DEFAULT_FIRST_CHUNK_WORDS: int = (
    inspect.signature(GradiumStreamingTTSService.__init__).parameters["first_chunk_words"].default
)


@dataclass
class _Segment:
    """One answer's socket, its receive task and the text not yet sent."""

    ws: ClientConnection
    receiver: asyncio.Task | None = None
    pending: str = ""
    words_sent: list[str] = field(default_factory=list)


class LiveKitStyleTTSService(TTSService):
    """A reimplementation of the LiveKit Gradium plugin's strategy (not its code).

    - A new WebSocket per answer, opened at the answer's first text (a handshake every answer).
    - One word per ``text`` message: tokens are joined and a word goes out once the next token
      starts a new word; the rest at the end of the answer, then ``end_of_stream``.
    - ``close_ws_on_eos`` left at its default (true): the server closes the socket at the end.
    - Word timestamps ignored; on interruption the answer's socket is closed.
    """

    def __init__(self, *, api_key: str, url: str, voice: str = VOICE, **kwargs: Any):
        """Create the client.

        Args:
            api_key: Gradium API key.
            url: Gradium's TTS WebSocket URL.
            voice: Voice id.
            **kwargs: Passed to ``TTSService``.
        """
        super().__init__(
            text_aggregation_mode=TextAggregationMode.TOKEN,
            push_start_frame=True,
            push_stop_frames=True,
            push_text_frames=True,
            sample_rate=SAMPLE_RATE,
            settings=TTSSettings(model="default", voice=voice, language=None),
            **kwargs,
        )
        self._api_key = api_key
        self._url = url
        self._voice = voice
        self._segments: dict[str, _Segment] = {}

    def can_generate_metrics(self) -> bool:
        """Metrics on, like the other clients."""
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Take one token; send every word it completes.

        Args:
            text: A token.
            context_id: The answer's context.

        Yields:
            ``None``: audio arrives on the segment's receive task.
        """
        seg = self._segments.get(context_id)
        if seg is None:
            seg = await self._open(context_id)
        seg.pending += text
        while match := _WORD.match(seg.pending):
            await self._send_word(seg, match.group(1))
            seg.pending = seg.pending[match.end() - 1 :]
        yield None

    async def flush_audio(self, context_id: str | None = None):
        """End of the answer: send the last word and ``end_of_stream``.

        Args:
            context_id: The answer's context.
        """
        seg = self._segments.get(context_id or "")
        if seg is None:
            return
        for word in seg.pending.split():
            await self._send_word(seg, word)
        seg.pending = ""
        try:
            await seg.ws.send(json.dumps({"type": "end_of_stream"}))
        except ConnectionClosed:
            pass

    async def on_audio_context_interrupted(self, context_id: str):
        """Close the interrupted answer's socket.

        Args:
            context_id: The interrupted context.
        """
        await self._close(context_id)
        await super().on_audio_context_interrupted(context_id)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Close every open segment on interruption (also those without audio yet).

        Args:
            frame: The frame.
            direction: Its direction.
        """
        if isinstance(frame, InterruptionFrame):
            for context_id in list(self._segments):
                await self._close(context_id)
        await super().process_frame(frame, direction)

    async def cleanup(self):
        """Close every socket."""
        for context_id in list(self._segments):
            await self._close(context_id)
        await super().cleanup()

    async def _open(self, context_id: str) -> _Segment:
        ws = await connect(self._url, additional_headers={"x-api-key": self._api_key})
        seg = _Segment(ws)
        self._segments[context_id] = seg
        setup = {
            "type": "setup",
            "model_name": "default",
            "voice_id": self._voice,
            "output_format": f"pcm_{self.sample_rate}",
        }
        await ws.send(json.dumps(setup))
        seg.receiver = self.create_task(self._receive(context_id, seg), name="lk-style-recv")
        return seg

    async def _send_word(self, seg: _Segment, word: str) -> None:
        seg.words_sent.append(word)
        try:
            await seg.ws.send(json.dumps({"type": "text", "text": word + " "}))
        except ConnectionClosed:
            pass

    async def _receive(self, context_id: str, seg: _Segment) -> None:
        try:
            async for raw in seg.ws:
                msg = json.loads(raw)
                kind = msg.get("type")
                if kind == "audio" and self.audio_context_available(context_id):
                    pcm = base64.b64decode(msg["audio"])
                    frame = TTSAudioRawFrame(pcm, self.sample_rate, 1, context_id=context_id)
                    await self.append_to_audio_context(context_id, frame)
                elif kind == "end_of_stream":
                    if self.audio_context_available(context_id):
                        await self.append_to_audio_context(
                            context_id, TTSStoppedFrame(context_id=context_id)
                        )
                        await self.remove_audio_context(context_id)
                elif kind == "error":
                    await self.push_error(error_msg=f"Gradium error: {msg.get('message')}")
        except ConnectionClosed:
            pass
        finally:
            if self._segments.get(context_id) is seg:
                del self._segments[context_id]

    async def _close(self, context_id: str) -> None:
        seg = self._segments.pop(context_id, None)
        if seg is None:
            return
        await seg.ws.close()
        if seg.receiver is not None:
            await self.cancel_task(seg.receiver)


#: Audio per answer of the floor client: what the emulator speaks for the load runs' sentence
#: (52 chunks of 80 ms; this service and the built-in receive 4.12-4.16 s).
FLOOR_AUDIO_CHUNKS = 52
_CHUNK_S = 0.08


class PipelineFloor(FrameProcessor):
    """The least any TTS stage costs in the benchmark pipeline: no socket, no aggregation.

    Not a client anyone would ship: it measures the share of a client's CPU that is not the
    client's. Every LLM token frame still travels the pipeline to it (that is Pipecat's cost,
    paid by every TTS service), and at the end of the answer it pushes the frames any TTS with
    word timestamps must push: a started frame, the answer's audio in Gradium's 80 ms chunks,
    one text frame per word and a stopped frame. A client's CPU per audio second minus this
    floor's is the client's own.
    """

    def __init__(self, *, sample_rate: int = SAMPLE_RATE):
        """Create the floor.

        Args:
            sample_rate: Rate of the silent audio it pushes.
        """
        super().__init__()
        self._sample_rate = sample_rate
        self._chunk = bytes(int(sample_rate * _CHUNK_S) * 2)
        self._text: list[str] = []
        self._answers = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Swallow the answer's tokens; speak it at its end.

        Args:
            frame: The frame.
            direction: Its direction.
        """
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self._text.append(frame.text)
            return
        await self.push_frame(frame, direction)
        if isinstance(frame, LLMFullResponseEndFrame):
            await self._speak()

    async def _speak(self) -> None:
        self._answers += 1
        ctx = f"floor-{id(self)}-{self._answers}"
        words = "".join(self._text).split()
        self._text.clear()
        await self.push_frame(TTSStartedFrame(context_id=ctx))
        for _ in range(FLOOR_AUDIO_CHUNKS):
            await self.push_frame(
                TTSAudioRawFrame(self._chunk, self._sample_rate, 1, context_id=ctx)
            )
        for word in words:
            await self.push_frame(TTSTextFrame(word, TextType.WORD, context_id=ctx))
        await self.push_frame(TTSStoppedFrame(context_id=ctx))


@dataclass(frozen=True)
class ClientSpec:
    """A client under test.

    Attributes:
        key: Short id used in JSON.
        label: Name in tables and charts.
        make: Builds the service for an emulator's WebSocket URL.
        baseline: Whether ratios are taken against this client.
    """

    key: str
    label: str
    make: Callable[[str], FrameProcessor]
    baseline: bool = False


def _ours(**kwargs: Any) -> Callable[[str], FrameProcessor]:
    def make(url: str) -> FrameProcessor:
        return GradiumStreamingTTSService(api_key=API_KEY, url=url, **kwargs)

    return make


def _tuned(**tuning: Any) -> Callable[[str], FrameProcessor]:
    """This service with ``GradiumStreamingTTSService.Tuning(**tuning)``."""
    return _ours(tuning=GradiumStreamingTTSService.Tuning(**tuning))


def _builtin(**kwargs: Any) -> Callable[[str], FrameProcessor]:
    def make(url: str) -> FrameProcessor:
        settings = GradiumTTSService.Settings(voice=VOICE)
        return GradiumTTSService(api_key=API_KEY, url=url, settings=settings, **kwargs)

    return make


def _livekit_style(url: str) -> FrameProcessor:
    return LiveKitStyleTTSService(api_key=API_KEY, url=url)


CLIENTS: tuple[ClientSpec, ...] = (
    ClientSpec("ours", "pipecat-gradium (defaults)", _ours()),
    ClientSpec(
        "ours_noflush",
        "pipecat-gradium, first-chunk flush off",
        _tuned(flush_after_first_chunk=False),
    ),
    ClientSpec("builtin", "Pipecat built-in, sentence (default)", _builtin(), baseline=True),
    ClientSpec(
        "builtin_token",
        "Pipecat built-in, token mode",
        _builtin(text_aggregation_mode=TextAggregationMode.TOKEN),
    ),
    ClientSpec(
        "livekit_style", "LiveKit-style (socket per answer, word per message)", _livekit_style
    ),
)
# The first-chunk size sweep (standard trace only).
FIRST_CHUNK_SWEEP: tuple[ClientSpec, ...] = tuple(
    ClientSpec(
        f"ours_fcw{n}", f"pipecat-gradium, first_chunk_words={n}", _ours(first_chunk_words=n)
    )
    for n in (1, 2, 3, 4)
    if n != DEFAULT_FIRST_CHUNK_WORDS
)

#: Variants of this service for comparisons in one run (``--scale --clients``), not run by default.
VARIANTS: tuple[ClientSpec, ...] = (
    ClientSpec(
        "ours_steady_first",
        "pipecat-gradium, first phrase not lengthened under load (low-buffer flush on)",
        _tuned(loaded_first_chunk_words=0),
    ),
    ClientSpec(
        "ours_no_lowbuf",
        "pipecat-gradium, no low-buffer flush",
        _tuned(low_buffer_flush_s=0),
    ),
    ClientSpec(
        "ours_before18",
        "pipecat-gradium, neither (as before issue 18)",
        _tuned(loaded_first_chunk_words=0, low_buffer_flush_s=0),
    ),
    ClientSpec(
        "ours_unbatched",
        "pipecat-gradium, audio chunks not merged",
        _tuned(audio_batch_s=0),
    ),
    ClientSpec(
        "ours_no_prebuffer",
        "pipecat-gradium, first audio frame not gathered under load",
        _tuned(loaded_prebuffer_s=0),
    ),
    ClientSpec(
        "floor",
        "pipeline floor (no TTS work: tokens in, silence out)",
        lambda url: PipelineFloor(),
    ),
    ClientSpec(
        "ours_loaded5",
        "pipecat-gradium, loaded first phrase 5 words",
        _tuned(loaded_first_chunk_words=5),
    ),
)

#: Every client a benchmark can be asked for by key.
ALL_CLIENTS: tuple[ClientSpec, ...] = (*CLIENTS, *VARIANTS)


def client_by_key(key: str) -> ClientSpec:
    """The client named ``key`` in :data:`ALL_CLIENTS`.

    Raises:
        KeyError: If no client has that key.
    """
    for spec in ALL_CLIENTS:
        if spec.key == key:
            return spec
    raise KeyError(f"no benchmark client {key!r}; known: {', '.join(c.key for c in ALL_CLIENTS)}")
