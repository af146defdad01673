"""The low-buffer flush: when the next phrase is late, the words Gradium holds back are spoken.

Gradium reads a few words ahead (the emulator: ``lookahead_words=2``) and holds the last words
sent until more text, a ``<flush>`` or the end arrives. When the LLM's next phrase is late (a slow
model, a loaded event loop) but not late enough for the quiet flush, the listener would hear the
audio run out and wait. The service flushes once what it has received is about to run out.
"""

import pytest

from pipecat_gradium.emulator import GradiumEmulator
from pipecat_gradium.testing import start_pipeline

pytestmark = pytest.mark.timeout(30)

FIRST = "Here is what I found about your trip to the coast "
WORDS = FIRST.split()
SECOND = "and the weather along the way "


def flush_times(emu: GradiumEmulator) -> list[float]:
    """When each ``<flush>`` of the first request reached the emulator."""
    if not emu.stats.requests:
        return []
    req = emu.stats.requests[0]
    return [t for text, t in zip(req.texts, req.text_times, strict=True) if "<flush>" in text]


def assert_not_early(emu: GradiumEmulator, flushed_at: float) -> None:
    """The flush came once the audio it had was within the margin of running out (playback
    from the first chunk), and once Gradium had paused."""
    req = emu.stats.requests[0]
    before = [(t, d) for t, d in req.audio_chunks if t <= flushed_at]
    assert req.first_audio_at is not None
    assert flushed_at >= req.first_audio_at + sum(d for _, d in before) - 0.4 - 0.05
    assert flushed_at - before[-1][0] >= 0.1


async def test_words_held_back_are_flushed_before_the_audio_runs_out(
    emu: GradiumEmulator, make_tts
):
    # The quiet flush is far off, and so is the timer's keep-alive wake-up (half of Pipecat's
    # stop-frame timeout): only the low-buffer flush can bring out the held words in time.
    tts = make_tts(quiet_flush_s=20.0, low_buffer_flush_s=0.4, stop_frame_timeout_s=20.0)
    h = await start_pipeline(tts)
    try:
        await h.speak_answer(FIRST, end=False)
        await emu.stats.wait_for(lambda s: len(flush_times(emu)) == 2, timeout=10)
        await h.down.wait_for(lambda: h.words_out() == WORDS, timeout=10)
        assert_not_early(emu, flush_times(emu)[1])
        # The next phrase is late too: flushed again once its audio runs low.
        await h.speak_answer(SECOND, start=False, end=False)
        await emu.stats.wait_for(lambda s: len(flush_times(emu)) == 3, timeout=4)
        await h.down.wait_for(lambda: h.words_out() == WORDS + SECOND.split(), timeout=4)
        assert_not_early(emu, flush_times(emu)[2])
        # The LLM goes on: no flush without new text, and the answer ends whole.
        await h.speak_answer("", tokens=[" today", "."], start=False)
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=10)
    finally:
        await h.stop()
    assert len(flush_times(emu)) == 3
    assert h.words_out() == [*WORDS, *SECOND.split(), "today."]
    assert not h.errors()


async def test_text_arriving_in_time_needs_no_flush(emu: GradiumEmulator, make_tts):
    # The same answer with no pause: the held words go with the next phrase, as Gradium reads
    # ahead; the first phrase's flush is the only one.
    h = await start_pipeline(make_tts(quiet_flush_s=20.0, low_buffer_flush_s=0.4))
    try:
        await h.speak_answer(FIRST + "today.")
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=10)
    finally:
        await h.stop()
    assert len(flush_times(emu)) == 1
    assert h.words_out() == [*WORDS, "today."]
