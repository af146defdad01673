"""GradiumStreamingTTSService in real Pipecat pipelines, over real sockets to the emulator."""

import asyncio
import re
import time

import pytest
from pipecat.frames.frames import (
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.utils.errors import ErrorCategory

from pipecat_gradium import GradiumStreamingTTSService
from pipecat_gradium.emulator import GradiumEmulator, LatencyModel
from pipecat_gradium.testing import PipelineHarness, start_pipeline

ANSWERS = [
    "Sure thing. The forecast for tomorrow is sunny, with a light breeze from the west.",
    "I booked a table for two at seven thirty; they will hold it for fifteen minutes.",
    "Anything else? I can also check the train times, or set a reminder for the morning.",
]
LONG = (
    "Let me walk you through the whole plan. First we pack the car early in the morning, "
    "then we drive north along the coast for about three hours, stopping twice for coffee "
    "and once for lunch at the little harbour town you liked last summer, before we reach "
    "the cabin late in the afternoon and light the fire."
)
TAG = re.compile(r"<[^>]*>")


def stale_frames(h: PipelineHarness, cut: int, context_id: str | None) -> list:
    """Audio and word frames of ``context_id`` recorded after position ``cut``."""
    return [
        r.frame
        for r in h.down.records[cut:]
        if isinstance(r.frame, (TTSAudioRawFrame, TTSTextFrame))
        and r.frame.context_id == context_id
    ]


def no_message_ends_inside_a_word(texts: list[str]) -> bool:
    # Every message but the last of a request ends at whitespace or with a tag.
    return all(t[-1:].isspace() or t.endswith(">") for t in texts[:-1])


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
async def test_three_answer_conversation(emu: GradiumEmulator, make_tts, rate: int):
    h = await start_pipeline(make_tts(), sample_rate=rate)
    try:
        for i, answer in enumerate(ANSWERS, start=1):
            await h.speak_answer(answer, tokens_per_s=200)
            await h.down.wait_for(lambda i=i: h.stopped() >= i, timeout=15)
    finally:
        await h.stop()

    requests = emu.stats.requests
    assert len(requests) == 3
    for req, answer in zip(requests, ANSWERS):
        assert req.setup["output_format"] == f"pcm_{rate}"
        assert no_message_ends_inside_a_word(req.texts), req.texts
        assert TAG.sub("", req.text) == answer
        assert req.finished and not req.left_open
        assert 1 < len(req.texts) < len(answer.split()), "phrases, not tokens or one blob"
    audio = h.audio_frames()
    assert audio and {f.sample_rate for f in audio} == {rate}
    assert h.words_out() == " ".join(ANSWERS).split()
    assert len(h.down.frames(TTSStartedFrame)) == 3
    assert not h.errors()
    # One socket carried all three answers; the standby sockets were never needed.
    assert len({r.connection_id for r in requests}) == 1


async def test_rate_gradium_lacks_is_resampled(emu: GradiumEmulator, make_tts):
    h = await start_pipeline(make_tts(), sample_rate=32000)
    try:
        await h.speak_answer(ANSWERS[0])
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
    finally:
        await h.stop()
    assert emu.stats.requests[0].setup["output_format"] == "pcm_44100"
    audio = h.audio_frames()
    assert {f.sample_rate for f in audio} == {32000}
    seconds = h.audio_seconds()
    assert seconds == pytest.approx(emu.stats.requests[0].audio_s, abs=0.05)


async def test_barge_in_mid_audio_drops_answer_and_closes_its_socket(
    emu: GradiumEmulator, make_tts
):
    h = await start_pipeline(make_tts())
    try:
        hold = emu.hold_after_chunks(4)
        await h.speak_answer(LONG)
        await asyncio.wait_for(hold.reached.wait(), 10)
        await h.down.wait_for(lambda: len(h.audio_frames()) >= 4, timeout=10)
        first = emu.stats.requests[0]
        interrupted_at = time.monotonic()
        await h.send(InterruptionFrame())
        await h.down.wait_for(lambda: bool(h.down.frames(InterruptionFrame)), timeout=5)
        cut = len(h.down.records)
        await emu.stats.wait_for(
            lambda s: s.connections[first.connection_id - 1].closed_by is not None, timeout=5
        )
        hold.release()

        await h.speak_answer(ANSWERS[1])
        await h.down.wait_for(
            lambda: any(f.context_id != first.client_req_id for f in h.audio_frames()),
            timeout=10,
        )
        # The interrupted answer gets no TTSStoppedFrame: the interruption ended it.
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
    finally:
        await h.stop()

    conn = emu.stats.connections[first.connection_id - 1]
    assert conn.closed_by == "client"
    # Generation stopped: far less audio than the whole answer, none after the close.
    assert first.audio_s < 1.0
    assert first.audio_after_client_gone_s == 0
    assert not first.finished
    assert stale_frames(h, cut, first.client_req_id) == []
    second = emu.stats.requests[-1]
    assert second.connection_id != first.connection_id
    assert emu.stats.connections[second.connection_id - 1].opened_at < interrupted_at
    assert TAG.sub("", second.text) == ANSWERS[1]
    assert h.words_out(second.client_req_id) == ANSWERS[1].split()
    assert not h.errors()


async def test_barge_in_with_nothing_generating_closes_nothing(emu: GradiumEmulator, make_tts):
    h = await start_pipeline(make_tts())
    try:
        await h.speak_answer(ANSWERS[0])
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
        await emu.stats.wait_for(lambda s: s.requests[0].finished, timeout=5)
        await h.send(InterruptionFrame())
        # An answer interrupted before its first phrase: ended, not closed.
        await h.send(LLMFullResponseStartFrame())
        await emu.stats.wait_for(lambda s: len(s.requests) == 2, timeout=5)
        await h.send(InterruptionFrame())
        await emu.stats.wait_for(lambda s: s.requests[1].eos_at is not None, timeout=5)
        await h.speak_answer(ANSWERS[2])
        await h.down.wait_for(lambda: h.stopped() >= 2, timeout=15)
    finally:
        await h.stop()
    closed_by_client_early = [
        c for c in emu.stats.connections if c.closed_by == "client" and c.requests
    ]
    # Only the final shutdown closed sockets: every request on them had finished.
    assert all(all(r.finished for r in c.requests) for c in closed_by_client_early)
    assert len({r.connection_id for r in emu.stats.requests}) == 1
    assert emu.stats.requests[1].audio_s == 0 and emu.stats.requests[1].finished


@pytest.mark.parametrize("end_frame", [False, True], ids=["then-next-answer", "then-its-end"])
async def test_tokens_in_flight_at_a_barge_in_are_not_spoken(
    emu: GradiumEmulator, make_tts, end_frame: bool
):
    # A barge-in (a system frame) overtakes the LLM tokens still moving through the processors
    # before this service, and a cancelled LLM still pushes its response's end frame. That
    # text belongs to the interrupted answer: not to the next one, and not to a request of
    # its own after the barge-in.
    h = await start_pipeline(make_tts())
    try:
        await h.speak_answer(LONG, end=False)
        await h.down.wait_for(lambda: len(h.audio_frames()) >= 2, timeout=10)
        await h.send(InterruptionFrame())
        await h.down.wait_for(lambda: bool(h.down.frames(InterruptionFrame)), timeout=5)
        await h.send(LLMTextFrame(" Then"), LLMTextFrame(" we rest"))
        if end_frame:
            await h.send(LLMFullResponseEndFrame())
        await h.speak_answer(ANSWERS[1])
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
    finally:
        await h.stop()
    first, second = emu.stats.requests
    assert "rest" not in first.text
    assert TAG.sub("", second.text) == ANSWERS[1]
    assert h.words_out(second.client_req_id) == ANSWERS[1].split()
    assert "rest" not in h.words_out()
    assert not h.errors()


async def test_settings_update_applies_to_next_request_without_reconnecting(
    emu: GradiumEmulator, make_tts
):
    h = await start_pipeline(make_tts())
    try:
        await h.speak_answer(ANSWERS[0])
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
        opened = len(emu.stats.connections)
        delta = GradiumStreamingTTSService.Settings(
            voice="other-voice", temp=0.3, padding_bonus=-1.0, model="fast"
        )
        await h.send(TTSUpdateSettingsFrame(delta=delta))
        await h.speak_answer(ANSWERS[1])
        await h.down.wait_for(lambda: h.stopped() >= 2, timeout=15)
    finally:
        await h.stop()
    setup = emu.stats.requests[1].setup
    assert setup["voice_id"] == "other-voice"
    assert setup["model_name"] == "fast"
    assert setup["json_config"] == {"temp": 0.3, "padding_bonus": -1.0}
    assert "json_config" not in emu.stats.requests[0].setup
    assert len(emu.stats.connections) == opened
    assert emu.stats.requests[0].connection_id == emu.stats.requests[1].connection_id


async def test_out_of_range_setting_is_rejected_with_clear_error(emu: GradiumEmulator, make_tts):
    h = await start_pipeline(make_tts())
    try:
        await h.send(TTSUpdateSettingsFrame(delta=GradiumStreamingTTSService.Settings(temp=9.0)))
        await h.up.wait_for(lambda: bool(h.errors()), timeout=5)
        await h.speak_answer(ANSWERS[0])
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
    finally:
        await h.stop()
    error = h.errors()[0]
    assert error.category == ErrorCategory.APPLICATION and "temp" in error.error
    assert "json_config" not in emu.stats.requests[0].setup


async def test_speak_frame_while_answer_plays_is_multiplexed(emu: GradiumEmulator, make_tts):
    h = await start_pipeline(make_tts())
    try:
        await h.speak_answer(LONG, end=False)
        await h.send(TTSSpeakFrame("One moment please."))
        await h.send(LLMFullResponseEndFrame())
        await h.down.wait_for(lambda: h.stopped() >= 2, timeout=20)
    finally:
        await h.stop()
    answer, speak = emu.stats.requests
    assert answer.connection_id == speak.connection_id
    assert answer.client_req_id != speak.client_req_id
    assert TAG.sub("", speak.text) == "One moment please."
    assert {f.context_id for f in h.audio_frames()} == {answer.client_req_id, speak.client_req_id}
    for req in (answer, speak):
        assert h.audio_seconds(req.client_req_id) == pytest.approx(req.audio_s, abs=0.02)
    assert h.words_out(speak.client_req_id) == ["One", "moment", "please."]


async def test_next_answer_while_last_audio_still_arrives(emu: GradiumEmulator, make_tts):
    """Two answers in flight on one socket: each gets its own audio, played in order."""
    h = await start_pipeline(make_tts())
    try:
        hold = emu.hold_after_chunks(2)
        await h.speak_answer(ANSWERS[0])
        await asyncio.wait_for(hold.reached.wait(), 10)
        await h.speak_answer(ANSWERS[1])
        await emu.stats.wait_for(
            lambda s: len(s.requests) == 2 and s.requests[1].first_audio_at is not None, 10
        )
        hold.release()
        await h.down.wait_for(lambda: h.stopped() >= 2, timeout=15)
    finally:
        await h.stop()
    first, second = emu.stats.requests
    assert first.connection_id == second.connection_id
    # The second answer's audio was generated while the first was held...
    assert second.first_audio_at < first.audio_chunks[-1][0]
    # ...yet played after it, each with all of its own audio.
    contexts = [f.context_id for f in h.audio_frames()]
    boundary = contexts.index(second.client_req_id)
    assert set(contexts[:boundary]) == {first.client_req_id}
    assert set(contexts[boundary:]) == {second.client_req_id}
    for req in (first, second):
        assert h.audio_seconds(req.client_req_id) == pytest.approx(req.audio_s, abs=0.02)
    assert h.words_out() == (ANSWERS[0] + " " + ANSWERS[1]).split()


async def test_uninterruptible_speech_has_its_own_socket_and_survives_barge_in(
    emu: GradiumEmulator, make_tts
):
    h = await start_pipeline(make_tts())
    try:
        await h.speak_answer(ANSWERS[0])
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
        hold = emu.hold_after_chunks(2)
        backchannel = TTSSpeakFrame("Mm-hmm, I am still listening to you.")
        backchannel.interruptible = False
        await h.send(backchannel)
        await asyncio.wait_for(hold.reached.wait(), 10)
        await h.send(InterruptionFrame())
        await h.down.wait_for(lambda: bool(h.down.frames(InterruptionFrame)), timeout=5)
        hold.release()
        await h.down.wait_for(lambda: h.stopped() >= 2, timeout=15)
    finally:
        await h.stop()
    answer, backchannel = emu.stats.requests
    assert backchannel.connection_id != answer.connection_id
    assert backchannel.finished
    words = h.words_out(backchannel.client_req_id)
    assert words == "Mm-hmm, I am still listening to you.".split()


async def test_answer_without_punctuation_and_tool_call_only_answer(emu: GradiumEmulator, make_tts):
    h = await start_pipeline(make_tts())
    try:
        await h.speak_answer("ok let me look that up for you right now")
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
        # A tool-call-only answer: start and end, no text.
        await h.send(LLMFullResponseStartFrame(), LLMFullResponseEndFrame())
        # Whitespace only.
        await h.speak_answer("  \n ", tokens=["  ", "\n", " "])
        await emu.stats.wait_for(
            lambda s: len(s.requests) == 3 and all(r.finished for r in s.requests), timeout=5
        )
    finally:
        await h.stop()
    first, tool, blank = emu.stats.requests
    assert TAG.sub("", first.text) == "ok let me look that up for you right now"
    assert h.words_out() == "ok let me look that up for you right now".split()
    for req in (tool, blank):
        assert req.texts == [] and req.eos_at is not None and req.audio_s == 0
    assert not any(r.left_open for r in emu.stats.requests)
    assert len(h.down.frames(TTSStartedFrame)) == 1


async def test_llm_pause_longer_than_audio_context_timeout(emu: GradiumEmulator, make_tts):
    tts = make_tts(stop_frame_timeout_s=0.4, quiet_flush_s=0.15)
    h = await start_pipeline(tts)
    try:
        await h.speak_answer("Let me check the weather for you. ", end=False)
        # The tool call: the LLM is quiet for twice the audio-context timeout.
        await emu.stats.wait_for(
            lambda s: bool(s.requests) and s.requests[0].texts[-1:] == ["<flush>"], timeout=5
        )
        await h.down.wait_for(lambda: len(h.down.frames(TTSTextFrame)) >= 7, timeout=5)
        await asyncio.sleep(0.8)
        await h.speak_answer("", tokens=["It", " is", " sunny", "."], start=False)
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=10)
    finally:
        await h.stop()
    assert len(h.down.frames(TTSStartedFrame)) == 1
    assert len(h.down.frames(TTSStoppedFrame)) == 1
    assert h.words_out() == "Let me check the weather for you. It is sunny.".split()


