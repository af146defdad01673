"""One answer (an LLM response or a ``TTSSpeakFrame``) and everything about it.

An :class:`Answer` owns its attempts on the wire (one ``client_req_id`` each, on one socket), the
decision to continue or cut it after a fault, its one timer (audio owed, the LLM gone quiet, the
audio context kept open), its audio batch and the release of its words once heard. It talks to
the service that owns it only through :class:`AnswerHost`, which it declares here; it never
reaches into the service.

Under a fault the rules are the user's (see the design's "Rules that hold under faults"):

* a request cut by a lost socket, a request error or a stall of the audio Gradium owes goes on
  as a continuation, a new attempt re-sending the text whose words were not heard, at most
  :data:`MAX_ATTEMPTS` in all;
* the account's concurrency cap is not a fault of the request: the answer waits for a slot,
  with back-off, up to ``limit_wait_s``;
* first audio Gradium owes (a flush or the end was sent) is waited for up to
  ``first_audio_timeout_s``; once audio flows, a stall longer than ``stall_timeout_s`` is a lost
  request;
* after a barge-in nothing more is set up or sent for the answer, whatever stage it is in;
* an answer that cannot go on is *cut*: its context keeps the words heard, and none of its later
  phrases opens a request. Each answer is given one error at most.
"""

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from loguru import logger
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.network import exponential_backoff_time

from pipecat_gradium.attempt import Attempt, AttemptState, attempt_id
from pipecat_gradium.batching import AudioBatcher
from pipecat_gradium.phrases import split_message, wire_text
from pipecat_gradium.protocol import (
    Audio,
    EndOfStream,
    ErrorKind,
    Ready,
    ServerError,
    ServerMessage,
    Word,
)
from pipecat_gradium.settings import GradiumStreamingTTSTuning
from pipecat_gradium.sockets import GradiumSocket, ServiceSockets

#: Attempts per answer: the first, then continuations after a fault (waits for a concurrency
#: slot are not counted: they are not faults of the request).
MAX_ATTEMPTS = 3
#: First wait before retrying an answer refused for the account's concurrency cap.
SLOT_RETRY_S = 0.25
#: Longest wait between those retries.
SLOT_RETRY_MAX_S = 2.0
#: Gradium sends 80 ms chunks faster than real time: no audio for this long means it waits for
#: text (the low-buffer flush, ``Tuning.low_buffer_flush_s``).
AUDIO_PAUSE_S = 0.12


class AnswerKind(Enum):
    """What an answer speaks, which decides whether the quiet flush applies."""

    LLM = "llm"  # an LLM response: text streams in, and may pause
    SPEAK = "speak"  # a TTSSpeakFrame or text outside any turn: all its text at once


@dataclass(frozen=True)
class AnswerConfig:
    """What every answer of one service shares (fixed once the pipeline's rate is known).

    Parameters:
        tuning: The service's limits (timeouts, back-offs, message size, audio batching).
        gradium_rate: The rate Gradium sends.
        output_rate: The rate the pipeline plays.
        quiet_flush_s: The LLM quiet this long mid-answer: speak what is held.
        keepalive_s: Interval between refreshes of the answer's audio context.
    """

    tuning: GradiumStreamingTTSTuning
    gradium_rate: int
    output_rate: int
    quiet_flush_s: float
    keepalive_s: float


