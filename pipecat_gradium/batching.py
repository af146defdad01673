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


class AudioBatch:
    """One request's audio: pushed at once while playback is close, merged while it is far.

    Pure bookkeeping (no I/O, no timers): the caller pushes what :meth:`add` and :meth:`take`
    return and arms a timer for :attr:`deadline`.
    """

    def __init__(self, *, bytes_per_s: float, max_s: float = 0.24, lead_s: float = 0.5):
        """Create the batch for one request.

        Args:
            bytes_per_s: Bytes of PCM per second of audio (rate x 2 for 16-bit mono).
            max_s: Longest frame built by merging chunks; 0 turns merging off.
            lead_s: Merge only while the audio pushed reaches at least this far past now.
        """
        self._bytes_per_s = bytes_per_s
        self._max_bytes = int(max_s * bytes_per_s)
        self._lead_s = lead_s
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._started_at: float | None = None
        self._pushed_s = 0.0

    @property
    def held(self) -> bool:
        """Whether audio is held."""
        return bool(self._held)

    @property
    def deadline(self) -> float | None:
        """When held audio must be pushed (monotonic seconds), or None if nothing is held.

        Half the lead before playback would reach it, so a held frame never makes a gap.
        """
        if not self._held or self._started_at is None:
            return None
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

    def take(self) -> bytes:
        """Everything held, as one frame (empty when nothing is held).

        Returns:
            The held audio.
        """
        pcm = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        self._pushed_s += len(pcm) / self._bytes_per_s
        return pcm


class AudioBatcher:
    """The service's :class:`AudioBatch` per request, and the timers that empty them in time.

    The service pushes every chunk through :meth:`add`, empties a request's batch with
    :meth:`flush` before anything that must follow its audio (its words, its end, a
    continuation on another socket), and discards it with :meth:`drop` at a barge-in.
    """

    def __init__(
        self,
        push: Callable[[Any, bytes], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, None]], Any],
        *,
        max_s: float = 0.4,
        lead_s: float = 0.5,
    ):
        """Create the batcher.

        Args:
            push: Pushes one frame of a request's audio.
            spawn: Runs a coroutine as a task (the service's ``create_task``).
            max_s: Longest merged frame; 0 pushes every chunk as it arrives.
            lead_s: Merge only while the audio pushed reaches this far past now.
        """
        self._push = push
        self._spawn = spawn
        self._max_s = max_s
        self._lead_s = lead_s
        self._batches: dict[int, tuple[Any, AudioBatch]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    async def add(self, req: Any, pcm: bytes, bytes_per_s: float) -> None:
        """Push a request's chunk now, or hold it to merge with the next ones.

        Args:
            req: The request (any object; its identity keys the batch).
            pcm: The chunk.
            bytes_per_s: Bytes of PCM per second of audio.
        """
        if not self._max_s:
            await self._push(req, pcm)
            return
        entry = self._batches.get(id(req))
        if entry is None:
            batch = AudioBatch(bytes_per_s=bytes_per_s, max_s=self._max_s, lead_s=self._lead_s)
            self._batches[id(req)] = (req, batch)
        else:
            batch = entry[1]
        out = batch.add(pcm)
        if out:
            await self._push(req, out)
        deadline = batch.deadline
        if deadline is not None and id(req) not in self._timers:
            # Generation may pause: held audio goes out before playback needs it.
            self._timers[id(req)] = asyncio.get_running_loop().call_at(
                deadline, lambda: self._spawn(self.flush(req))
            )

    async def flush(self, req: Any) -> None:
        """Push whatever the request's batch holds.

        Args:
            req: The request.
        """
        timer = self._timers.pop(id(req), None)
        if timer:
            timer.cancel()
        entry = self._batches.get(id(req))
        if entry is not None and entry[1].held:
            await self._push(req, entry[1].take())

    def drop(self, req: Any) -> None:
        """Forget the request's batch, held audio included (a barge-in, its end).

        Args:
            req: The request.
        """
        timer = self._timers.pop(id(req), None)
        if timer:
            timer.cancel()
        self._batches.pop(id(req), None)

    def clear(self) -> None:
        """Forget every batch and cancel every timer."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._batches.clear()