def test_missing_key_fails_at_construction(monkeypatch):
    monkeypatch.delenv("GRADIUM_API_KEY", raising=False)
    with pytest.raises(ValueError, match="GRADIUM_API_KEY"):
        GradiumStreamingTTSService()


async def test_first_phrase_is_flushed_once_and_words_are_whole(emu: GradiumEmulator, make_tts):
    h = await start_pipeline(make_tts())
    try:
        tokens = ["The", " fore", "cast", " for", " tomor", "row", " is", " sun", "ny", "."]
        await h.speak_answer("", tokens=tokens)
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
    finally:
        await h.stop()
    texts = emu.stats.requests[0].texts
    assert texts[0] == "The forecast <flush>"
    assert sum(t.count("<flush>") for t in texts) == 1
    assert no_message_ends_inside_a_word(texts)
    assert h.words_out() == ["The", "forecast", "for", "tomorrow", "is", "sunny."]


async def test_old_socket_takes_no_new_request_and_drains(emu: GradiumEmulator, make_tts):
    h = await start_pipeline(make_tts(max_socket_age_s=0.3))
    try:
        await h.speak_answer(ANSWERS[0])
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
        first_conn = emu.stats.requests[0].connection_id
        # Idle standby sockets are replaced before they age out, without a word to the app.
        await emu.stats.wait_for(
            lambda s: sum(c.closed_by == "client" and not c.requests for c in s.connections) >= 2,
            timeout=5,
        )
        await h.speak_answer(ANSWERS[1])
        await h.down.wait_for(lambda: h.stopped() >= 2, timeout=15)
        await emu.stats.wait_for(
            lambda s: s.connections[first_conn - 1].closed_by is not None, timeout=5
        )
    finally:
        await h.stop()
    first, second = emu.stats.requests
    assert second.connection_id != first.connection_id
    assert emu.stats.connections[first.connection_id - 1].closed_by == "client"
    # The second answer went out on a socket younger than the age limit.
    second_conn = emu.stats.connections[second.connection_id - 1]
    assert second.setup_at - second_conn.opened_at < 0.3
    assert not h.errors()


