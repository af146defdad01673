"""The listener of the benchmarks (``measure.silences``): plays from the first frame, waits when late.

Used by ``benchmarks.slow_llm`` (every wait) and ``benchmarks.faults`` (the longest).
"""

from benchmarks.measure import silences


def test_audio_on_time_has_no_silence():
    assert silences([(0.0, 0.5), (0.4, 0.5), (0.9, 0.5)]) == []


def test_a_late_frame_is_a_wait_and_playback_resumes_from_it():
    # 0.5 s plays until 0.5; the next frame comes at 0.8: a 0.3 s wait, then it plays to 1.3,
    # so a frame at 1.2 is on time and one at 2.0 waits 0.7 s.
    waits = silences([(0.0, 0.5), (0.8, 0.5), (1.2, 0.0), (2.0, 0.1)])
    assert [round(w, 3) for w in waits] == [0.3, 0.7]


def test_no_frames_no_silence():
    assert silences([]) == []
