"""Audio batching: fewer frames while Gradium is far ahead of playback, nothing reordered."""

import pytest
from pipecat.frames.frames import TTSAudioRawFrame, TTSStoppedFrame, TTSTextFrame

from pipecat_gradium.batching import AudioBatch
from pipecat_gradium.emulator import GradiumEmulator
from pipecat_gradium.testing import start_pipeline

CHUNK = b"\x01\x00" * 1920  # 80 ms at 24 kHz
LONG = (
    "Let me walk you through the whole plan. First we pack the car early in the morning, "
    "then we drive north along the coast for about three hours, stopping twice for coffee."
)


def test_first_chunks_go_at_once_then_merge_while_far_ahead():
    batch = AudioBatch(bytes_per_s=48000, max_s=0.24, lead_s=0.5)
    now = 100.0
    out = [batch.add(CHUNK, now) for _ in range(7)]  # all arrive at once: 0.56 s ahead after 7
    assert out[:7] == [CHUNK] * 7 and not batch.held
    assert batch.add(CHUNK, now) is None and batch.held  # 0.56 s ahead: held
    deadline = batch.deadline
    # Held audio would play at now + 0.56 s; it must go out a quarter-second before that.
    assert deadline is not None and deadline == now + 0.56 - 0.25
    assert batch.add(CHUNK, now) is None
    assert batch.add(CHUNK, now) == CHUNK * 3  # 240 ms: one frame
    assert batch.add(CHUNK, now) is None
    assert batch.take() == CHUNK and not batch.held and batch.deadline is None


def test_close_to_playback_nothing_is_held_and_zero_turns_merging_off():
    batch = AudioBatch(bytes_per_s=48000, max_s=0.24, lead_s=0.5)
    # Chunks arriving in real time: never far enough ahead to hold.
    assert all(batch.add(CHUNK, 100.0 + 0.08 * i) == CHUNK for i in range(50))
    off = AudioBatch(bytes_per_s=48000, max_s=0.0)
    assert all(off.add(CHUNK, 100.0) == CHUNK for _ in range(50))


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
