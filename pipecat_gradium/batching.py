"""Fewer, larger audio frames while Gradium is well ahead of playback.

Gradium sends 80 ms chunks, usually faster than real time. Every frame costs the pipeline the
same (queues, observers, processors) whatever its length, so at 100+ sessions in one process
pushing each 80 ms chunk as its own frame is most of the CPU. While the audio already pushed
for a request reaches further ahead of real-time playback than ``lead_s``, chunks are held and
merged into frames of up to ``max_s``; the first chunks of an answer always go out at once, and
held audio goes out well before playback needs it (a timer covers a pause in generation).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

#: Longest frame merged from Gradium's chunks while it is well ahead of playback.
DEFAULT_BATCH_S = 0.4


class AudioBatch:
    """One request's audio: pushed at once while playback is close, merged while it is far.

    Pure bookkeeping (no I/O, no timers): the caller pushes what :meth:`add` and :meth:`take`
    return and arms a timer for :attr:`deadline`.
    """

    def __init__(
        self,
        *,
        bytes_per_s: float,
        max_s: float = DEFAULT_BATCH_S,
        lead_s: float = 0.5,
        prebuffer_s: float = 0.0,
    ):
        """Create the batch for one request.

        Args:
            bytes_per_s: Bytes of PCM per second of audio (rate x 2 for 16-bit mono).
            max_s: Longest frame built by merging chunks; 0 turns merging off.
            lead_s: Merge only while the audio pushed reaches at least this far past now.
            prebuffer_s: Hold the first chunks until this much audio is in hand, and push it
                as the first frame (or once as long has passed since the first chunk); 0 pushes
                the first chunk at once.
        """
        self._bytes_per_s = bytes_per_s
        self._max_bytes = int(max_s * bytes_per_s)
        self._lead_s = lead_s
        self._prebuffer_s = prebuffer_s
        self._prebuffer_bytes = int(prebuffer_s * bytes_per_s)
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._first_held_at: float | None = None
        self._started_at: float | None = None
        self._pushed_s = 0.0

    @property
    def held(self) -> bool:
        """Whether audio is held."""
        return bool(self._held)

    @property
    def prebuffering(self) -> bool:
        """Whether the first frame is still being gathered (nothing pushed yet)."""
        return self._started_at is None and self._prebuffer_bytes > 0

    @property
    def deadline(self) -> float | None:
        """When held audio must be pushed (monotonic seconds), or None if nothing is held.

        Half the lead before playback would reach it, so a held frame never makes a gap; while
        the first frame is gathered, ``prebuffer_s`` after the first chunk (generation paused).
        """
        if not self._held:
            return None
        if self._started_at is None:
            assert self._first_held_at is not None
            return self._first_held_at + self._prebuffer_s
        return self._started_at + self._pushed_s - self._lead_s / 2

    def add(self, pcm: bytes, now: float | None = None) -> bytes | None:
        """Take a chunk; return the audio to push now (this chunk, maybe merged), or None.

        Args:
            pcm: The chunk.
            now: The current monotonic time (for tests).

        Returns:
            Bytes to push as one frame, or None when the chunk is held.
        """
        now = time.monotonic() if now is None else now
        if self.prebuffering:
            if self._first_held_at is None:
                self._first_held_at = now
            self._held.append(pcm)
            self._held_bytes += len(pcm)
            return self.take(now) if self._held_bytes >= self._prebuffer_bytes else None
        if self._started_at is None:
            self._started_at = now
        ahead = self._started_at + self._pushed_s - now
        if self._max_bytes and ahead > self._lead_s:
            self._held.append(pcm)
            self._held_bytes += len(pcm)
            if self._held_bytes + len(pcm) <= self._max_bytes:
                return None  # room for another chunk of this size: wait for it
            return self.take()
        if self._held:
            self._held.append(pcm)
            return self.take()
        self._pushed_s += len(pcm) / self._bytes_per_s
        return pcm

    def take(self, now: float | None = None) -> bytes:
        """Everything held, as one frame (empty when nothing is held).

        Args:
            now: The current monotonic time (for tests); playback starts with the first frame.

        Returns:
            The held audio.
        """
        if self._started_at is None and self._held:
            self._started_at = time.monotonic() if now is None else now
        pcm = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        self._pushed_s += len(pcm) / self._bytes_per_s
        return pcm


class AudioBatcher:
    """One answer's :class:`AudioBatch` and the timer that empties it in time.

    The answer pushes every chunk through :meth:`add`, empties the batch with :meth:`flush`
    before anything that must follow its audio (its words, its end, a continuation), and
    discards it with :meth:`drop` at a barge-in or between attempts (the next chunk starts a
    fresh batch).
    """

    def __init__(
        self,
        push: Callable[[bytes], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, None]], Any],
        *,
        max_s: float = DEFAULT_BATCH_S,
        lead_s: float = 0.5,
        prebuffer: Callable[[], float] | None = None,
        on_deadline: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ):
        """Create the batcher.

        Args:
            push: Pushes one frame of audio.
            spawn: Runs a coroutine as a task (the service's ``create_task``).
            max_s: Longest merged frame; 0 pushes every chunk as it arrives.
            lead_s: Merge only while the audio pushed reaches this far past now.
            prebuffer: Asked when a batch starts (a request's first chunk): the audio to gather
                before its first frame (see :class:`AudioBatch`); None gathers none.
            on_deadline: Run when held audio is due and no chunk came to push it: must push
                it (with :meth:`flush`) and may pass on what waited for it; None flushes only.
        """
        self._push = push
        self._spawn = spawn
        self._max_s = max_s
        self._lead_s = lead_s
        self._prebuffer = prebuffer
        self._on_deadline = on_deadline or self.flush
        self._batch: AudioBatch | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def add(self, pcm: bytes, bytes_per_s: float) -> None:
        """Push a chunk now, or hold it to merge with the next ones.

        Args:
            pcm: The chunk.
            bytes_per_s: Bytes of PCM per second of audio.
        """
        batch = self._batch
        if batch is None:
            prebuffer_s = self._prebuffer() if self._prebuffer else 0.0
            if not self._max_s and not prebuffer_s:
                await self._push(pcm)
                return
            batch = self._batch = AudioBatch(
                bytes_per_s=bytes_per_s,
                max_s=self._max_s,
                lead_s=self._lead_s,
                prebuffer_s=prebuffer_s,
            )
        out = batch.add(pcm)
        if out:
            await self._push(out)
        deadline = batch.deadline
        if deadline is not None and self._timer is None:
            # Generation may pause: held audio goes out before playback needs it.
            self._timer = asyncio.get_running_loop().call_at(
                deadline, lambda: self._spawn(self._on_deadline())
            )

    @property
    def prebuffering(self) -> bool:
        """Whether the first frame of the request is still being gathered."""
        return self._batch is not None and self._batch.prebuffering

    async def flush(self) -> None:
        """Push whatever the batch holds."""
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if self._batch is not None and self._batch.held:
            await self._push(self._batch.take())

    def drop(self) -> None:
        """Forget the batch, held audio included, and its timer."""
        if self._timer:
            self._timer.cancel()
            self._timer = None
        self._batch = None
