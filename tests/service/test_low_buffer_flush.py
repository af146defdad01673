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


def flush_times(emu: GradiumEmulator) -> list[float]:
    """When each ``<flush>`` of the first request reached the emulator."""
    if not emu.stats.requests:
        return []
    req = emu.stats.requests[0]
    return [t for text, t in zip(req.texts, req.text_times, strict=True) if "<flush>" in text]


async def test_words_held_back_are_flushed_before_the_audio_runs_out(
    emu: GradiumEmulator, make_tts
):
    # The quiet flush is far off: only the low-buffer flush can bring out the held words.
    h = await start_pipeline(make_tts(quiet_flush_s=20.0, low_buffer_flush_s=0.4))
    try:
        await h.speak_answer(FIRST, end=False)
        await emu.stats.wait_for(lambda s: len(flush_times(emu)) == 2, timeout=10)
        await h.down.wait_for(lambda: h.words_out() == WORDS, timeout=10)
        req = emu.stats.requests[0]
        flushed_at = flush_times(emu)[1]
        before = [(t, d) for t, d in req.audio_chunks if t <= flushed_at]
        audio_before = sum(d for _, d in before)
        # Not before the audio it had was within the margin of running out (playback from
        # the first chunk), and not before Gradium had paused.
        assert flushed_at >= req.first_audio_at + audio_before - 0.4 - 0.05
        assert flushed_at - before[-1][0] >= 0.1
        # The LLM goes on: no second flush without new text, and the answer ends whole.
        await h.speak_answer("", tokens=[" today", "."], start=False)
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=10)
    finally:
        await h.stop()
    assert len(flush_times(emu)) == 2
    assert h.words_out() == [*WORDS, "today."]
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
