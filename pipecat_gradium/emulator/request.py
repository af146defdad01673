"""One TTS request: its text, the look-ahead, synthesis and the paced audio it sends."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from loguru import logger

from . import voice
from .account import Account, Slot
from .audio import CHUNK_S, encode, resample, wav_header
from .config import RequestConfig
from .faults import Fault, FaultTiming, Hold
from .latency import LatencyModel
from .normalize import WordReports, rules_language, spoken_words
from .stats import RequestStats
from .text import Break, Flush, Item, Word, parse, word_times, words_text

# Samples quieter than this (of 32768) count as silence when finding where speech ends.
_SILENCE = 300


@dataclass
class _SpokenWord:
    text: str
    start_s: float
    stop_s: float


@dataclass
class _Segment:
    samples: np.ndarray  # int16 at the output rate, a whole number of 80 ms frames
    words: list[_SpokenWord]  # times relative to the segment's start
    flushed: bool  # the segment ended at a <flush>


class RequestOwner(Protocol):
    """What a request writes through: the socket it runs on, seen from the request."""

    @property
    def client_gone(self) -> bool:
        """Whether the client closed the socket (audio sent after that is counted)."""
        ...

    async def send(self, msg: dict[str, Any]) -> None:
        """Send one JSON message."""
        ...

    async def send_raw(self, data: str) -> None:
        """Send one text frame as is."""
        ...

    async def request_error(
        self, req: Request, code: int, message: str, close: bool = False
    ) -> None:
        """Send an error for ``req``; ``close`` closes the socket whatever the mode."""
        ...

    async def request_finished(self, req: Request) -> None:
        """``req`` sent its end_of_stream."""
        ...

    def request_reset(self) -> None:
        """Reset the socket abruptly (no close frame)."""
        ...

    def stats_changed(self) -> None:
        """Tell stats waiters something changed."""
        ...


class Request:
    """The server side of one request: text in, ``ready``, ``audio``/``text``, ``end_of_stream``.

    Args:
        owner: What it sends and reports through (its connection).
        config: Its validated setup.
        stats: Its stats record.
        latency: The latency model, fixed for the request's life.
        faults: The faults it runs with (its connection's and its own).
        timing: When those faults fire.
        word_reports: What the word reports carry when ``rewrite_rules`` rewrites a word.
        account: The account it runs under (its voices, whether a worker is free).
        hold: A hold to honour, if a test asked for one.
        slot: Its place under the concurrency cap when the cap counts requests: released when
            the request ends (end_of_stream or error sent, or the socket closed).
    """

    def __init__(
        self,
        owner: RequestOwner,
        config: RequestConfig,
        stats: RequestStats,
        *,
        latency: LatencyModel,
        faults: set[Fault],
        timing: FaultTiming,
        word_reports: WordReports,
        account: Account,
        hold: Hold | None = None,
        slot: Slot | None = None,
    ) -> None:
        """Create the request (call :meth:`start` to run it)."""
        self.owner = owner
        self.config = config
        self.stats = stats
        self.latency = latency
        self.faults = faults
        self.timing = timing
        self.word_reports = word_reports
        self.account = account
        self.hold = hold
        self.slot = slot
        self.text = ""
        self.eos = False
        self.done = False
        self.stopped = False
        self._spoken = 0  # items already synthesized
        self._first_speakable_at: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def client_req_id(self) -> str | None:
        """The client's id for this request, if it set one."""
        return self.config.client_req_id

    def start(self) -> None:
        """Start generating in a task."""
        self._task = asyncio.create_task(self._run(), name=f"gradium-emu-req-{self.client_req_id}")

    async def stop(self) -> None:
        """Stop generating now (socket closed): cancel the task and abort synthesis."""
        self.stopped = True
        self._release_slot()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    def add_text(self, text: str) -> None:
        """Append text exactly as sent.

        Args:
            text: The ``text`` field of a text message.
        """
        self.text += text
        self._changed()

    def end_of_stream(self) -> None:
        """No more text: everything left may be spoken."""
        self.eos = True
        self._changed()

    def _changed(self) -> None:
        if self._first_speakable_at is None and any(
            isinstance(i, Word) for i in self._released()[self._spoken :]
        ):
            self._first_speakable_at = time.monotonic()
        self._wake.set()

    def _released(self) -> list[Item]:
        """Items that may be spoken now (a prefix of the parsed text)."""
        items = parse(self.text, final=self.eos)
        if self.eos:
            return items
        last_flush = max((i for i, it in enumerate(items) if isinstance(it, Flush)), default=-1)
        complete = [
            i
            for i in range(last_flush + 1, len(items))
            if isinstance(items[i], Word) and items[i].complete  # type: ignore[union-attr]
        ]
        n = len(complete) - self.latency.lookahead_words
        limit = complete[n - 1] + 1 if n > 0 else last_flush + 1
        return items[:limit]

    @property
    def _id_field(self) -> str:
        """``,"client_req_id":...`` for hand-built messages, or nothing."""
        if self.client_req_id is None:
            return ""
        return ',"client_req_id":' + json.dumps(self.client_req_id)

    def _msg(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.client_req_id is not None:
            msg["client_req_id"] = self.client_req_id
        return msg

    def _release_slot(self) -> None:
        if self.slot is not None:
            self.slot.release()
            self.slot = None

    async def _fail(self, code: int, message: str, close: bool = False) -> None:
        """End the request with an error; its cap slot is free before the client hears of it."""
        self._release_slot()
        await self.owner.request_error(self, code, message, close=close)

    async def _run(self) -> None:
        try:
            await self._generate()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the emulator: tell the client like Gradium would
            logger.exception("emulator: request failed")
            await self._fail(1011, f"internal error: {exc}", close=True)
        finally:
            self._release_slot()

    async def _admit(self) -> bool:
        """The account's checks before ``ready``: the voice, then a free worker.

        Returns:
            Whether the request may go on (if not, its error was sent).
        """
        voice_id = self.config.voice_id
        if voice_id is not None and not self.account.knows_voice(voice_id):
            # Gradium loads the voice before it answers: the rejection comes after a while.
            await asyncio.sleep(self.account.voice_check_s)
            await self._fail(1011, f"voice not found: {voice_id}", close=True)
            return False
        loop = asyncio.get_running_loop()
        start = loop.time()
        busy_until = start + self.timing.no_worker_s if Fault.NO_WORKER in self.faults else None
        free = await self.account.wait_for_worker(self.config.retry_for_s or 0.0, busy_until)
        self.stats.worker_wait_s = loop.time() - start
        if not free:
            await self._fail(1011, "no worker available")
            return False
        return True

    async def _generate(self) -> None:
        lat = self.latency
        if not await self._admit():
            return
        await asyncio.sleep(lat.setup_s)
        fmt = self.config.output
        await self.owner.send(
            {
                "type": "ready",
                "request_id": str(uuid.uuid4()),
                "model_name": self.config.model_name,
                "sample_rate": fmt.sample_rate,
                "frame_size": fmt.frame_size,
                "audio_stream_names": ["audio"],
                "text_stream_names": ["text"],
                "client_req_id": self.client_req_id,
            }
        )
        self.stats.ready_at = time.monotonic()
        self.owner.stats_changed()
        if Fault.UNKNOWN_MESSAGES in self.faults:
            await self.owner.send(self._msg({"type": "need_more_text"}))
        next_at: float | None = None
        sent_samples = 0
        chunks_sent = 0
        while True:
            items = self._released()
            new = items[self._spoken :]
            if not new:
                if self.eos:
                    break
                self._wake.clear()
                await self._wake.wait()
                continue
            self._spoken = len(items)
            seg = await self._render(new)
            if seg.samples.size:
                now = time.monotonic()
                if next_at is None:
                    first = (self._first_speakable_at or now) + lat.model_delay_s
                    if Fault.SLOW_FIRST_AUDIO in self.faults:
                        first += self.timing.slow_first_audio_s
                    next_at = max(now, first)
                else:
                    next_at = max(next_at, now)
                next_at, sent_samples, chunks_sent = await self._send_segment(
                    seg, next_at, sent_samples, chunks_sent
                )
                if self.done:  # a fault ended the request
                    return
            if seg.flushed and Fault.UNKNOWN_MESSAGES in self.faults:
                await self.owner.send(self._msg({"type": "flushed"}))
        self._release_slot()
        await self.owner.send(self._msg({"type": "end_of_stream"}))
        self.done = True
        self.stats.finished = True
        self.owner.stats_changed()
        logger.info(
            f"emulator: request {self.client_req_id or '-'} on connection "
            f"{self.stats.connection_id}: {len(self.stats.words)} words, "
            f"{self.stats.audio_s:.2f} s audio"
        )
        await self.owner.request_finished(self)

    async def _render(self, items: list[Item]) -> _Segment:
        """Synthesize released items: word runs with eSpeak, breaks as silence."""
        rate = self.config.output.sample_rate
        wpm = voice.rate_for_padding_bonus(self.config.padding_bonus)
        parts: list[np.ndarray] = []
        words: list[_SpokenWord] = []
        offset = 0
        run: list[str] = []
        lang = rules_language(self.config.rewrite_rules)
        per_source = self.word_reports is WordReports.SOURCE

        async def flush_run() -> None:
            nonlocal offset
            if not run:
                return
            # rewrite_rules: speak "24" as "twenty four"; report spoken or source words.
            spoken = [spoken_words(w, lang) for w in run]
            if self.latency.voice_cache:
                # Load runs: each word's audio once, reused; word timings stay exact.
                for source, group in zip(run, spoken, strict=True):
                    reported: list[tuple[str, int, int]] = []
                    for w in group:
                        samples, speech = await voice.word_audio(w, wpm, rate)
                        reported.append((w, offset, offset + speech))
                        parts.append(samples)
                        offset += len(samples)
                    if per_source and reported:
                        reported = [(source, reported[0][1], reported[-1][2])]
                    words.extend(_SpokenWord(t, a / rate, b / rate) for t, a, b in reported)
                run.clear()
                return
            said = [s for group in spoken for s in group]
            synth = await asyncio.to_thread(
                voice.synthesize, words_text(said), wpm, lambda: self.stopped
            )
            loud = np.flatnonzero(np.abs(synth.samples.astype(np.int32)) > _SILENCE)
            speech_end = int(loud[-1]) + 1 if loud.size else len(synth.samples)
            times = word_times(said, synth.words, len(synth.samples), speech_end)
            out = resample(synth.samples, voice.ESPEAK_RATE, rate)
            scale = rate / voice.ESPEAK_RATE
            k = 0
            for source, group in zip(run, spoken, strict=True):
                span = times[k : k + len(group)]
                k += len(group)
                reported = (
                    [(source, span[0][0], span[-1][1])]
                    if per_source
                    else [(s, a, b) for s, (a, b) in zip(group, span, strict=True)]
                )
                for text, a, b in reported:
                    words.append(
                        _SpokenWord(text, (offset + a * scale) / rate, (offset + b * scale) / rate)
                    )
            parts.append(out)
            offset += len(out)
            run.clear()

        for item in items:
            if isinstance(item, Word):
                run.append(item.text)
            elif isinstance(item, Break):
                await flush_run()
                silence = np.zeros(int(round(item.seconds * rate)), dtype=np.int16)
                parts.append(silence)
                offset += len(silence)
        await flush_run()
        samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        # Gradium's model speaks in whole 80 ms frames: pad the segment with silence.
        frame = self.config.output.frame_size
        if samples.size % frame:
            samples = np.concatenate([samples, np.zeros(frame - samples.size % frame, np.int16)])
        return _Segment(samples, words, flushed=isinstance(items[-1], Flush))

    async def _send_segment(
        self, seg: _Segment, next_at: float, sent_samples: int, chunks_sent: int
    ) -> tuple[float, int, int]:
        """Send a segment's words and 80 ms chunks, paced at the model's speed."""
        fmt = self.config.output
        rate = fmt.sample_rate
        frame = fmt.frame_size
        base_s = sent_samples / rate
        wi = 0
        for k in range(0, seg.samples.size, frame):
            chunk = seg.samples[k : k + frame]
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            start_s = (sent_samples) / rate
            stop_s = (sent_samples + chunk.size) / rate
            # A word's text goes out no later than the chunk holding its start.
            while wi < len(seg.words) and base_s + seg.words[wi].start_s < stop_s:
                await self._send_word(seg.words[wi], base_s)
                wi += 1
            payload = encode(chunk, fmt)
            if fmt.encoding == "wav" and sent_samples == 0:
                payload = wav_header(rate) + payload
            # Built by hand: json.dumps scanning 10 kB of base64 (which needs no escaping)
            # for every chunk was the emulator's largest cost at 160 sessions.
            await self.owner.send_raw(
                '{"type":"audio","audio":"'
                + base64.b64encode(payload).decode("ascii")
                + f'","start_s":{start_s!r},"stop_s":{stop_s!r},"stream_id":0{self._id_field}}}'
            )
            now = time.monotonic()
            dur = chunk.size / rate
            if self.stats.first_audio_at is None:
                self.stats.first_audio_at = now
            self.stats.audio_chunks.append((now, dur))
            if self.owner.client_gone or self.stopped:
                self.stats.audio_after_client_gone_s += dur
            self.owner.stats_changed()
            sent_samples += chunk.size
            chunks_sent += 1
            next_at += CHUNK_S / self.latency.speed
            await self._after_chunk(chunks_sent, stop_s)
            if self.done:
                return next_at, sent_samples, chunks_sent
        for w in seg.words[wi:]:
            await self._send_word(w, base_s)
        return next_at, sent_samples, chunks_sent

    async def _send_word(self, word: _SpokenWord, base_s: float) -> None:
        start, stop = base_s + word.start_s, base_s + word.stop_s
        await self.owner.send(
            self._msg(
                {
                    "type": "text",
                    "text": word.text,
                    "start_s": start,
                    "stop_s": stop,
                    "stream_id": 0,
                }
            )
        )
        self.stats.words.append((word.text, start, stop))

    async def _after_chunk(self, chunks_sent: int, audio_end_s: float) -> None:
        """Faults and holds that fire after a given number of chunks."""
        faults = self.faults
        if (
            Fault.RESET_MID_WORD in faults
            and chunks_sent >= self.timing.after_chunks
            and self.stats.words
            and self.stats.words[-1][1] < audio_end_s < self.stats.words[-1][2] - 1e-6
        ):
            # The audio sent so far ends inside the last word whose timing went out.
            self.done = True
            self.owner.request_reset()
            return
        if chunks_sent == self.timing.after_chunks:
            if Fault.REQUEST_ERROR in faults:
                self.done = True
                await self._fail(1011, "internal error (emulated request fault)")
                return
            if Fault.ERROR_MID_ANSWER in faults:
                self.done = True
                await self._fail(1011, "internal error (emulated fault)", close=True)
                return
            if Fault.RESET_MID_ANSWER in faults:
                self.done = True
                self.owner.request_reset()
                return
            if Fault.MALFORMED_JSON in faults:
                await self.owner.send_raw("{this is not json")
            if Fault.STALL_MID_ANSWER in faults:
                # Nothing more for this request, the socket left open: wait to be stopped.
                self.stats.stalled_at = time.monotonic()
                self.owner.stats_changed()
                logger.info(f"emulator: request {self.client_req_id or '-'} stalls")
                await asyncio.get_running_loop().create_future()
        if self.hold is not None and chunks_sent == self.hold.chunks:
            self.hold.reached.set()
            await self.hold.wait_released()
