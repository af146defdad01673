"""One attempt of an answer: a Gradium request under one ``client_req_id``, on one socket.

An answer normally has one attempt. When a fault cuts it (a lost socket, a request error, audio
overdue), the answer goes on with a new attempt that re-sends the text whose words were not heard.
An attempt keeps exactly what that needs: the text sent, verbatim, and Gradium's word reports
with the audio received, so the first source word not wholly heard is known.
"""

import time
from enum import Enum

import numpy as np
import soxr
from loguru import logger
from websockets.exceptions import ConnectionClosed

from pipecat_gradium.alignment import ShownWord, WordAligner
from pipecat_gradium.protocol import FLUSH_TAG, end_of_stream_message, text_message
from pipecat_gradium.sockets import GradiumSocket

#: Words Gradium may hold back, without a flush, to read ahead (it "lags a few words behind the
#: text"); the words sent before them are owed as the text streams.
HELD_BACK_WORDS = 5


def attempt_id(context_id: str, number: int) -> str:
    """The ``client_req_id`` of an answer's ``number``-th attempt: never reused in a call.

    Args:
        context_id: The answer's Pipecat context id.
        number: 1 for the first attempt, 2 for the first continuation...

    Returns:
        ``context_id`` itself, then ``<context_id>#2``, ``#3``...
    """
    return context_id if number == 1 else f"{context_id}#{number}"


class AttemptState(Enum):
    """Where an attempt is in its life.

    Its text may still grow while it is ``LIVE``; ``end_of_stream`` having been sent is a
    separate fact (:attr:`Attempt.end_sent`), since a fault can fail an attempt either side of it.
    """

    LIVE = "live"  # set up; audio may come
    FAILED = "failed"  # a fault ended it: nothing more is sent; its text waits for a continuation
    FINISHED = "finished"  # Gradium's end_of_stream arrived: every word was heard
    ABANDONED = "abandoned"  # given up without Gradium ending it (its answer was cut)


