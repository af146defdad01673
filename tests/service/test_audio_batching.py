"""Audio batching: fewer frames while Gradium is far ahead of playback, nothing reordered."""

import pytest
from pipecat.frames.frames import TTSAudioRawFrame, TTSStoppedFrame, TTSTextFrame

from pipecat_gradium.emulator import GradiumEmulator
from pipecat_gradium.testing import start_pipeline

LONG = (
    "Let me walk you through the whole plan. First we pack the car early in the morning, "
    "then we drive north along the coast for about three hours, stopping twice for coffee."
)


async def test_batched_frames_carry_the_same_audio_and_words_in_order(
    emu: GradiumEmulator, make_tts
):
    results = {}
    for i, batch_s in enumerate((0.0, 0.24)):
        h = await start_pipeline(make_tts(audio_batch_s=batch_s))
        try:
            await h.speak_answer(LONG)
            await h.down.wait_for(lambda h=h: bool(h.down.frames(TTSStoppedFrame)), timeout=15)
        finally:
            await h.stop()
        frames = h.down.frames((TTSAudioRawFrame, TTSTextFrame))
        results[batch_s] = frames
        assert [f.text for f in frames if isinstance(f, TTSTextFrame)] == LONG.split()
        assert not h.errors()
        # Every second Gradium sent, and nothing else, left the service.
        assert h.audio_seconds() == pytest.approx(emu.stats.requests[i].audio_s, abs=1e-6)
    plain = [f for f in results[0.0] if isinstance(f, TTSAudioRawFrame)]
    batched = [f for f in results[0.24] if isinstance(f, TTSAudioRawFrame)]
    chunks = sum(len(r.audio_chunks) for r in emu.stats.requests[:1])
    assert len(plain) == chunks  # every 80 ms chunk its own frame
    assert len(batched) < len(plain) * 0.6  # 20x real time: most chunks merged
    # A word reaches the context only after its audio has left the service, batched or not.
    for i, frames in enumerate(results.values()):
        stops = [stop for _, _, stop in emu.stats.requests[i].words]
        seen_s, word_at = 0.0, []
        for f in frames:
            if isinstance(f, TTSAudioRawFrame):
                seen_s += len(f.audio) / 2 / f.sample_rate
            else:
                word_at.append(seen_s)
        assert len(word_at) == len(stops)
        assert all(at >= stop - 1e-6 for at, stop in zip(word_at, stops, strict=True))