class AnswerHost(Protocol):
    """What an answer needs from the service that owns it (the Pipecat side)."""

    def create_task(self, coroutine: Coroutine, name: str | None = None) -> asyncio.Task:
        """Start a tracked task."""
        ...

    async def cancel_task(self, task: asyncio.Task, timeout: float | None = None) -> None:
        """Cancel a tracked task and wait for it."""
        ...

    async def socket_for(self, answer: "Answer", *, continuation: bool) -> GradiumSocket | None:
        """A socket for the answer's next attempt, or None (the reason is reported or known)."""
        ...

    def setup_message(self, req_id: str) -> str:
        """The setup of a new request under the current settings."""
        ...

    def may_continue(self, answer: "Answer") -> bool:
        """Whether a cut attempt may be continued (the key holds, the answer still plays)."""
        ...

    @property
    def ending(self) -> bool:
        """The pipeline is ending: audio owed is waited for ``stall_timeout_s``, no longer."""
        ...

    @property
    def loop_loaded(self) -> bool:
        """The event loop runs late (see :mod:`pipecat_gradium.loop_lag`)."""
        ...

    @property
    def loop_strained(self) -> bool:
        """The loop is loaded, or many services share it and it starts to run late."""
        ...

    async def concurrency_capped(self, answer: "Answer", message: str) -> None:
        """Gradium refused a session for the account's concurrency cap (said once per service)."""
        ...

    async def voice_rejected(self, answer: "Answer", message: str) -> None:
        """Gradium does not know the voice the answer was set up with."""
        ...

    async def report(self, answer: "Answer | None", message: str, category: ErrorCategory) -> None:
        """Push one error for a fault of this answer (None: of a socket)."""
        ...

    async def play(self, answer: "Answer", pcm: bytes) -> None:
        """Queue audio of the answer for playback."""
        ...

    async def show_words(self, answer: "Answer", words: list[tuple[str, float]]) -> None:
        """Pass on the answer's heard words with their start times."""
        ...

    async def text_sent(self, text: str) -> None:
        """Count text sent to Gradium (usage metrics)."""
        ...

    def first_audio(self, answer: "Answer", ttfa_s: float | None) -> None:
        """The answer's first audio arrived (``ttfa_s`` from its first LLM token, if known)."""
        ...

    def keep_alive(self, answer: "Answer") -> None:
        """Keep the answer's audio context open while audio is owed."""
        ...

    async def speak_held(self, answer: "Answer") -> None:
        """Speak what is held mid-answer: complete words the phrases hold, then ``<flush>``.

        Asked when the LLM has been quiet ``quiet_flush_s``, or when the audio received is
        about to run out (``Tuning.low_buffer_flush_s``).
        """
        ...

    async def finished(self, answer: "Answer") -> None:
        """The answer has no live attempt any more (ended, or cut)."""
        ...