async def test_speak_frame_during_llm_pause_keeps_the_answer_whole(emu: GradiumEmulator, make_tts):
    h = await start_pipeline(make_tts(stop_frame_timeout_s=0.4, quiet_flush_s=0.15))
    try:
        await h.speak_answer("Let me check the weather for you. ", end=False)
        await h.send(TTSSpeakFrame("One moment."))
        await asyncio.sleep(0.8)  # the tool call: longer than the audio-context timeout
        await h.speak_answer("", tokens=["It", " is", " sunny", "."], start=False)
        await h.down.wait_for(lambda: h.stopped() >= 2, timeout=10)
    finally:
        await h.stop()
    answer, speak = emu.stats.requests[0], emu.stats.requests[1]
    assert len(h.down.frames(TTSStartedFrame)) == 2
    words = h.words_out(answer.client_req_id)
    assert words == "Let me check the weather for you. It is sunny.".split()
    assert h.words_out(speak.client_req_id) == ["One", "moment."]


async def test_language_gradium_lacks_is_not_sent(emu: GradiumEmulator, make_tts):
    from pipecat.transcriptions.language import Language

    settings = GradiumStreamingTTSService.Settings(language=Language.JA)
    h = await start_pipeline(make_tts(settings=settings))
    try:
        await h.speak_answer(ANSWERS[0])
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
    finally:
        await h.stop()
    assert "json_config" not in emu.stats.requests[0].setup


