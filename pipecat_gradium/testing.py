"""Drive a TTS service in a real Pipecat pipeline: scripted LLM answers in, frames recorded out.

Used by the tests, the offline demo and the benchmarks. Nothing here is mocked: frames go
through a real ``PipelineWorker``; the recorders only watch and time them.
"""

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

if TYPE_CHECKING:
    from pipecat_gradium.emulator.stats import EmulatorStats, RequestStats


def subword_tokens(text: str, *, max_piece: int = 5) -> list[str]:
    """Split text the way LLM tokenizers often do: leading spaces, words cut into pieces.

    Deterministic: words longer than ``max_piece`` characters become several tokens
    ("forecast" -> " fore", "cast"), punctuation becomes its own token.

    Args:
        text: The answer.
        max_piece: Longest piece of a word in one token.

    Returns:
        Tokens whose concatenation is ``text``.
    """
    tokens: list[str] = []
    for match in re.finditer(r"\s*[^\s]+", text):
        piece = match.group(0)
        lead = piece[: len(piece) - len(piece.lstrip())]
        word = piece.lstrip()
        core = word.rstrip(".,;:!?")
        punct = word[len(core) :]
        first = True
        while core:
            cut = core[:max_piece]
            core = core[max_piece:]
            tokens.append((lead if first else "") + cut)
            first = False
        if punct:
            if first:
                tokens.append(lead + punct)
            else:
                tokens.append(punct)
    tail = text[len("".join(tokens)) :]
    if tail:
        tokens.append(tail)
    return tokens


def answer_requests(stats: "EmulatorStats", index: int = 0) -> list["RequestStats"]:
    """The emulator's records of one answer: its first request, then its continuations.

    Args:
        stats: The emulator's stats.
        index: Which answer (0: the first one the emulator saw).

    Returns:
        The requests whose ``client_req_id`` is the answer's or ``<it>#2``, ``#3``..., in order.
    """
    firsts = [r for r in stats.requests if r.client_req_id and "#" not in r.client_req_id]
    context_id = firsts[index].client_req_id
    return [r for r in stats.requests if (r.client_req_id or "").partition("#")[0] == context_id]


def heard_once(requests: Sequence["RequestStats"]) -> tuple[list[str], int]:
    """The source words an answer's requests spoke in full, a word repeated at a cut once.

    Args:
        requests: One answer's requests, in order (see :func:`answer_requests`).

    Returns:
        The words, and how many cuts repeated a word (re-sent because its audio was cut).
    """
    words: list[str] = []
    repeats = 0
    for r in requests:
        heard = list(r.heard_words)
        if words and heard and heard[0] == words[-1]:
            heard = heard[1:]
            repeats += 1
        words.extend(heard)
    return words, repeats


async def _wait_on(
    changed: asyncio.Condition, predicate: Callable[[], bool], timeout: float
) -> None:
    """Wait until ``predicate()`` holds, re-checked each time ``changed`` is notified."""

    async def check() -> None:
        async with changed:
            await changed.wait_for(predicate)

    await asyncio.wait_for(check(), timeout)


@dataclass
class Recorded:
    """A frame as a recorder saw it."""

    at: float
    frame: Frame


class FrameRecorder(FrameProcessor):
    """Passes every frame on and records those moving in one direction, with their time."""

    def __init__(self, direction: FrameDirection, **kwargs):
        """Record frames moving ``direction``.

        Args:
            direction: Which direction to record.
            **kwargs: Passed to ``FrameProcessor``.
        """
        super().__init__(**kwargs)
        self._direction = direction
        self.records: list[Recorded] = []
        self._changed = asyncio.Condition()
        self._waiting = 0
        self.on_frame: Callable[[Frame], None] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Record and pass on.

        Args:
            frame: The frame.
            direction: Its direction.
        """
        await super().process_frame(frame, direction)
        if direction == self._direction:
            self.records.append(Recorded(time.monotonic(), frame))
            if self.on_frame:
                self.on_frame(frame)
            if self._waiting:  # no lock round-trip per frame when nobody waits
                async with self._changed:
                    self._changed.notify_all()
        await self.push_frame(frame, direction)

    def frames(self, kind: type | tuple[type, ...] = Frame) -> list:
        """The recorded frames of a type, in order."""
        return [r.frame for r in self.records if isinstance(r.frame, kind)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checked at every recorded frame.

        Args:
            predicate: The condition.
            timeout: Seconds before giving up.

        Raises:
            TimeoutError: If it does not hold in time.
        """
        self._waiting += 1
        try:
            await _wait_on(self._changed, predicate, timeout)
        finally:
            self._waiting -= 1


