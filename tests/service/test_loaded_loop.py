"""A loaded event loop: the first phrase waits for more words, the first frame gathers audio."""

import asyncio
import time
from typing import Any

from pipecat.frames.frames import InterruptionFrame, TTSAudioRawFrame, TTSTextFrame

from pipecat_gradium.emulator import Fault, GradiumEmulator
from pipecat_gradium.loop_lag import (
    LATE_S,
    MANY_USERS,
    MILD_LATE_S,
    MIN_LATE_TICKS,
    MIN_MILD_TICKS,
    TICK_S,
    LoopLagMonitor,
)
from pipecat_gradium.testing import PipelineHarness, answer_requests, start_pipeline
from tests.conftest import FAST, build_service

ANSWER = "Sure, the forecast looks bright today with clear skies through the whole morning."


async def block_the_loop(monitor: LoopLagMonitor) -> None:
    """Make the loop really late, as a burst of LLM tokens in many pipelines would."""
    for _ in range(MIN_LATE_TICKS + 1):
        time.sleep(TICK_S + LATE_S + 0.02)  # blocks the loop: the monitor's timer wakes late
        await asyncio.sleep(0.01)  # the timer wakes (late) and is due again
    await asyncio.sleep(TICK_S * 2)  # let the timer observe the last late wake-up


async def speak(
    emu: GradiumEmulator, answer: str, *, loaded: bool, **options: Any
) -> PipelineHarness:
    """Speak one answer to its end, the loop made really late first if ``loaded``.

    Returns:
        The stopped harness, for its records.
    """
    h = await start_pipeline(build_service(emu, **options))
    try:
        if loaded:
            monitor = LoopLagMonitor.for_running_loop()
            await block_the_loop(monitor)
            assert monitor.loaded
        await h.speak_answer(answer, tokens_per_s=200)
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
    finally:
        await h.stop()
    return h


def audio_comes_first(h: PipelineHarness) -> bool:
    """Whether the first audio frame out came before the first word's text frame."""
    kinds = [
        type(r.frame)
        for r in h.down.records
        if isinstance(r.frame, TTSAudioRawFrame | TTSTextFrame)
    ]
    return kinds[0] is TTSAudioRawFrame


async def first_message(emu: GradiumEmulator, *, loaded: bool) -> str:
    h = await speak(emu, ANSWER, loaded=loaded, loaded_first_chunk_words=8)
    assert not h.errors()
    assert h.words_out() == ANSWER.split()
    return emu.stats.requests[-1].texts[0]


async def test_unloaded_the_first_phrase_goes_at_two_words(emu: GradiumEmulator):
    assert await first_message(emu, loaded=False) == "Sure, <flush>"


async def test_a_loaded_loop_makes_the_first_phrase_wait_for_eight_words(emu: GradiumEmulator):
    first = await first_message(emu, loaded=True)
    assert first.endswith("<flush>")
    assert len(first.replace("<flush>", "").split()) >= 8


async def first_frame_s(emu: GradiumEmulator, *, loaded: bool, answer: str = ANSWER) -> float:
    """Seconds of audio in the first frame of an answer, with a 0.3 s prebuffer set.

    Also checks that every word is heard, each after the audio frame that completes it.
    """
    h = await speak(emu, answer, loaded=loaded, loaded_prebuffer_s=0.3)
    assert not h.errors()
    assert h.words_out() == answer.split()
    assert audio_comes_first(h)  # no word before its audio
    first = h.down.frames(TTSAudioRawFrame)[0]
    return len(first.audio) / 2 / first.sample_rate


async def test_unloaded_the_first_audio_goes_as_it_comes(emu: GradiumEmulator):
    assert await first_frame_s(emu, loaded=False) <= 0.08 + 1e-6  # one chunk of Gradium's


async def test_a_loaded_loop_makes_the_first_frame_gather_audio(emu: GradiumEmulator):
    # The first word, "Sure,", lasts longer than 0.3 s: the prebuffer's size decides.
    assert await first_frame_s(emu, loaded=True) >= 0.3 - 1e-6


async def test_a_short_first_word_waits_for_the_gathered_first_frame(emu: GradiumEmulator):
    # "I" is heard in about 0.1 s: its text frame waits, and the first frame still gathers.
    first = await first_frame_s(emu, loaded=True, answer="I checked every restaurant nearby.")
    assert first >= 0.3 - 1e-6