async def test_barge_in_on_the_nth_audio_frame_with_audio_in_flight(make_tts):
    """Interrupted from the recorder at the 5th audio frame while Gradium is still sending."""
    latency = LatencyModel(handshake_s=0.0, setup_s=0.005, model_delay_s=0.01, speed=4.0)
    async with GradiumEmulator(api_key="test-key", latency=latency) as emulator:
        h = await start_pipeline(make_tts(url=emulator.ws_url))
        interrupted = asyncio.Event()

        def on_frame(frame) -> None:
            if isinstance(frame, TTSAudioRawFrame) and len(h.audio_frames()) == 5:
                interrupted.set()

        h.down.on_frame = on_frame
        try:
            await h.speak_answer(LONG)
            await asyncio.wait_for(interrupted.wait(), 10)
            await h.send(InterruptionFrame())
            await h.down.wait_for(lambda: bool(h.down.frames(InterruptionFrame)), timeout=5)
            cut = len(h.down.records)
            first = emulator.stats.requests[0]
            await emulator.stats.wait_for(
                lambda s: s.connections[first.connection_id - 1].closed_by is not None, 5
            )
            await h.speak_answer(ANSWERS[1])
            await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
        finally:
            await h.stop()
        assert stale_frames(h, cut, first.client_req_id) == []
        assert emulator.stats.connections[first.connection_id - 1].closed_by == "client"
        assert not first.finished and first.audio_after_client_gone_s == 0
        assert h.words_out(emulator.stats.requests[-1].client_req_id) == ANSWERS[1].split()