class Answer:
    """One answer: its attempts, its fate under faults, its timer, audio batch and words.

    Attributes:
        context_id: The Pipecat context id; the first attempt's ``client_req_id``.
        kind: What it speaks.
        interruptible: Whether a barge-in drops it.
        attempt: The attempt registered now (may be failed while its continuation connects),
            or None once the answer has no live attempt.
        cut: It can get no more attempts (a fault with no way on, or no socket): its context
            keeps the words heard, and none of its later phrases opens a request.
        reported: It was given an error already (Pipecat's "completed with no audio" would
            repeat it).
        first_token_at: When its first LLM token reached the service (monotonic seconds).
        last_token_at: When its latest LLM token did.
        first_audio_at: When its first audio arrived.
    """

    def __init__(
        self,
        context_id: str,
        *,
        kind: AnswerKind,
        interruptible: bool,
        host: AnswerHost,
        sockets: ServiceSockets,
        config: AnswerConfig,
    ):
        """Create an answer with no attempt yet.

        Args:
            context_id: The Pipecat context id.
            kind: What it speaks.
            interruptible: Whether a barge-in drops it.
            host: The service that owns it.
            sockets: The service's sockets (attempts are released and closed there).
            config: What every answer of the service shares.
        """
        self.context_id = context_id
        self.kind = kind
        self.interruptible = interruptible
        self.attempt: Attempt | None = None
        self.cut = False
        self.reported = False
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.first_audio_at: float | None = None
        self._host = host
        self._sockets = sockets
        self._config = config
        self._dropped = False
        self._timer: asyncio.Task | None = None
        self._timer_wakes: asyncio.Event | None = None  # set to end the timer's sleep early
        self._timer_wake_at = 0.0
        self._continuations = 0  # after faults; bounded by MAX_ATTEMPTS
        self._slot_waits = 0  # retries for a concurrency slot
        self._slot_deadline: float | None = None
        self._retry_task: asyncio.Task | None = None
        self._bytes_per_s = config.output_rate * 2
        self._played = False  # a frame of its audio went to playback
        self._batch = AudioBatcher(
            self._play,
            lambda coro: host.create_task(coro, name="gradium-audio-batch"),
            max_s=config.tuning.audio_batch_s,
            prebuffer=self._first_frame_prebuffer,
            # Held audio due with no chunk to carry it (generation paused): the words that
            # waited for it (a first frame gathered under load) go with it.
            on_deadline=self.flush_audio,
        )

    def __repr__(self) -> str:
        return f"Answer({self.context_id})"

    @property
    def open_for_text(self) -> bool:
        """Whether text can still go to the registered attempt (its end not sent)."""
        return self.attempt is not None and not self.attempt.end_sent

    @property
    def spoke(self) -> bool:
        """Whether text of it went to Gradium (its first phrase, at least)."""
        return self.attempt is not None and bool(self.attempt.texts)

    @property
    def unflushed(self) -> bool:
        """Whether text went out since the last ``<flush>`` (Gradium may hold words back)."""
        return self.attempt is not None and self.attempt.unflushed

    @property
    def generating(self) -> bool:
        """Whether Gradium may still be producing audio for it."""
        return self.attempt is not None and self.attempt.generating

    def carried_by(self, sock: GradiumSocket) -> bool:
        """Whether its registered attempt is on ``sock``."""
        return self.attempt is not None and self.attempt.socket is sock

    def note_token(self) -> None:
        """Record an LLM token of this answer arriving."""
        now = time.monotonic()
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now

    def mark_cut(self) -> None:
        """No attempt can be opened for it any more (Gradium unreachable, service unusable)."""
        self.cut = True

    # ------------------------------------------------------------------ attempts

    async def start(self) -> bool:
        """Open its first attempt (or a fresh one after the last finished).

        Returns:
            Whether an attempt is open.
        """
        return await self._open_attempt(resume=None) is not None

    async def _open_attempt(self, *, resume: Attempt | None) -> Attempt | None:
        if self._dropped:
            return None
        sock = await self._host.socket_for(self, continuation=resume is not None)
        if sock is None or self._dropped:
            return None  # no socket, or a barge-in while it connected: nothing is set up
        number = resume.number + 1 if resume else 1
        attempt = Attempt(
            attempt_id(self.context_id, number),
            sock,
            number=number,
            gradium_rate=self._config.gradium_rate,
            output_rate=self._config.output_rate,
            time_offset_s=resume.time_offset_s + resume.audio_s if resume else 0.0,
            already_shown=resume.shown_not_heard() if resume else 0,
        )
        if not await attempt.send(self._host.setup_message(attempt.req_id)):
            return None
        sock.requests[attempt.req_id] = self
        self.attempt = attempt
        if self._timer is None:
            self._timer = self._host.create_task(self._watch(), name="gradium-answer-timer")
        return attempt

    async def send_text(self, text: str) -> None:
        """Send a phrase: no control characters, no stray '<', messages cut between words.

        Args:
            text: The phrase, with its trailing separator.
        """
        for piece in split_message(wire_text(text), self._config.tuning.max_chunk_chars):
            await self._send_piece(piece)

    async def _send_piece(self, text: str) -> None:
        attempt = self.attempt
        if attempt is None or self._dropped:
            return
        sent = await attempt.send_text(
            text, flush_first=self._config.tuning.flush_after_first_chunk
        )
        if sent is not None:
            await self._host.text_sent(sent)
            return
        if self.attempt is not None and self.attempt is not attempt and attempt.texts:
            # The continuation was opened while this send failed: the text goes there.
            attempt.texts.pop()
            await self._send_piece(text)

    async def flush(self) -> None:
        """Send ``<flush>`` if text went out since the last one."""
        if self.attempt is not None:
            await self.attempt.flush()

    async def end(self) -> None:
        """Send ``end_of_stream``: no more text (a no-op when already sent)."""
        if self.attempt is not None:
            await self.attempt.end()

    # ------------------------------------------------------------------ what Gradium sends

    async def on_message(self, sock: GradiumSocket, msg: ServerMessage) -> None:
        """Handle a message of one of its attempts; a replaced or failed attempt's is dropped.

        Args:
            sock: The socket it came on.
            msg: The parsed message.
        """
        attempt = self.attempt
        if (
            self._dropped
            or attempt is None
            or attempt.req_id != msg.client_req_id
            or attempt.socket is not sock
            or not attempt.live
        ):
            return
        if isinstance(msg, Audio):
            await self._on_audio(attempt, msg.pcm)
        elif isinstance(msg, Word):
            attempt.add_word(msg.text, msg.start_s, msg.stop_s)
            await self._release_heard_words(attempt)
        elif isinstance(msg, EndOfStream):
            attempt.state = AttemptState.FINISHED
            tail = attempt.convert(b"", last=True)
            if tail:
                await self._batch.add(tail, self._bytes_per_s)
            await self._finish(attempt)
        elif isinstance(msg, ServerError):
            await self._on_request_error(attempt, msg)
        elif isinstance(msg, Ready):
            logger.trace(f"Gradium: request {attempt.req_id} ready ({msg.request_id})")

    async def _on_audio(self, attempt: Attempt, pcm: bytes) -> None:
        self._slot_deadline = None  # a session was had: a later refusal waits afresh
        self._slot_waits = 0
        if self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
            ttfa = None
            if self.first_token_at is not None:
                ttfa = self.first_audio_at - self.first_token_at
            self._host.first_audio(self, ttfa)
        out = attempt.convert(pcm)
        self._wake_timer_for_low_buffer(attempt)
        if out:
            await self._batch.add(out, self._bytes_per_s)
        if attempt.words_pending:
            await self._release_heard_words(attempt)

    async def _play(self, pcm: bytes) -> None:
        if not self._dropped:
            self._played = True
            await self._host.play(self, pcm)

    def _first_frame_prebuffer(self) -> float:
        """Audio to gather into the answer's first frame: only under load, only at its start.

        A loaded loop takes a turn of 100-500 ms now and then; the chunks after a lone first
        chunk then reach playback late and the listener hears a stutter in the first second.
        Playback that starts with a few hundred ms in hand rides those turns out. With many
        services on the loop, a milder lag already counts (see ``LoopLagMonitor.strained``):
        the long turns come a second into the burst, after the early answers began to play. A
        continuation's first chunk goes at once: its listener is already waiting.
        """
        if self._played or not self._host.loop_strained:
            return 0.0
        return self._config.tuning.loaded_prebuffer_s

    async def _release_heard_words(self, attempt: Attempt, *, flush: bool = False) -> None:
        """Pass on the words whose audio has fully arrived, after that audio.

        A word reported but cut mid-way by a fault never reaches the context; the continuation
        re-sends it. While the answer's first frame is still being gathered (under load, see
        ``Tuning.loaded_prebuffer_s``) the words wait for it, unless ``flush`` pushes it now
        (the attempt ends, or its socket is gone).
        """
        if self._batch.prebuffering and not flush:
            return  # released with the first frame (on_audio, or the end)
        heard = attempt.take_heard()
        if flush or heard:
            await self._batch.flush()  # the words go after their audio
        if heard:
            await self._host.show_words(self, heard)

    async def _finish(self, attempt: Attempt) -> None:
        """The attempt is over: its audio received so far was heard; its socket forgets it."""
        await self._release_heard_words(attempt, flush=True)
        self._batch.drop()
        if self.attempt is attempt:
            self.attempt = None
            await self._stop_timer()
        self._sockets.release(attempt.socket, attempt.req_id)
        await self._host.finished(self)

    # ------------------------------------------------------------------ faults

    def fail(self) -> Attempt | None:
        """A fault ended the registered attempt: nothing more is sent on it.

        Returns:
            The attempt that failed, or None when it had already failed (its fault is being
            handled) or there is none.
        """
        attempt = self.attempt
        if attempt is None or not attempt.live:
            return None
        attempt.state = AttemptState.FAILED
        return attempt

    def can_continue(self) -> bool:
        """Whether its failed attempt may be continued on a new one."""
        return (
            self.attempt is not None
            and not self._dropped
            and self._continuations < MAX_ATTEMPTS - 1
            and self._host.may_continue(self)
        )

    async def continue_or_cut(self) -> None:
        """Go on with a new attempt from the first word not heard, or end the answer here."""
        attempt = self.attempt
        if attempt is None or self._dropped:
            return
        if not self.can_continue():
            await self._cut(attempt)
            return
        self._continuations += 1
        if not await self._continue(attempt):
            await self._cut(attempt)

    async def flush_audio(self) -> None:
        """Push the audio held for playback now (it was heard before what comes next)."""
        if self.attempt is not None:
            await self._release_heard_words(self.attempt, flush=True)
        else:
            await self._batch.flush()

    async def _on_request_error(self, attempt: Attempt, msg: ServerError) -> None:
        """Gradium ended one request with an error: continue it like a lost socket.

        A limit of the account is not a fault of the request (wait for a slot); an unknown voice
        or a refused setup would fail again verbatim (cut, said once).
        """
        attempt.state = AttemptState.FAILED
        kind = msg.kind
        if kind is ErrorKind.CONCURRENCY:
            self._sockets.retire(attempt.socket)
            await self._host.concurrency_capped(self, msg.message)
            await self.wait_for_slot()
            return
        if kind is ErrorKind.VOICE:
            await self._host.voice_rejected(self, msg.message)
            await self._cut(attempt)
            return
        if kind in (ErrorKind.REJECTED, ErrorKind.KEY):
            # Gradium refused what was sent: sending it again would fail again.
            await self._host.report(
                self,
                f"Gradium rejected request {attempt.req_id}: {msg.message}",
                ErrorCategory.INVALID_REQUEST,
            )
            await self._cut(attempt)
            return
        # The socket may close after the error (it does when not multiplexed): it takes no new
        # request, and its loss would be this same fault, already reported.
        attempt.socket.error_reported = True
        self._sockets.retire(attempt.socket)
        can_continue = self.can_continue()
        action = "re-sending what was not heard" if can_continue else "the answer is cut short"
        await self._host.report(
            self,
            f"Gradium error for request {attempt.req_id}: {msg.message} (code {msg.code}); "
            f"{action}",
            ErrorCategory.SERVER,
        )
        await self.continue_or_cut()

    async def wait_for_slot(self) -> None:
        """The account's concurrency cap refused the attempt: retry later, with back-off.

        The failed attempt stays registered meanwhile, so text meant for it is kept and re-sent.
        Runs as a task: the socket's receive loop that reported the refusal is not held.
        """
        attempt = self.attempt
        if attempt is None or self._dropped:
            return
        now = time.monotonic()
        if self._slot_deadline is None:
            self._slot_deadline = now + self._config.tuning.limit_wait_s
        self._slot_waits += 1
        delay = exponential_backoff_time(
            self._slot_waits,
            min_wait=SLOT_RETRY_S,
            max_wait=SLOT_RETRY_MAX_S,
            multiplier=SLOT_RETRY_S,
        )
        if now + delay > self._slot_deadline:
            await self._host.report(
                self,
                f"no Gradium session became free within {self._config.tuning.limit_wait_s:.0f} s "
                "(the account's concurrency limit; limit_wait_s); the answer is not spoken",
                ErrorCategory.RATE_LIMIT,
            )
            await self._cut(attempt)
            return
        self._retry_task = self._host.create_task(
            self._retry_after(attempt, delay), name="gradium-slot-retry"
        )

    async def _retry_after(self, attempt: Attempt, delay: float) -> None:
        await asyncio.sleep(delay)
        self._retry_task = None
        if self._dropped or self.attempt is not attempt:
            return
        if not await self._continue(attempt):
            await self._cut(attempt)

    async def _continue(self, old: Attempt) -> bool:
        """Open the continuation of a failed attempt and re-send the text not heard.

        ``old`` stays registered until the continuation is set up: text meant for it
        meanwhile is kept in ``old.texts`` (nothing goes on the wire) and re-sent.
        """
        # The failed attempt's audio, and the words it made heard, go before the continuation's.
        await self._release_heard_words(old, flush=True)
        self._batch.drop()
        new = await self._open_attempt(resume=old)
        if new is None:
            return False
        logger.info(f"Gradium: continuing {old.req_id} as {new.req_id} on {new.socket}")
        self._sockets.release(old.socket, old.req_id)
        text = old.unspoken_text()
        if text.strip():
            await self.send_text(text)
        if old.end_sent:
            await new.end()
        return True

    async def _cut(self, attempt: Attempt) -> None:
        """End an answer that cannot go on: its context keeps only the words heard."""
        attempt.state = AttemptState.ABANDONED
        self.cut = True
        await self._finish(attempt)

    async def _on_audio_overdue(self, attempt: Attempt, waited_s: float) -> None:
        """Gradium owed audio longer than the limit: end the attempt and the answer."""
        first = attempt.last_audio_at is None
        await self._host.report(
            self,
            f"Gradium sent no audio for request {attempt.req_id} in {waited_s:.1f} s "
            f"({'first audio' if first else 'after the end of the text'}; limit "
            "first_audio_timeout_s); the answer is cut short and the next one goes on a "
            "fresh socket",
            ErrorCategory.SERVER,
        )
        await self._close_socket_of(attempt, go_on=False)

    async def _on_stall(self, attempt: Attempt, waited_s: float) -> None:
        """Audio flowed, then Gradium went silent on words it owes: a lost request."""
        ending = self._host.ending
        action = (
            "the pipeline is ending: the answer is cut short"
            if ending
            else "re-sending what was not heard on a fresh socket"
        )
        await self._host.report(
            self,
            f"Gradium stopped sending audio for request {attempt.req_id} mid-answer "
            f"({waited_s:.1f} s; limit stall_timeout_s); {action}",
            ErrorCategory.SERVER,
        )
        await self._close_socket_of(attempt, go_on=not ending)

    async def _close_socket_of(self, attempt: Attempt, *, go_on: bool) -> None:
        """Fail an attempt Gradium went silent on, and close its socket.

        Closing the socket is the only way to end the request on Gradium's side; the other
        requests it carried go on elsewhere.

        Args:
            attempt: The attempt.
            go_on: Continue this answer on a new attempt (else it is cut here).
        """
        attempt.state = AttemptState.FAILED
        sock = attempt.socket
        others = [a for a in sock.requests.values() if a is not self and a.carried_by(sock)]
        self._sockets.close_soon(sock)
        if go_on:
            await self.continue_or_cut()
        else:
            await self._cut(attempt)
        for other in others:
            if other.fail():
                await other.continue_or_cut()

    # ------------------------------------------------------------------ the timer

    async def _watch(self) -> None:
        """Keep its audio context open, speak what is held, cut it when audio is late.

        Speaks what is held when the LLM goes quiet or the audio received runs low. Runs while
        the answer has an attempt. Pipecat closes an audio context after
        ``stop_frame_timeout_s`` without an item; a cold start, an LLM pause or a continuation's
        reconnect can take longer. One task per answer that wakes at its next deadline only, so
        a fast token stream costs nothing here.
        """
        config = self._config
        quiet_flushed_for: float | None = None  # the last_token_at a quiet flush was sent for
        low_flushed_for: tuple[int, float] | None = None  # the state a low-buffer flush was for
        while (attempt := self.attempt) is not None:
            now = time.monotonic()
            wake = now + config.keepalive_s
            # While the pipeline ends, nothing is waited for longer than a stall.
            patience = (
                config.tuning.stall_timeout_s
                if self._host.ending
                else config.tuning.first_audio_timeout_s
            )
            stalled = attempt.stalled_since()
            if stalled is not None:
                if now - stalled >= config.tuning.stall_timeout_s:
                    self._timer = None  # the fault path must not cancel this task
                    # A continuation has a timer of its own.
                    await self._on_stall(attempt, now - stalled)
                    return
                wake = min(wake, stalled + config.tuning.stall_timeout_s)
            owed = attempt.audio_owed_since()
            if owed is not None and stalled is None:
                waited = now - owed
                if waited >= patience:
                    self._timer = None  # the fault path must not cancel this task
                    await self._on_audio_overdue(attempt, waited)
                    return
                wake = min(wake, owed + patience)
            last = self.last_token_at
            if (
                self.kind is AnswerKind.LLM
                and not attempt.end_sent
                and last is not None
                and quiet_flushed_for != last
            ):
                due = last + config.quiet_flush_s
                if now >= due:
                    await self._host.speak_held(self)
                    quiet_flushed_for = last
                else:
                    wake = min(wake, due)
            due = self._low_buffer_flush_due(attempt)
            # Once per state of the attempt (text sent, audio received): a flush with nothing
            # held changes neither, and is not asked for again until one of them moves (new
            # text, or the flushed words' audio), which nothing here is told of: look again soon.
            state = (len(attempt.texts), attempt.audio_s)
            if due is not None:
                if state == low_flushed_for:
                    wake = min(wake, now + AUDIO_PAUSE_S)
                elif now >= due:
                    # The next phrase is late: speak the words held for it now rather than
                    # let the listener hear a gap while they wait.
                    await self._host.speak_held(self)
                    low_flushed_for = state
                    wake = min(wake, now + AUDIO_PAUSE_S)
                else:
                    wake = min(wake, due)
            self._host.keep_alive(self)
            await self._sleep_until(wake)
        self._timer = None

    async def _sleep_until(self, wake: float) -> None:
        """The timer's sleep, which :meth:`_wake_timer_for_low_buffer` may end early."""
        wakes = self._timer_wakes = asyncio.Event()
        self._timer_wake_at = wake
        handle = asyncio.get_running_loop().call_later(
            max(wake - time.monotonic(), 0.001), wakes.set
        )
        try:
            await wakes.wait()
        finally:
            handle.cancel()
            self._timer_wakes = None

    def _wake_timer_for_low_buffer(self, attempt: Attempt) -> None:
        """Audio arrived: if that brings the low-buffer flush before the timer's wake, wake it."""
        wakes = self._timer_wakes
        if wakes is None:
            return
        due = self._low_buffer_flush_due(attempt)
        if due is not None and due < self._timer_wake_at:
            wakes.set()

    def _low_buffer_flush_due(self, attempt: Attempt) -> float | None:
        """When to speak the words held back (by Gradium or the phrases), lest audio run out.

        Playback is taken to have run without a break from the first audio, which puts its end
        no later than it is: a flush may come early, never late. While audio still streams in,
        Gradium is at work on words it has; only once it pauses is it waiting for more text.

        Returns:
            A ``time.monotonic()`` value, or None when no such flush applies.
        """
        margin = self._config.tuning.low_buffer_flush_s
        if (
            margin <= 0
            or self.kind is not AnswerKind.LLM
            or self.first_audio_at is None
            or attempt.last_audio_at is None
            or attempt.end_sent
        ):
            return None
        runs_out = self.first_audio_at + attempt.time_offset_s + attempt.audio_s
        return max(runs_out - margin, attempt.last_audio_at + AUDIO_PAUSE_S)

    async def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task():
            await self._host.cancel_task(timer)

    async def forget(self) -> None:
        """Its fault bookkeeping is over (its turn and audio ended): stop its timer."""
        await self._stop_timer()
        self.cut = False
        self.reported = False

    async def drop(self) -> None:
        """A barge-in: nothing more of it is set up, sent or played; its timers and audio go."""
        self._dropped = True
        self._batch.drop()
        await self._stop_timer()
        retry, self._retry_task = self._retry_task, None
        if retry is not None:
            await self._host.cancel_task(retry)