class Attempt:
    """One Gradium request: what was sent, what came back, and how to resume after it.

    Attributes:
        req_id: The ``client_req_id`` on the wire.
        number: 1 for the answer's first attempt, 2 for its first continuation...
        socket: The socket it was set up on.
        time_offset_s: Audio of the answer delivered by earlier attempts: added to word times,
            which Gradium counts from the start of each request's audio.
        state: See :class:`AttemptState`.
        texts: Every ``text`` message sent, verbatim (tags included), and the text meant for
            it while it was failed (a continuation re-sends it).
        audio_s: Seconds of audio received.
        has_text: Whether any non-whitespace text was sent.
        unflushed: Text was sent since the last ``<flush>``; Gradium may hold words back.
        end_sent: ``end_of_stream`` was sent (no more text).
        last_audio_at: When its latest audio arrived (monotonic seconds).
        aligner: Maps Gradium's word reports onto the source words sent.
    """

    def __init__(
        self,
        req_id: str,
        socket: GradiumSocket,
        *,
        number: int,
        gradium_rate: int,
        output_rate: int,
        time_offset_s: float = 0.0,
        already_shown: int = 0,
    ):
        """Create an attempt whose setup is about to be sent.

        Args:
            req_id: Its ``client_req_id``.
            socket: The socket it goes on.
            number: Its place among the answer's attempts (1 for the first).
            gradium_rate: The rate Gradium sends.
            output_rate: The rate the pipeline plays (resampled here when they differ).
            time_offset_s: Audio delivered by the answer's earlier attempts.
            already_shown: Leading source words an earlier attempt already showed.
        """
        self.req_id = req_id
        self.number = number
        self.socket = socket
        self.time_offset_s = time_offset_s
        self.state = AttemptState.LIVE
        self.texts: list[str] = []
        self.audio_s = 0.0
        self.has_text = False
        self.unflushed = False
        self.end_sent = False
        self.last_audio_at: float | None = None
        self.aligner = WordAligner(already_shown=already_shown)
        self._gradium_rate = gradium_rate
        self._owed_since: float | None = None
        self._ended_at: float | None = None
        self._flushed_at: float | None = None  # since when words are owed
        self._flushed_words = 0  # source words (with letters or digits) Gradium owes
        self._reported_at: float | None = None  # the latest word report
        self._stops: list[float] = []  # stop_s of every word report, in order
        self._shown: list[list[ShownWord]] = []  # the source words each report shows
        self._released = 0  # reports passed on as heard
        self._resampler = (
            soxr.ResampleStream(gradium_rate, output_rate, 1, dtype="int16")
            if gradium_rate != output_rate
            else None
        )
        self._starts: list[float] = []

    @property
    def live(self) -> bool:
        """Whether text, audio and words still go through this attempt."""
        return self.state is AttemptState.LIVE

    @property
    def sent_text(self) -> str:
        """Everything sent so far, as Gradium concatenated it (tags included)."""
        return "".join(self.texts)

    @property
    def generating(self) -> bool:
        """Whether Gradium may still be producing audio for it (a barge-in closes its socket)."""
        return self.has_text and self.state in (AttemptState.LIVE, AttemptState.FAILED)

    @property
    def words_pending(self) -> bool:
        """Whether reported words wait for their audio to arrive."""
        return self._released < len(self._stops)

    def convert(self, pcm: bytes, *, last: bool = False) -> bytes:
        """Turn Gradium's PCM into the pipeline's rate (a no-op when they match).

        Args:
            pcm: 16-bit mono PCM at Gradium's rate.
            last: Whether this is the request's final chunk (drains the resampler).

        Returns:
            16-bit mono PCM at the pipeline's rate.
        """
        self.audio_s += len(pcm) / 2 / self._gradium_rate
        if pcm:
            self.last_audio_at = time.monotonic()
        if self._resampler is None:
            return pcm
        samples = np.frombuffer(pcm, dtype=np.int16)
        return self._resampler.resample_chunk(samples, last=last).tobytes()

    # ------------------------------------------------------------------ sending

    async def send(self, message: str) -> bool:
        """Send one frame on the attempt's socket.

        Args:
            message: The JSON frame.

        Returns:
            Whether it was sent; a closed socket is reported by its receive task, not here.
        """
        if not self.live:
            return False
        try:
            await self.socket.send(message)
            return True
        except ConnectionClosed as e:
            logger.warning(f"Gradium: {self.socket} closed, request {self.req_id} not sent: {e}")
            return False

    async def send_text(self, text: str, *, flush_first: bool) -> str | None:
        """Send a phrase; the first one loses its leading separator and may carry a flush.

        The text is recorded even when it cannot be sent, so a continuation re-sends it.

        Args:
            text: The phrase, with its trailing separator.
            flush_first: Whether the attempt's first phrase gets a ``<flush>``.

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
        self._note_owed(flushed=not self.unflushed)
        return text

    async def flush(self) -> None:
        """Send ``<flush>`` if text went out since the last one."""
        if self.unflushed and await self.send(text_message(FLUSH_TAG, self.req_id)):
            self.texts.append(FLUSH_TAG)
            self.unflushed = False
            self._owe_audio()
            self._note_owed(flushed=True)

    async def end(self) -> None:
        """Send ``end_of_stream`` once: no more text for this request."""
        if not self.end_sent:
            self.end_sent = True
            self._ended_at = time.monotonic()
            if await self.send(end_of_stream_message(self.req_id)) and self.has_text:
                self._owe_audio()
                self._note_owed(flushed=True)

    def _owe_audio(self) -> None:
        if self._owed_since is None:
            self._owed_since = time.monotonic()

    def _note_owed(self, *, flushed: bool) -> None:
        # After a flush (or the end) Gradium owes every word sent, without waiting for more
        # text; before one, all but the few it may hold back to read ahead. Trailing symbols
        # are not counted: Gradium may not report them.
        self.aligner.set_text(self.sent_text)
        words = self.aligner.words
        n = len(words)
        while n and not words[n - 1].key:
            n -= 1
        if not flushed:
            n -= HELD_BACK_WORDS
        if n <= self._flushed_words:
            return
        if self.aligner.shown >= self._flushed_words:
            # Nothing was owed until now: Gradium's silence on these words starts here; more
            # words owed while some still are do not restart the clock.
            self._flushed_at = time.monotonic()
        self._flushed_words = n

    def stalled_since(self) -> float | None:
        """Since when Gradium has been silent on words it owes, once its audio has flowed.

        Words are owed once a flush or the end was sent after them, or :data:`HELD_BACK_WORDS`
        more words were sent after them. A stall needs word reports
        to judge by: an attempt that reported no word is judged by its first audio and its end
        (:meth:`audio_owed_since`).

        Returns:
            A ``time.monotonic()`` value, or None when nothing owed is missing.
        """
        if not self.live or self.last_audio_at is None or self._reported_at is None:
            return None
        if self.aligner.shown >= self._flushed_words:
            return None
        return max(self.last_audio_at, self._reported_at, self._flushed_at or 0.0)

    def audio_owed_since(self) -> float | None:
        """Since when Gradium owes this attempt audio it has not sent, if it does.

        Before the first audio: from the first flush or end. After it: once the text has
        ended, from the latest audio or the end, whichever is later (after end_of_stream the
        audio runs without gaps; before it, the LLM may pause as long as it likes).

        Returns:
            A ``time.monotonic()`` value, or None when no audio is owed.
        """
        if not self.live or self._owed_since is None:
            return None
        if self.last_audio_at is None:
            return self._owed_since
        if self.end_sent and self._ended_at is not None:
            return max(self.last_audio_at, self._ended_at)
        return None

    # ------------------------------------------------------------------ words

    def add_word(self, text: str, start_s: float, stop_s: float) -> None:
        """Record Gradium's timing of the attempt's next word.

        Args:
            text: The word as Gradium reported it.
            start_s: Its start, in seconds of this attempt's audio.
            stop_s: Its end.
        """
        self._reported_at = time.monotonic()
        self._starts.append(start_s)
        self._stops.append(stop_s)
        self.aligner.set_text(self.sent_text)
        self._shown.append(self.aligner.add_report(text))

    @property
    def heard(self) -> int:
        """Reports whose audio has fully arrived (their ``stop_s`` is covered by the audio)."""
        finished = self.state is AttemptState.FINISHED
        covered = float("inf") if finished else self.audio_s + 1e-3
        n = self._released
        while n < len(self._stops) and self._stops[n] <= covered:
            n += 1
        return n

    def take_heard(self) -> list[tuple[str, float]]:
        """The words newly heard since the last call, for Pipecat's word timestamps.

        Returns:
            ``(word, start_s)`` pairs in the answer's time, in order, one per source word: the
            LLM's own words for what Gradium reported ("24" for "twenty", "four"), each at
            the time :class:`~pipecat_gradium.alignment.ShownWord` gives it.
        """
        n = self.heard
        shown = [w for words in self._shown[self._released : n] for w in words]
        self._released = n
        offset = self.time_offset_s
        out: list[tuple[str, float]] = []
        for w in shown:
            start, stop = self._starts[w.report], self._stops[w.report]
            out.append((w.text, offset + start + w.fraction * max(0.0, stop - start)))
        return out

    def unspoken_text(self) -> str:
        """The text sent from the first source word not heard, for a continuation to re-send.

        :class:`~pipecat_gradium.alignment.WordAligner` maps Gradium's word reports onto the
        source words, whatever its normalization made of them ("twenty four" for "24"). Only
        reports whose audio fully arrived count, so a word cut mid-way is re-sent. ``<flush>``
        tags are dropped (the continuation flushes its own text); other tags are kept.

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
        return max(0, self.aligner.shown_at(self._released) - self.aligner.heard(self.heard))