async def test_backchannel_survives_a_barge_in_that_closes_the_answer_socket(
    emu: GradiumEmulator, make_tts
):
    h = await start_pipeline(make_tts())
    try:
        hold = emu.hold_after_chunks(2)
        backchannel = TTSSpeakFrame("Mm-hmm, I am still listening to you.")
        backchannel.interruptible = False
        await h.send(backchannel)
        await asyncio.wait_for(hold.reached.wait(), 10)
        answer_hold = emu.hold_after_chunks(2)
        await h.speak_answer(LONG)
        await asyncio.wait_for(answer_hold.reached.wait(), 10)
        await h.send(InterruptionFrame())
        await h.down.wait_for(lambda: bool(h.down.frames(InterruptionFrame)), timeout=5)
        bc, answer = emu.stats.requests
        await emu.stats.wait_for(
            lambda s: s.connections[answer.connection_id - 1].closed_by is not None, 5
        )
        hold.release()
        answer_hold.release()
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
    finally:
        await h.stop()
    assert bc.connection_id != answer.connection_id
    assert emu.stats.connections[answer.connection_id - 1].closed_by == "client"
    assert bc.finished
    assert h.words_out(bc.client_req_id) == "Mm-hmm, I am still listening to you.".split()
    assert h.words_out(answer.client_req_id) == []
