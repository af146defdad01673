"""Per-request bookkeeping: what was sent to Gradium for one answer and what came back.

One Gradium request carries one answer (or one ``TTSSpeakFrame``). The record keeps the text
sent and the words whose audio arrived, so a request whose socket died can be re-sent on a
fresh socket from the first word that was never spoken.
"""

import re
import time
from dataclasses import dataclass, field

import numpy as np
import soxr
from loguru import logger
from websockets.exceptions import ConnectionClosed

from pipecat_gradium.alignment import WordAligner
from pipecat_gradium.connection import GradiumSocket
from pipecat_gradium.protocol import FLUSH_TAG, end_of_stream_message, text_message


@dataclass
class GradiumRequest:
    """One Gradium request, identified on the wire by ``client_req_id`` (= Pipecat context id).

    Attributes:
        req_id: The ``client_req_id`` on the wire: the context id, then ``<context id>#2``,
            ``#3``... for continuations on a new socket after one was lost mid-answer.
        context_id: The Pipecat audio context the request's audio and words go to.
        socket: The socket the request was set up on.
        interruptible: Whether a barge-in drops it.
        gradium_rate: The rate Gradium sends.
        output_rate: The rate the pipeline plays.
        attempt: 1 for the first request of the answer, 2 for its first continuation...
        time_offset_s: Audio of this answer delivered by earlier attempts: added to word times,
            which Gradium counts from the start of each request's audio.
        texts: Every ``text`` message sent, verbatim (tags included).
        words: ``(word, start_s, stop_s)`` of every word whose timing arrived.
        released: How many of ``words`` were passed on as heard (their audio fully arrived).
        audio_s: Seconds of audio received.
        has_text: Whether any non-whitespace text was sent.
        ended: ``end_of_stream`` sent (no more text).
        done: The server's ``end_of_stream`` arrived.
        failed: A fault ended it (lost socket, request error, no audio in time): nothing more
            is sent on it; text meant for it is kept for its continuation.
        unflushed: Text was sent since the last ``<flush>``; the server may hold words back.
        created_at: When the setup was sent (monotonic seconds).
        first_token_at: When the answer's first LLM token reached the service.
        first_audio_at: When its first audio arrived.
        last_token_at: When its latest LLM token reached the service.
        owed_since: When Gradium first owed this request audio (a flush or end sent).
        ended_at: When ``end_of_stream`` was sent.
        last_audio_at: When this request's latest audio arrived.
    """

    req_id: str
    context_id: str
    socket: GradiumSocket
    interruptible: bool
    gradium_rate: int
    output_rate: int
    attempt: int = 1
    time_offset_s: float = 0.0
    texts: list[str] = field(default_factory=list)
    words: list[tuple[str, float, float]] = field(default_factory=list)
    released: int = 0
    audio_s: float = 0.0
    has_text: bool = False
    ended: bool = False
    done: bool = False
    failed: bool = False
    unflushed: bool = False
    created_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    first_audio_at: float | None = None
    last_token_at: float | None = None
    owed_since: float | None = None
    ended_at: float | None = None
    last_audio_at: float | None = None
    aligner: WordAligner = field(default_factory=WordAligner)
    shown: list[str | None] = field(default_factory=list)
    _resampler: soxr.ResampleStream | None = None

    def __post_init__(self) -> None:
        """Create the request's own resampler when Gradium cannot send the output rate."""
        if self.gradium_rate != self.output_rate:
            self._resampler = soxr.ResampleStream(
                self.gradium_rate, self.output_rate, 1, dtype="int16"
            )

    @property
    def sent_text(self) -> str:
        """Everything sent so far, as Gradium concatenated it (tags included)."""
        return "".join(self.texts)

    @property
    def generating(self) -> bool:
        """Whether Gradium may still be producing audio for this request."""
        return self.has_text and not self.done

    def note_token(self) -> None:
        """Record an LLM token of this answer arriving."""
        now = time.monotonic()
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now

    def convert(self, pcm: bytes, *, last: bool = False) -> bytes:
        """Turn Gradium's PCM into the pipeline's rate (a no-op when they match).

        Args:
            pcm: 16-bit mono PCM at ``gradium_rate``.
            last: Whether this is the request's final chunk (drains the resampler).

        Returns:
            16-bit mono PCM at ``output_rate``.
        """
        self.audio_s += len(pcm) / 2 / self.gradium_rate
        if pcm:
            self.last_audio_at = time.monotonic()
        if self._resampler is None:
            return pcm
        samples = np.frombuffer(pcm, dtype=np.int16)
        return self._resampler.resample_chunk(samples, last=last).tobytes()

    async def send(self, message: str) -> bool:
        """Send one frame on the request's socket.

        Args:
            message: The JSON frame.

        Returns:
            Whether it was sent; a closed socket is reported by its receive task, not here.
        """
        if self.failed:
            return False
        try:
            await self.socket.send(message)
            return True
        except ConnectionClosed as e:
            logger.warning(f"Gradium: {self.socket} closed, request {self.req_id} not sent: {e}")
            return False

    async def send_text(self, text: str, *, flush_first: bool) -> str | None:
        """Send a phrase; the first one loses its leading separator and may carry a flush.

        The text is recorded even when the socket is gone, so a continuation re-sends it.

        Args:
            text: The phrase, with its trailing separator.
            flush_first: Whether the request's first phrase gets a ``<flush>``.

        Returns:
            The text as sent (for usage metrics), or None if nothing was sent.
        """
        if not self.has_text:
            # The separator before the first phrase means nothing to Gradium.
            text = text.lstrip()
            if not text.strip():
                return None
        wire = text
        if not self.has_text and flush_first and text[-1:].isspace():
            wire = text + FLUSH_TAG
        sent = await self.send(text_message(wire, self.req_id))
        self.texts.append(wire)
        if not sent:
            return None
        self.has_text = True
        self.unflushed = not wire.endswith(FLUSH_TAG)
        if not self.unflushed:
            self._owe_audio()
        return text

    async def flush(self) -> None:
        """Send ``<flush>`` if text went out since the last one."""
        if self.unflushed and await self.send(text_message(FLUSH_TAG, self.req_id)):
            self.texts.append(FLUSH_TAG)
            self.unflushed = False
            self._owe_audio()

    async def end(self) -> None:
        """Send ``end_of_stream`` once: no more text for this request."""
        if not self.ended:
            self.ended = True
            self.ended_at = time.monotonic()
            if await self.send(end_of_stream_message(self.req_id)) and self.has_text:
                self._owe_audio()

    def _owe_audio(self) -> None:
        if self.owed_since is None:
            self.owed_since = time.monotonic()

    def audio_owed_since(self) -> float | None:
        """Since when Gradium owes this request audio it has not sent, if it does.

        Before the first audio: from the first flush or end. After it: once the request has
        ended, from the latest audio or the end, whichever is later (after end_of_stream the
        audio runs without gaps; before it, the LLM may pause as long as it likes).

        Returns:
            A ``time.monotonic()`` value, or None when no audio is owed.
        """
        if self.failed or self.done or self.owed_since is None:
            return None
        if self.last_audio_at is None:
            return self.owed_since
        if self.ended and self.ended_at is not None:
            return max(self.last_audio_at, self.ended_at)
        return None

    def add_word(self, text: str, start_s: float, stop_s: float) -> None:
        """Record Gradium's timing of the request's next word.

        Args:
            text: The word as Gradium reported it.
            start_s: Its start, in seconds of this request's audio.
            stop_s: Its end.
        """
        self.words.append((text, start_s, stop_s))
        self.aligner.set_text(self.sent_text)
        self.shown.append(self.aligner.add_report(text))

    @property
    def heard(self) -> int:
        """Words whose audio has fully arrived (their ``stop_s`` is covered by the audio)."""
        covered = self.audio_s + 1e-3 if not self.done else float("inf")
        n = self.released
        while n < len(self.words) and self.words[n][2] <= covered:
            n += 1
        return n

    def take_heard(self) -> list[tuple[str, float]]:
        """The words newly heard since the last call, for Pipecat's word timestamps.

        Returns:
            ``(word, start_s)`` pairs, in order.
        """
        n = self.heard
        words = self.words[self.released : n]
        shown = self.shown[self.released : n]
        self.released = n
        # The LLM's own words for what Gradium reported ("24" for "twenty", "four").
        return [(text, start) for (_, start, _), text in zip(words, shown, strict=True) if text]

    def unspoken_text(self) -> str:
        """The text sent from the first source word not heard, for a continuation to re-send.

        :class:`~pipecat_gradium.alignment.WordAligner` maps Gradium's word reports onto the
        source words, whatever its normalization made of them ("twenty four" for "24"), words
        being split at whitespace and at tags the way Gradium reads them
        (``Wait<break time="1s"/>now`` is two words). Only reports whose audio fully arrived
        count, so a word cut mid-way is re-sent. ``<flush>`` tags are dropped (the continuation
        flushes its own text); other tags after the cut are kept.

        Returns:
            The remaining text, starting at a word, or "" when every word was heard.
        """
        self.aligner.set_text(self.sent_text)
        return self.aligner.unspoken_text(self.heard)

    def shown_not_heard(self) -> int:
        """Source words already in the context that :meth:`unspoken_text` re-sends (0 or 1).

        Returns:
            How many leading words of the re-sent text the continuation must not show again.
        """
        return max(0, self.aligner.shown_at(self.released) - self.aligner.heard(self.heard))
