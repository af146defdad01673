"""Recovery from faults: continuation, slow starts, outages and failure accounting.

What users feel under a fault is decided here, not in the Pipecat glue:

* a request cut by a lost socket or a request error goes on as a *continuation* (a new
  ``client_req_id`` re-sending the unheard text), a bounded number of times per answer;
* a slow first audio is waited for up to a stated limit, the answer's audio context kept open
  meanwhile (Pipecat would otherwise close it after ``stop_frame_timeout_s``);
* connection failures are counted per answer that needed a socket, and while Gradium is
  unreachable a background prober retries with capped exponential back-off, so the service
  comes back by itself once Gradium answers again.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from loguru import logger
from pipecat.utils.errors import ErrorCategory
from websockets.exceptions import InvalidStatus

from pipecat_gradium.connection import GradiumSocket, TaskOwner
from pipecat_gradium.protocol import ServerError
from pipecat_gradium.requests import GradiumRequest

if TYPE_CHECKING:
    from pipecat_gradium.tts import GradiumStreamingTTSService

#: Requests per answer: the first, then continuations after a lost socket or request error.
MAX_ATTEMPTS = 3
#: Answers in a row that could not get a socket before the service reports itself unusable.
MAX_CONNECT_FAILURES = 3


def continuation_id(context_id: str, attempt: int) -> str:
    """The ``client_req_id`` of an answer's ``attempt``-th request: never reused in a call.

    Args:
        context_id: The answer's Pipecat context id.
        attempt: 1 for the first request, 2 for the first continuation...

    Returns:
        ``context_id`` itself, then ``<context_id>#2``, ``#3``...
    """
    return context_id if attempt == 1 else f"{context_id}#{attempt}"


def context_of(client_req_id: str) -> str:
    """The Pipecat context id a ``client_req_id`` speaks for (inverse of continuation_id)."""
    return client_req_id.partition("#")[0]


def mask_secrets(text: str, url: str) -> str:
    """Hide every query-string value of ``url`` (a key or token put there) inside ``text``.

    Args:
        text: An error message or log line that may quote the URL or its parts.
        url: The service's URL.

    Returns:
        ``text`` with each query value replaced by ``***``.
    """
    for _, value in parse_qsl(urlsplit(url).query, keep_blank_values=False):
        if len(value) >= 3:
            text = text.replace(value, "***")
    return text


@dataclass
class Backoff:
    """Capped exponential back-off between probes of an unreachable Gradium.

    Parameters:
        initial_s: The first wait.
        max_s: The longest wait (the bound on how late recovery is noticed).
        factor: Growth per failed probe.
    """

    initial_s: float = 0.5
    max_s: float = 5.0
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        """Yield the waits before each probe, forever."""
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_s)


class ConnectFailures:
    """Answers in a row that needed a socket and could not get one.

    The start-up connection does not count (no answer needed it); an answer counts once,
    however many of its phrases found no socket.
    """

    def __init__(self, limit: int = MAX_CONNECT_FAILURES):
        """Count up to ``limit``.

        Args:
            limit: Answers in a row after which the service reports itself unusable.
        """
        self.limit = limit
        self.count = 0
        self._last_context: str | None = None

    def record(self, context_id: str) -> bool:
        """Count an answer that could not get a socket.

        Args:
            context_id: The answer.

        Returns:
            Whether this answer was new (a second failure of one answer is not counted).
        """
        if context_id == self._last_context:
            return False
        self._last_context = context_id
        self.count += 1
        return True

    @property
    def exhausted(self) -> bool:
        """Whether ``limit`` answers in a row failed."""
        return self.count >= self.limit

    def reset(self) -> None:
        """A socket was obtained: the run of failures is over."""
        self.count = 0
        self._last_context = None


class OutageProber:
    """Probes Gradium in the background with capped exponential back-off while it is down.

    An answer that needs a socket during an outage makes one attempt through
    :meth:`try_now` (shared with a probe already in flight), so it fails at once or speaks; the
    prober keeps going after the service has reported itself unusable, and calls
    ``on_recovered`` once a connection succeeds.
    """

    def __init__(
        self,
        *,
        owner: TaskOwner,
        probe: Callable[[], Awaitable[None]],
        on_recovered: Callable[[], Awaitable[None]],
        backoff: Backoff,
    ):
        """Create an idle prober.

        Args:
            owner: Runs and cancels the probing task (the service).
            probe: One connection attempt; raises on failure.
            on_recovered: Called once when a probe (or an answer's attempt) succeeds.
            backoff: The waits between probes.
        """
        self._owner = owner
        self._probe = probe
        self._on_recovered = on_recovered
        self._backoff = backoff
        self._down = False
        self._abandoned = False
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self.down_since: float | None = None
        self.last_error: Exception | None = None
        self.probes = 0

    @property
    def down(self) -> bool:
        """Whether Gradium is considered unreachable."""
        return self._down

    def start(self) -> None:
        """Gradium could not be reached: probe in the background until it answers."""
        if self._abandoned:
            return
        if not self._down:
            self._down = True
            self.down_since = time.monotonic()
        if self._task is None or self._task.done():
            self._task = self._owner.create_task(self._run(), name="gradium-outage-probe")

    async def try_now(self) -> None:
        """One attempt now, for an answer that needs a socket (or the result of one in flight).

        Raises:
            Exception: Why Gradium is still unreachable.
        """
        if self._down and not await self._attempt():
            raise self.last_error or ConnectionError("Gradium is unreachable")

    def abandon(self) -> None:
        """Stop probing for good (a rejected key: retrying cannot help)."""
        self._abandoned = True
        self._down = False
        if self._task and self._task is not asyncio.current_task():
            self._task.cancel()

    async def stop(self) -> None:
        """Stop the probing task (pipeline stop or cancel)."""
        if self._task and self._task is not asyncio.current_task():
            await self._owner.cancel_task(self._task)
        self._task = None

    async def _run(self) -> None:
        for delay in self._backoff.delays():
            await asyncio.sleep(delay)
            if not self._down or self._abandoned or await self._attempt():
                return

    async def _attempt(self) -> bool:
        was_probes = self.probes
        async with self._lock:
            if not self._down or self._abandoned:
                return not self._down
            if self.probes != was_probes:
                return False  # an attempt finished while this one waited: same outcome
            self.probes += 1
            try:
                await self._probe()
            except Exception as e:
                self.last_error = e
                logger.debug(f"Gradium: still unreachable (probe {self.probes}): {e}")
                return False
            if self._abandoned:
                return False
            down_s = time.monotonic() - (self.down_since or time.monotonic())
            self._down = False
            self.down_since = None
        logger.info(f"Gradium reachable again after {down_s:.1f} s ({self.probes} attempts)")
        self.probes = 0
        await self._on_recovered()
        return True


class AnswerWatch:
    """Keeps one answer's audio context open while Gradium owes it audio, within a limit.

    Pipecat closes an audio context after ``stop_frame_timeout_s`` without an item; a cold
    start, an LLM pause or a continuation's reconnect can take longer. The watch refreshes the
    context for as long as the answer has a live request, and calls ``on_overdue`` when audio
    owed (text flushed or ended) has not come within ``limit_s``.
    """

    def __init__(
        self,
        *,
        owner: TaskOwner,
        current: Callable[[], GradiumRequest | None],
        keepalive: Callable[[], None],
        on_overdue: Callable[[GradiumRequest, float], Awaitable[None]],
        keepalive_s: float,
        limit_s: float,
    ):
        """Start watching.

        Args:
            owner: Runs and cancels the task (the service).
            current: The answer's live request, or None once the answer is over.
            keepalive: Refreshes the answer's audio context.
            on_overdue: Called once with the request and the seconds waited.
            keepalive_s: Interval between refreshes (under ``stop_frame_timeout_s``).
            limit_s: Longest wait for owed audio.
        """
        self._current = current
        self._keepalive = keepalive
        self._on_overdue = on_overdue
        self._keepalive_s = keepalive_s
        self._limit_s = limit_s
        self._owner = owner
        self.task = owner.create_task(self._run(), name="gradium-answer-watch")

    async def stop(self) -> None:
        """Stop watching."""
        if self.task is not asyncio.current_task():
            await self._owner.cancel_task(self.task)

    async def _run(self) -> None:
        while (req := self._current()) is not None:
            now = time.monotonic()
            wake = now + self._keepalive_s
            owed = req.audio_owed_since()
            if owed is not None:
                waited = now - owed
                if waited >= self._limit_s:
                    await self._on_overdue(req, waited)
                    return
                wake = min(wake, owed + self._limit_s)
            self._keepalive()
            await asyncio.sleep(max(wake - time.monotonic(), 0.001))


class Recovery:
    """The service's fault paths: what each fault costs the user, and how the answer goes on.

    The service owns the Pipecat side (frames, audio contexts, requests); this class decides,
    per fault, whether an answer is continued or cut, reports each fault once, keeps answers'
    audio contexts open while audio is owed, and probes Gradium while it is unreachable.

    Attributes:
        dead: Answers that can get no more request (cut, or no socket): their context keeps the
            words heard, and none of their later phrases opens a request.
        reported: Answers already given an error (Pipecat's "completed with no audio" would
            repeat it).
        auth_failed: Gradium rejected the key: the only permanent fault.
    """

    def __init__(
        self,
        service: "GradiumStreamingTTSService",
        *,
        url: str,
        first_audio_timeout_s: float,
        keepalive_s: float,
        backoff: Backoff,
    ):
        """Create the recovery state of one service.

        Args:
            service: The service whose answers this recovers.
            url: Gradium's URL (a key in its query string is masked in every message).
            first_audio_timeout_s: Longest wait for audio Gradium owes.
            keepalive_s: Interval between refreshes of an answer's audio context.
            backoff: Waits between probes of an unreachable Gradium.
        """
        self._svc = service
        self._url = url
        self._first_audio_timeout_s = first_audio_timeout_s
        self._keepalive_s = keepalive_s
        self.failures = ConnectFailures()
        self.prober = OutageProber(
            owner=service, probe=self._probe, on_recovered=self._on_recovered, backoff=backoff
        )
        self.dead: set[str] = set()
        self.reported: set[str] = set()
        self.auth_failed = False
        self._watches: dict[str, AnswerWatch] = {}

    # ------------------------------------------------------------------ bookkeeping

    def may_open(self, context_id: str) -> bool:
        """Whether a request may be opened for this answer (not cut, key not rejected)."""
        return not self.auth_failed and context_id not in self.dead

    async def get_socket(self, context_id: str, *, interruptible: bool, resume: bool):
        """A socket for a new request, or None when Gradium cannot be reached (reported).

        One attempt per answer, shared with a probe in flight during an outage.

        Args:
            context_id: The answer.
            interruptible: The kind of speech.
            resume: Whether the request continues a cut one (its fault is already reported).

        Returns:
            The socket, or None.
        """
        pool = self._svc._pool
        assert pool is not None
        try:
            await self.prober.try_now()
            sock = await pool.acquire(interruptible=interruptible)
        except Exception as e:
            await self._answer_unreachable(context_id, e, reported=resume)
            return None
        self.failures.reset()
        return sock

    def watch(self, context_id: str) -> None:
        """Keep the answer's audio context open while Gradium owes it audio, within the limit."""
        if context_id in self._watches:
            return
        svc = self._svc
        self._watches[context_id] = AnswerWatch(
            owner=svc,
            current=lambda: svc._requests.get(context_id),
            keepalive=lambda: svc._refresh_audio_context(context_id),
            on_overdue=self._on_audio_overdue,
            keepalive_s=self._keepalive_s,
            limit_s=self._first_audio_timeout_s,
        )

    async def unwatch(self, context_id: str) -> None:
        """The answer has no live request any more."""
        watch = self._watches.pop(context_id, None)
        if watch:
            await watch.stop()

    async def forget(self, context_id: str) -> None:
        """The answer is over (interrupted, or its turn and audio ended)."""
        await self.unwatch(context_id)
        self.dead.discard(context_id)
        self.reported.discard(context_id)

    async def stop(self) -> None:
        """Stop probing and watching (pipeline stop or cancel)."""
        await self.prober.stop()
        for context_id in list(self._watches):
            await self.unwatch(context_id)

    # ------------------------------------------------------------------ reporting

    async def push_fault(
        self,
        message: str,
        category: ErrorCategory,
        *,
        context_id: str | None = None,
        exception: Exception | None = None,
        permanent: bool = False,
    ) -> None:
        """One ErrorFrame per fault, with any key in the URL masked."""
        if context_id:
            self.reported.add(context_id)
        await self._svc.push_error(
            error_msg=mask_secrets(message, self._url),
            exception=exception,
            category=category,
            force_treat_as_permanent=permanent,
        )

    # ------------------------------------------------------------------ lost requests

    async def on_socket_error(self, sock: GradiumSocket, msg: ServerError) -> None:
        """An error Gradium sent for a whole socket (no ``client_req_id``)."""
        if msg.is_auth:
            await self.fail_auth(msg.message)
            return
        sock.error_reported = True
        await self.push_fault(
            f"{self._svc}: Gradium error on {sock}: {msg.message} (code {msg.code})",
            ErrorCategory.SERVER,
        )

    async def on_request_error(self, req: GradiumRequest, msg: ServerError) -> None:
        """Gradium ended one request with an error: continue it like a lost socket."""
        req.failed = True
        if msg.code == 1008:
            # Gradium refused what was sent: sending it again would fail again.
            await self.push_fault(
                f"{self._svc}: Gradium rejected request {req.req_id}: {msg.message}",
                ErrorCategory.INVALID_REQUEST,
                context_id=req.context_id,
            )
            await self.cut(req)
            return
        # The socket may be closing after the error (it does when not multiplexed): it takes
        # no new request, and its loss would be this same fault, already reported.
        req.socket.error_reported = True
        if self._svc._pool:
            self._svc._pool.retire(req.socket)
        can_continue = self._can_continue(req)
        action = "re-sending what was not heard" if can_continue else "the answer is cut short"
        await self.push_fault(
            f"{self._svc}: Gradium error for request {req.req_id}: {msg.message} "
            f"(code {msg.code}); {action}",
            ErrorCategory.SERVER,
            context_id=req.context_id,
        )
        if not (can_continue and await self._continue(req)):
            await self.cut(req)

    async def on_socket_lost(self, sock: GradiumSocket, reason: str) -> None:
        """A socket died under its requests: continue each answer still playing on a new one.

        The continuation re-sends the text whose words were not heard, into the same audio
        context, so the answer keeps one Started/Stopped pair and loses no words.
        """
        # A failed request is already being continued or cut by the fault that failed it.
        lost = [r for r in self._svc._requests_on(sock) if not r.failed]
        if not lost:
            return
        for req in lost:
            req.failed = True
        resumable = [r for r in lost if self._can_continue(r)]
        if not sock.error_reported and not self.auth_failed:
            action = (
                f"re-sending what was not heard on a new socket ({len(resumable)} request(s))"
                if resumable
                else "those answers are cut short"
            )
            await self.push_fault(
                f"{self._svc}: Gradium socket {reason} during {len(lost)} request(s); {action}",
                ErrorCategory.CONNECTIVITY,
            )
            self.reported.update(r.context_id for r in lost)
        for req in lost:
            if not (req in resumable and await self._continue(req)):
                await self.cut(req)

    def _can_continue(self, req: GradiumRequest) -> bool:
        return (
            not self.auth_failed
            and req.attempt < MAX_ATTEMPTS
            and self._svc.audio_context_available(req.context_id)
        )

    async def _continue(self, old: GradiumRequest) -> bool:
        """Open the continuation of a cut request and re-send the text not heard.

        ``old`` stays registered until the continuation is set up: text sent to it meanwhile
        is kept in ``old.texts`` (it is failed, so nothing goes on the wire) and is part of
        what is re-sent.
        """
        new = await self._svc._open_request(old.context_id, resume=old)
        if new is None:
            return False
        logger.info(f"{self._svc}: continuing {old.req_id} as {new.req_id} on {new.socket}")
        if self._svc._pool:
            self._svc._pool.release(old.socket, old.req_id)
        await self._svc._resend(new, old.unspoken_text(), ended=old.ended)
        return True

    async def cut(self, req: GradiumRequest) -> None:
        """End an answer that cannot go on: its context keeps only the words heard."""
        req.done = True
        self.dead.add(req.context_id)
        await self._svc._finish_request(req)

    async def _on_audio_overdue(self, req: GradiumRequest, waited_s: float) -> None:
        """Gradium owed audio longer than the limit: end the request and the answer."""
        first = req.last_audio_at is None
        await self.push_fault(
            f"{self._svc}: Gradium sent no audio for request {req.req_id} in {waited_s:.1f} s "
            f"({'first audio' if first else 'after the end of the text'}; limit "
            "first_audio_timeout_s); the answer is cut short and the next one goes on a "
            "fresh socket",
            ErrorCategory.SERVER,
            context_id=req.context_id,
        )
        req.failed = True
        sock = req.socket
        others = [r for r in self._svc._requests_on(sock) if r is not req]
        if self._svc._pool:
            # Closing the socket is the only way to end the request on Gradium's side; the
            # other requests it carried go on elsewhere.
            self._svc._pool.close_soon(sock)
        await self.cut(req)
        for other in others:
            other.failed = True
            if not (self._can_continue(other) and await self._continue(other)):
                await self.cut(other)

    # ------------------------------------------------------------------ unreachable

    async def _answer_unreachable(self, context_id: str, e: Exception, *, reported: bool) -> None:
        """No socket for an answer: it ends now, with one error, and Gradium is probed."""
        self.dead.add(context_id)
        if self._svc.audio_context_available(context_id):
            await self._svc.remove_audio_context(context_id)
        if reported:
            # A continuation: the fault that cut the request was already reported.
            self.failures.record(context_id)
            self.prober.start()
            return
        await self.connect_failed(e, context_id=context_id)

    async def connect_failed(self, e: Exception, *, context_id: str | None) -> None:
        """Report a failed connection once; count it when an answer needed it; probe.

        Args:
            e: What the connection attempt raised.
            context_id: The answer that needed the socket (None: the start-up connection).
        """
        if isinstance(e, InvalidStatus) and e.response.status_code in (401, 403):
            await self.fail_auth(f"HTTP {e.response.status_code}")
            return
        self.prober.start()
        if context_id is None:
            tail = "; probing in the background"
            give_up = False
        else:
            counted = self.failures.record(context_id)
            give_up = counted and self.failures.exhausted and self._svc.is_usable
            tail = (
                f"; {self.failures.count} answers in a row could not be spoken: the service "
                "reports itself unusable, and returns by itself when Gradium answers again"
                if give_up
                else "; this answer is not spoken, Gradium is probed in the background"
            )
        await self.push_fault(
            f"{self._svc}: cannot connect to Gradium at {self._url}: {e}{tail}",
            ErrorCategory.CONNECTIVITY,
            context_id=context_id,
            exception=e,
            # Unusable now, so Pipecat's ServiceSwitcher can fail over; probing goes on.
            permanent=give_up,
        )
        await self._svc._call_event_handler("on_connection_error", mask_secrets(str(e), self._url))

    async def _probe(self) -> None:
        """One connection attempt while Gradium is unreachable (raises on failure)."""
        pool = self._svc._pool
        assert pool is not None
        try:
            await pool.acquire(interruptible=True)
        except InvalidStatus as e:
            if e.response.status_code in (401, 403):
                await self.fail_auth(f"HTTP {e.response.status_code}")
            raise

    async def _on_recovered(self) -> None:
        """Gradium answers again: back in service, the next answer speaks."""
        self.failures.reset()
        logger.info(f"{self._svc}: Gradium is reachable again; the service is back in service")
        await self._svc.set_usable(True)
        await self._svc._call_event_handler("on_connected")

    async def fail_auth(self, detail: str) -> None:
        """A rejected key is permanent: stop connecting and say which variable to fix."""
        if self.auth_failed:
            return
        self.auth_failed = True
        self.prober.abandon()
        self._svc._run_pool_stop()
        await self.push_fault(
            f"{self._svc}: Gradium rejected the API key ({detail}). Check GRADIUM_API_KEY "
            "(or api_key=); the service will not reconnect.",
            ErrorCategory.AUTHENTICATION,
            permanent=True,
        )
