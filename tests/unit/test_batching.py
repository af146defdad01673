"""AudioBatch: which chunks go out at once and which are merged, as pure bookkeeping."""

from pipecat_gradium.batching import AudioBatch

CHUNK = b"\x01\x00" * 1920  # 80 ms at 24 kHz


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


def test_a_prebuffer_gathers_the_first_frame_then_playback_starts_with_it():
    batch = AudioBatch(bytes_per_s=48000, max_s=0.24, lead_s=0.5, prebuffer_s=0.24)
    assert batch.prebuffering
    assert batch.add(CHUNK, 100.0) is None
    # Generation may pause: the gathered audio goes once the prebuffer's time has passed.
    assert batch.deadline == 100.0 + 0.24
    assert batch.add(CHUNK, 100.04) is None
    assert batch.add(CHUNK, 100.08) == CHUNK * 3  # 240 ms in hand: the first frame
    assert not batch.prebuffering and not batch.held
    # Playback started at that frame (100.08), 0.24 s ahead: the next chunks go at once.
    assert batch.add(CHUNK, 100.12) == CHUNK
    assert batch.deadline is None


def test_a_prebuffer_cut_short_by_a_flush_starts_playback_at_the_flush():
    batch = AudioBatch(bytes_per_s=48000, max_s=0.24, lead_s=0.5, prebuffer_s=1.0)
    assert batch.add(CHUNK, 100.0) is None
    assert batch.take(100.5) == CHUNK  # e.g. the first word's audio is complete
    assert not batch.prebuffering
    # 0.08 s pushed at 100.5: at 100.5 the next chunk is 0.08 s ahead, not held.
    assert batch.add(CHUNK, 100.5) == CHUNK
    # Without a prebuffer nothing is gathered.
    plain = AudioBatch(bytes_per_s=48000, max_s=0.24, prebuffer_s=0.0)
    assert not plain.prebuffering and plain.add(CHUNK, 100.0) == CHUNK
