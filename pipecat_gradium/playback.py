"""Reading an audio context's queue in one event-loop turn per item, not three.

Pipecat's TTS base class plays an audio context by taking its items (audio frames, word
timestamps, the end marker) one at a time from an ``asyncio.Queue``, each take wrapped in
``asyncio.wait_for`` so a context that goes quiet ends after ``stop_frame_timeout_s``. On
Python < 3.12 Pipecat replaces ``asyncio.wait_for`` with the ``wait_for2`` package, which runs
every take as a task of its own: a new task per item, and about three turns of the event loop
before the item is in hand, even when it was already queued.

On a quiet host a turn takes microseconds. With a hundred or more calls in one process whose
LLM answers start together, a turn takes 100 ms or more, so an answer's 80 ms chunks are taken
slower than they arrive, and its audio reaches the transport later and later (measured at 160
sessions: the second phrase's audio 0.5 s late). :func:`next_context_item` takes the same items
with the same timeout rule (each keepalive restarts the wait) under ``asyncio.timeout``: no task,
one turn when the queue is empty, none when an item is waiting.
"""

import asyncio
from typing import Any, Final

from pipecat.utils.context.audio_context_manager import AudioContextManager

UNSUPPORTED: Final = object()
"""Returned when the manager is not laid out as in the Pipecat versions this was written for."""


async def next_context_item(manager: AudioContextManager, context_id: str, timeout_s: float) -> Any:
    """Take an audio context's next item, as ``AudioContextManager.get`` does, without a task.

    Args:
        manager: The service's audio context manager.
        context_id: The playing audio context.
        timeout_s: Seconds to wait for an item; each keepalive restarts the wait.

    Returns:
        The next item, ``None`` when the context ends or stays quiet ``timeout_s`` (as the base
        class treats a timeout), or :data:`UNSUPPORTED` when the manager's queues, its keepalive
        marker or this context's queue cannot be found (the caller then reads through Pipecat,
        which behaves as it always has, e.g. a ``KeyError`` for a context that is gone).
    """
    queues = getattr(manager, "_contexts", None)
    keepalive = getattr(manager, "_KEEPALIVE", None)
    if not isinstance(queues, dict) or keepalive is None:
        return UNSUPPORTED
    queue = queues.get(context_id)
    if not isinstance(queue, asyncio.Queue):
        return UNSUPPORTED
    try:
        while True:
            async with asyncio.timeout(timeout_s):
                item = await queue.get()
            if item is not keepalive:
                return item
    except TimeoutError:
        return None
