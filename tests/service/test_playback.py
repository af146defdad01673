"""Audio-context reads: Pipecat's rules (end marker, timeout, keepalive) in fewer loop turns."""

import asyncio
import sys
import time

import pytest
from pipecat.frames.frames import TTSAudioRawFrame, TTSStoppedFrame, TTSTextFrame
from pipecat.services.tts_service import WebsocketTTSService
from pipecat.utils.context.audio_context_manager import AudioContextManager

from pipecat_gradium import GradiumStreamingTTSService
from pipecat_gradium.emulator import GradiumEmulator
from pipecat_gradium.playback import UNSUPPORTED, next_context_item
from pipecat_gradium.testing import start_pipeline
from tests.service.test_audio_batching import LONG


async def _turns_until_read(read) -> tuple[int, object]:
    """Loop turns between an item being queued and a waiting reader having it."""
    manager = AudioContextManager()
    await manager.create("ctx")
    reader = asyncio.create_task(read(manager))
    for _ in range(3):  # the reader is now waiting on the empty queue
        await asyncio.sleep(0)
    assert not reader.done()
    await manager.append("ctx", "item")
    turns = 0
    while not reader.done():
        await asyncio.sleep(0)
        turns += 1
    return turns, reader.result()


PIPECAT_WAIT_FOR2 = pytest.mark.skipif(
    sys.version_info >= (3, 12),
    reason="Pipecat swaps in wait_for2 (a task per read) only on Python < 3.12",
)


@PIPECAT_WAIT_FOR2
async def test_item_in_one_turn_where_pipecat_takes_three():
    ours = await _turns_until_read(lambda m: next_context_item(m, "ctx", 5.0))
    pipecats = await _turns_until_read(lambda m: m.get("ctx", 5.0))
    assert ours == (1, "item")
    # The installed Pipecat reads through wait_for (wait_for2 on Python < 3.12): a task per
    # item. If this ever drops to 1, the override is no longer needed.
    assert pipecats[1] == "item" and pipecats[0] >= 2


async def test_end_marker_and_order_kept():
    manager = AudioContextManager()
    await manager.create("ctx")
    for item in ("a", "b", None):
        await manager.append("ctx", item)
    got = [await next_context_item(manager, "ctx", 1.0) for _ in range(3)]
    assert got == ["a", "b", None]


async def test_quiet_context_times_out_as_none():
    manager = AudioContextManager()
    await manager.create("ctx")
    began = time.monotonic()
    assert await next_context_item(manager, "ctx", 0.05) is None
    assert 0.04 <= time.monotonic() - began < 1.0


async def test_each_keepalive_restarts_the_wait():
    manager = AudioContextManager()
    await manager.create("ctx")
    loop = asyncio.get_running_loop()
    # Four keepalives 0.2 s apart, then the item: 1 s in all, twice the 0.5 s timeout.
    for k in range(1, 5):
        loop.call_later(0.2 * k, manager.keepalive, "ctx")
    loop.call_later(1.0, lambda: asyncio.ensure_future(manager.append("ctx", "late item")))
    assert await next_context_item(manager, "ctx", 0.5) == "late item"


@pytest.mark.parametrize("manager", [object(), AudioContextManager()])
async def test_unknown_layout_or_context_falls_back(manager):
    # No queues to read (another Pipecat layout), or no such context: Pipecat reads instead.
    assert await next_context_item(manager, "missing", 0.05) is UNSUPPORTED


async def test_installed_pipecat_is_supported():
    manager = AudioContextManager()
    await manager.create("ctx")
    await manager.append("ctx", "x")
    assert await next_context_item(manager, "ctx", 0.05) == "x"


class _PipecatReads(GradiumStreamingTTSService):
    """The service reading its audio contexts the way Pipecat's base class does."""

    async def _next_audio_context_item(self, context_id: str):
        return await WebsocketTTSService._next_audio_context_item(self, context_id)


async def _tasks_for_one_answer(tts) -> tuple[int, int]:
    """Queue reads run as tasks while ``tts`` speaks LONG, and the audio frames it pushed."""
    loop = asyncio.get_running_loop()
    created = 0

    def factory(loop, coro, **kwargs):
        nonlocal created
        created += getattr(coro, "__qualname__", "") == "Queue.get"
        return asyncio.Task(coro, loop=loop, **kwargs)

    h = await start_pipeline(tts)
    try:
        loop.set_task_factory(factory)
        try:
            await h.speak_answer(LONG)
            await h.down.wait_for(lambda: bool(h.down.frames(TTSStoppedFrame)), timeout=15)
        finally:
            loop.set_task_factory(None)
        assert not h.errors()
        assert [f.text for f in h.down.frames(TTSTextFrame)] == LONG.split()
        return created, len(h.down.frames(TTSAudioRawFrame))
    finally:
        await h.stop()


@PIPECAT_WAIT_FOR2
async def test_the_service_reads_its_audio_contexts_without_a_task_per_item(
    emu: GradiumEmulator, make_tts
):
    ours, frames = await _tasks_for_one_answer(make_tts(audio_batch_s=0))
    settings = {"api_key": "test-key", "url": emu.ws_url, "quiet_flush_s": 0.3}
    pipecats, same_frames = await _tasks_for_one_answer(
        _PipecatReads(
            **settings,
            tuning=GradiumStreamingTTSService.Tuning(audio_batch_s=0),
            stop_frame_timeout_s=1.0,
        )
    )
    assert frames == same_frames > 40  # every 80 ms chunk its own frame, in both runs
    # Pipecat's read runs a task for every item (audio frame, word, start/stop frames, end
    # marker); ours runs none.
    assert ours == 0
    assert pipecats >= frames + len(LONG.split())


async def test_a_pipecat_without_the_known_queues_is_read_its_own_way(
    emu: GradiumEmulator, make_tts, monkeypatch
):
    # A future Pipecat laid out differently: the service falls back to the base class's read.
    async def unsupported(*args):
        return UNSUPPORTED

    monkeypatch.setattr("pipecat_gradium.tts.next_context_item", unsupported)
    h = await start_pipeline(make_tts())
    try:
        await h.speak_answer(LONG)
        await h.down.wait_for(lambda: bool(h.down.frames(TTSStoppedFrame)), timeout=15)
        assert [f.text for f in h.down.frames(TTSTextFrame)] == LONG.split()
        assert not h.errors()
    finally:
        await h.stop()