class PacedPlayer(FrameProcessor):
    """Plays audio as a transport's output does: in order and in real time.

    Each frame starts when it arrives or when the previous one ends; an interruption drops
    what has not started playing. The service delivers audio faster than real time, so what it has delivered is not what a
    listener has heard: ``played`` is. Nothing is played aloud; frames are timed and kept.
    """

    def __init__(self, **kwargs):
        """Create the player.

        Args:
            **kwargs: Passed to ``FrameProcessor``.
        """
        super().__init__(**kwargs)
        #: Pieces (40 ms) of audio that started playing, in order.
        self.played: list[TTSAudioRawFrame] = []
        #: ``TTSStoppedFrame``s that reached the player (answers fully delivered to it).
        self.stops = 0
        #: ``len(played)`` when each interruption reached the player.
        self.interruptions: list[int] = []
        self._pending: list[TTSAudioRawFrame] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Queue audio for playing; drop the queue at an interruption; pass everything on.

        Args:
            frame: The frame.
            direction: Its direction.
        """
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame) and self._task is None:
            self._task = self.create_task(self._play(), name="paced-player")
        elif isinstance(frame, (EndFrame, CancelFrame)) and self._task is not None:
            await self.cancel_task(self._task)
            self._task = None
        elif isinstance(frame, InterruptionFrame):
            self._pending.clear()
            self.interruptions.append(len(self.played))
            await self._notify()
        elif isinstance(frame, TTSStoppedFrame):
            self.stops += 1
            await self._notify()
        elif isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            # Played in 40 ms pieces, as Pipecat's output transports write (4 x 10 ms).
            step = frame.sample_rate * 2 * 40 // 1000
            for i in range(0, len(frame.audio), step):
                piece = frame.audio[i : i + step]
                self._pending.append(
                    TTSAudioRawFrame(piece, frame.sample_rate, 1, context_id=frame.context_id)
                )
            await self._notify()
        await self.push_frame(frame, direction)

    def seconds(self, *, since: int = 0, until: int | None = None) -> float:
        """Seconds of audio that started playing, from played piece ``since`` to ``until``."""
        return sum(len(f.audio) / 2 / f.sample_rate for f in self.played[since:until])

    @property
    def idle(self) -> bool:
        """Whether nothing is waiting to play (the last frame may still be sounding)."""
        return not self._pending

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checked whenever a frame starts playing.

        Args:
            predicate: The condition.
            timeout: Seconds before giving up.

        Raises:
            TimeoutError: If it does not hold in time.
        """
        await _wait_on(self._changed, predicate, timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _play(self) -> None:
        # The device clock: each frame starts when the previous one ends (or when it
        # arrives, after a gap), like a transport writing to its output.
        free_at = time.monotonic()
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._pending))
            wait = free_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not self._pending:
                continue  # an interruption dropped it while the previous frame played
            frame = self._pending.pop(0)
            self.played.append(frame)
            free_at = max(free_at, time.monotonic()) + len(frame.audio) / 2 / frame.sample_rate
            await self._notify()


@dataclass
class AnswerTiming:
    """When one scripted answer's first token went in and its first audio came out."""

    first_token_at: float | None = None
    first_audio_at: float | None = None

    @property
    def ttfa(self) -> float | None:
        """Time to first audio, in seconds."""
        if self.first_token_at is None or self.first_audio_at is None:
            return None
        return self.first_audio_at - self.first_token_at


