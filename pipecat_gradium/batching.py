"""Fewer, larger audio frames while Gradium is well ahead of playback.

Gradium sends 80 ms chunks, usually faster than real time. Every frame costs the pipeline the
same (queues, observers, processors) whatever its length, so at 100+ sessions in one process
pushing each 80 ms chunk as its own frame is most of the CPU. While the audio already pushed
for a request reaches further ahead of real-time playback than ``lead_s``, chunks are held and
merged into frames of up to ``max_s``; the first chunks of an answer always go out at once, and
held audio goes out well before playback needs it (a timer covers a pause in generation).
"""

import time


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