async def test_with_many_services_a_mild_lag_makes_the_first_frame_gather_audio(
    emu: GradiumEmulator,
):
    # Many bots in one process: the loop runs 30-80 ms late twice, short of loaded, and the
    # first answer already starts with 0.3 s of audio in hand (the long turns come next).
    monitor = LoopLagMonitor.for_running_loop()
    for _ in range(MANY_USERS - 1):  # as the other services of the process would
        monitor.acquire()
    h = await start_pipeline(build_service(emu, loaded_prebuffer_s=0.3))
    try:
        for _ in range(MIN_MILD_TICKS):
            time.sleep(TICK_S + MILD_LATE_S + 0.01)  # the timer wakes 30-80 ms late
            await asyncio.sleep(0.01)
        await asyncio.sleep(TICK_S * 2)
        assert monitor.strained and not monitor.loaded
        await h.speak_answer(ANSWER, tokens_per_s=200)
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
    finally:
        await h.stop()
        for _ in range(MANY_USERS - 1):
            monitor.release()
    assert not h.errors()
    assert h.words_out() == ANSWER.split()
    first = h.down.frames(TTSAudioRawFrame)[0]
    assert len(first.audio) / 2 / first.sample_rate >= 0.3 - 1e-6


async def test_words_gathered_with_a_first_frame_go_with_it_when_generation_pauses(
    emu: GradiumEmulator,
):
    # Gradium speaks what it has of the answer (about 1 s of audio) and pauses: the LLM's turn
    # is still open, and "that." waits for the next token. The gathered first frame goes out
    # at its deadline, and the words it completes go with it, not when the next chunk or the
    # answer's end comes.
    spoken = ["Sure,", "I", "can", "do"]
    tts = build_service(emu, loaded_prebuffer_s=2.0, loaded_first_chunk_words=2)
    h = await start_pipeline(tts)
    try:
        await block_the_loop(LoopLagMonitor.for_running_loop())
        await h.speak_answer("Sure, I can do that.", tokens_per_s=200, end=False)
        await emu.stats.wait_for(
            lambda s: bool(s.requests and s.requests[0].heard_words == spoken), timeout=10
        )
        await h.down.wait_for(lambda: h.words_out() == spoken, timeout=5)
        [gathered] = h.audio_frames()
        assert len(gathered.audio) / 2 / gathered.sample_rate < 2.0  # the deadline ended it
        assert audio_comes_first(h)
        await h.speak_answer(" And more.", tokens_per_s=200, start=False)
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
    finally:
        await h.stop()
    assert h.words_out() == "Sure, I can do that. And more.".split()
    assert not h.errors()


async def test_a_socket_lost_while_the_first_frame_gathers_loses_no_word():
    # The reset comes after four 80 ms chunks, inside the 0.5 s being gathered: what was
    # gathered and the words it completed go out before the continuation's audio.
    text = "Let me walk you through the whole plan before we pack the car tomorrow morning."
    async with GradiumEmulator(api_key="test-key", latency=FAST, fault_after_chunks=4) as emu:
        emu.fault_next_request(Fault.RESET_MID_ANSWER)
        h = await speak(emu, text, loaded=True, loaded_prebuffer_s=0.5, stop_frame_timeout_s=0.3)
        first, second = answer_requests(emu.stats)
        # Cut while the first frame was being gathered, after its first word was heard.
        assert first.heard_words and first.audio_s < 0.5
    assert h.words_out() == text.split()
    assert [e.error for e in h.errors()] and len(h.errors()) == 1
    assert audio_comes_first(h)


async def test_a_barge_in_while_the_first_frame_gathers_plays_and_shows_nothing_of_it(
    emu: GradiumEmulator,
):
    # A 5 s prebuffer holds the first answer's audio (its LLM still streaming) until the
    # barge-in: none of that audio, and none of its heard words, may reach playback or the
    # context; the next answer is spoken whole.
    tts = build_service(emu, loaded_prebuffer_s=5.0, stop_frame_timeout_s=0.3)
    h = await start_pipeline(tts)
    nxt = "Okay, stopping there."
    try:
        await block_the_loop(LoopLagMonitor.for_running_loop())
        await h.speak_answer(ANSWER, tokens_per_s=200, end=False)
        # Gradium has sent four chunks; the first reached the service (its time to first
        # audio is recorded) and is being gathered, not played.
        await emu.stats.wait_for(
            lambda s: bool(s.requests and len(s.requests[0].audio_chunks) >= 4), timeout=10
        )
        assert tts.last_time_to_first_audio_s is not None
        assert h.audio_frames() == []
        await h.send(InterruptionFrame())
        await h.speak_answer(nxt, tokens_per_s=200)
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
    finally:
        await h.stop()
    [first], [second] = answer_requests(emu.stats), answer_requests(emu.stats, 1)
    assert first.words  # Gradium did speak words of the first answer
    assert h.audio_seconds(first.client_req_id) == 0.0
    assert h.words_out() == nxt.split()
    assert h.audio_seconds(second.client_req_id) > 0.0
    assert not h.errors()