@dataclass
class PipelineHarness:
    """A running pipeline ``[upstream recorder, service, downstream recorder]``."""

    worker: PipelineWorker
    up: FrameRecorder
    down: FrameRecorder
    run_task: asyncio.Task
    answers: list[AnswerTiming] = field(default_factory=list)
    #: Present when started with ``paced=True``: the audio as a listener hears it.
    player: PacedPlayer | None = None

    async def send(self, *frames: Frame) -> None:
        """Queue frames at the start of the pipeline."""
        for frame in frames:
            await self.worker.queue_frame(frame)

    async def speak_answer(
        self,
        text: str,
        *,
        tokens_per_s: float = 0.0,
        ttft_s: float = 0.0,
        start: bool = True,
        end: bool = True,
        tokens: Sequence[str] | None = None,
    ) -> AnswerTiming:
        """Stream one LLM answer: start frame, tokens at a pace, end frame.

        The pauses model an LLM's pace; they are not synchronisation.

        Args:
            text: The answer (split into sub-word tokens unless ``tokens`` is given).
            tokens_per_s: Token rate; 0 sends them back to back.
            ttft_s: The LLM's time to first token after the start frame.
            start: Whether to send ``LLMFullResponseStartFrame`` (False continues an answer).
            end: Whether to send ``LLMFullResponseEndFrame``.
            tokens: Explicit tokens.

        Returns:
            The answer's timing record, filled in as its audio arrives.
        """
        timing = AnswerTiming()
        if start:
            self.answers.append(timing)
            await self.send(LLMFullResponseStartFrame())
        if ttft_s:
            await asyncio.sleep(ttft_s)
        for i, token in enumerate(tokens if tokens is not None else subword_tokens(text)):
            if i and tokens_per_s:
                await asyncio.sleep(1.0 / tokens_per_s)
            if timing.first_token_at is None:
                timing.first_token_at = time.monotonic()
            await self.send(LLMTextFrame(token))
        if end:
            await self.send(LLMFullResponseEndFrame())
        return timing

    def audio_frames(self) -> list[TTSAudioRawFrame]:
        """Audio frames that left the service."""
        return self.down.frames(TTSAudioRawFrame)

    def audio_seconds(self, context_id: str | None = None, *, since: int = 0) -> float:
        """Seconds of audio that left the service, from audio frame ``since`` on.

        Args:
            context_id: Count only this audio context's frames (None: all).
            since: Index of the first audio frame counted.

        Returns:
            The duration, each frame at its own sample rate.
        """
        return sum(
            len(f.audio) / 2 / f.sample_rate
            for f in self.audio_frames()[since:]
            if context_id is None or f.context_id == context_id
        )

    def errors(self) -> list[ErrorFrame]:
        """Error frames the service pushed upstream."""
        return self.up.frames(ErrorFrame)

    def stopped(self) -> int:
        """Answers whose audio context ended (``TTSStoppedFrame`` seen downstream)."""
        return len(self.down.frames(TTSStoppedFrame))

    def words_out(self, context_id: str | None = None) -> list[str]:
        """Words the service passed on as heard (``TTSTextFrame``): what the context gets.

        Args:
            context_id: Only this answer's words (None: all).

        Returns:
            The words, in order.
        """
        return [
            f.text
            for f in self.down.frames(TTSTextFrame)
            if context_id is None or f.context_id == context_id
        ]

    async def stop(self, timeout: float = 20.0) -> None:
        """End the pipeline gracefully and wait for it."""
        await self.worker.queue_frame(EndFrame())
        await asyncio.wait_for(self.run_task, timeout)


async def start_pipeline(
    service: FrameProcessor,
    *,
    sample_rate: int = 24000,
    metrics: bool = True,
    downstream: Sequence[FrameProcessor] = (),
    paced: bool = False,
) -> PipelineHarness:
    """Start ``[recorder, service, recorder, *downstream]`` in a real worker; wait until it runs.

    Args:
        service: The processor under test.
        sample_rate: The pipeline's output rate.
        metrics: Whether to enable Pipecat metrics.
        downstream: Real Pipecat parts after the service (e.g. the assistant context
            aggregator), fed what the service outputs.
        paced: Add a :class:`PacedPlayer` at the end, playing the audio in real time.

    Returns:
        The running harness; call :meth:`PipelineHarness.stop` when done.
    """
    up = FrameRecorder(FrameDirection.UPSTREAM)
    down = FrameRecorder(FrameDirection.DOWNSTREAM)
    player = PacedPlayer() if paced else None
    worker = PipelineWorker(
        Pipeline([up, service, down, *downstream, *([player] if player else [])]),
        params=PipelineParams(
            audio_out_sample_rate=sample_rate,
            enable_metrics=metrics,
            enable_usage_metrics=metrics,
        ),
        cancel_on_idle_timeout=False,
        idle_timeout_secs=None,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run_task = asyncio.create_task(runner.run())
    harness = PipelineHarness(worker=worker, up=up, down=down, run_task=run_task, player=player)

    seen_contexts: set[str | None] = set()

    def note_audio(frame: Frame) -> None:
        # The first frame of a context not seen before is the next waiting answer's first
        # audio; late frames of an earlier (e.g. interrupted) answer are not.
        if isinstance(frame, TTSAudioRawFrame) and frame.context_id not in seen_contexts:
            seen_contexts.add(frame.context_id)
            for timing in harness.answers:
                if timing.first_audio_at is None and timing.first_token_at is not None:
                    timing.first_audio_at = time.monotonic()
                    break

    down.on_frame = note_audio
    await down.wait_for(lambda: bool(down.frames(StartFrame)), timeout=10)
    return harness
