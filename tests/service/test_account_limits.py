"""An account's limits, as production Gradium meets them: what the user hears and is told.

Each test drives the real service in real pipelines over sockets to an emulator that models an
account (a plan's concurrency cap, a voice catalogue, briefly unavailable workers, a stall, idle
and session limits announced by an error frame), with Pipecat's real assistant aggregator
downstream, and asserts from the emulator's records.
"""

import time

import pytest
from pipecat.frames.frames import TTSUpdateSettingsFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.utils.errors import ErrorCategory

from pipecat_gradium import GradiumStreamingTTSService
from pipecat_gradium.emulator import Fault, GradiumEmulator
from pipecat_gradium.testing import PipelineHarness, answer_requests, heard_once, start_pipeline
from tests.conftest import FAST, build_service

pytestmark = pytest.mark.timeout(45)

ANSWERS = [
    "Sure thing. The forecast for tomorrow is sunny, with a light breeze.",
    "I booked a table for two at seven thirty tonight.",
    "Anything else? I can also check the train times for you.",
]
LONG = (
    "Let me walk you through the whole plan. First we pack the car early in the morning, "
    "then we drive north along the coast for about three hours, stopping twice for coffee."
)


def limited(emu: GradiumEmulator, **options) -> GradiumStreamingTTSService:
    """The service with every wait of the limit paths small."""
    options.setdefault("stop_frame_timeout_s", 0.5)
    options.setdefault("stall_timeout_s", 0.6)
    options.setdefault("limit_wait_s", 8.0)
    options.setdefault("first_audio_timeout_s", 3.0)
    return build_service(emu, **options)


async def run(tts: GradiumStreamingTTSService, context: LLMContext) -> PipelineHarness:
    return await start_pipeline(tts, downstream=[LLMAssistantAggregator(context)])


def assistant_text(context: LLMContext) -> str:
    return " ".join(
        str(m.get("content", "")) for m in context.get_messages() if m.get("role") == "assistant"
    )


async def speak(h: PipelineHarness, text: str, timeout: float = 15.0) -> None:
    before = h.stopped()
    await h.speak_answer(text, tokens_per_s=80)
    await h.down.wait_for(lambda: h.stopped() > before, timeout=timeout)


async def test_two_calls_under_a_cap_of_two_sessions_are_heard_without_a_reconnect_storm():
    async with GradiumEmulator(
        api_key="test-key", latency=FAST, max_sessions=2, cap_counts="sockets"
    ) as emu:
        contexts = [LLMContext(), LLMContext()]
        calls = [await run(limited(emu), c) for c in contexts]
        try:
            for text in ANSWERS:
                for h in calls:
                    await speak(h, text)
        finally:
            for h in calls:
                await h.stop()
        for context in contexts:
            assert assistant_text(context) == " ".join(ANSWERS)
        for h in calls:
            errors = h.errors()
            # Said once per call at most, as a limit, naming the plan and standby_sockets.
            assert len(errors) <= 1, [e.error for e in errors]
            for e in errors:
                assert e.category == ErrorCategory.RATE_LIMIT and not e.fatal
                assert "concurrency limit" in e.error and "standby_sockets" in e.error
        assert emu.stats.peak_sessions <= 2
        # Tens of connection attempts over the calls, not thousands.
        assert len(emu.stats.connections) <= 40, len(emu.stats.connections)


async def test_an_answer_that_meets_the_cap_waits_for_a_slot_and_is_heard():
    async with GradiumEmulator(
        api_key="test-key", latency=FAST, max_sessions=1, cap_counts="requests"
    ) as emu:
        context = LLMContext()
        h = await run(limited(emu), context)
        try:
            # The first answer holds the only slot while the second is set up beside it.
            await h.speak_answer(LONG, tokens_per_s=80)
            await emu.stats.wait_for(lambda s: any(r.audio_chunks for r in s.requests), 5)
            blocker = build_service(emu, standby_sockets=0)
            other = await run(blocker, LLMContext())
            try:
                await speak(other, ANSWERS[0])
            finally:
                await other.stop()
            await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
        finally:
            await h.stop()
        refused = [r for r in emu.stats.requests if r.error]
        assert refused and all("oncurrency" in (r.error or "") for r in refused)
        assert emu.stats.cap_refusals >= 1
        assert [e.category for e in other.errors()] == [ErrorCategory.RATE_LIMIT]
        heard = [r for r in emu.stats.requests if r.finished]
        assert any(r.text.replace("<flush>", "").split() == ANSWERS[0].split() for r in heard)
        assert assistant_text(context) == LONG


async def test_an_unknown_voice_is_one_error_naming_it_and_no_retry():
    async with GradiumEmulator(
        api_key="test-key", latency=FAST, voices=["YTpq7expH9539ERJ"]
    ) as emu:
        settings = GradiumStreamingTTSService.Settings(voice="no-such-voice")
        context = LLMContext()
        h = await run(limited(emu, settings=settings), context)
        try:
            for text in ANSWERS[:2]:
                await h.speak_answer(text, tokens_per_s=80)
            await h.up.wait_for(lambda: bool(h.errors()), timeout=5)
            # A good voice: the next answer speaks.
            await h.send(
                TTSUpdateSettingsFrame(
                    delta=GradiumStreamingTTSService.Settings(voice="YTpq7expH9539ERJ")
                )
            )
            await speak(h, ANSWERS[2])
        finally:
            await h.stop()
        errors = h.errors()
        assert len(errors) == 1, [e.error for e in errors]
        assert errors[0].category == ErrorCategory.INVALID_REQUEST
        assert "no-such-voice" in errors[0].error
        bad = [r for r in emu.stats.requests if r.voice_id == "no-such-voice"]
        assert len(bad) <= 1  # the check at start usually catches it before any setup
        assert "no-such-voice" in emu.stats.voice_lookups
        assert assistant_text(context) == ANSWERS[2]


async def test_retry_for_s_is_sent_and_absorbs_a_short_lack_of_workers():
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        context = LLMContext()
        h = await run(limited(emu, retry_for_s=2.0), context)
        try:
            emu.no_workers_for(0.4)
            started = time.monotonic()
            await speak(h, ANSWERS[0])
        finally:
            await h.stop()
        assert h.errors() == []
        (req,) = emu.stats.requests
        assert req.retry_for_s == 2.0 and req.worker_wait_s and req.worker_wait_s > 0.2
        assert time.monotonic() - started < 5
        assert assistant_text(context) == ANSWERS[0]


async def test_no_worker_before_the_first_phrase_is_retried_and_the_answer_heard():
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        emu.fault_next_request(Fault.NO_WORKER)
        context = LLMContext()
        h = await run(limited(emu, retry_for_s=0.0), context)
        try:
            await speak(h, ANSWERS[0])
        finally:
            await h.stop()
        first, second = answer_requests(emu.stats)
        assert first.error and "no worker" in first.error and not first.audio_chunks
        assert second.finished
        words, repeats = heard_once([first, second])
        assert words == ANSWERS[0].split() and repeats == 0
        assert [e.category for e in h.errors()] == [ErrorCategory.SERVER]
        assert assistant_text(context) == ANSWERS[0]


async def test_a_stall_mid_answer_is_continued_from_the_first_unheard_word():
    async with GradiumEmulator(api_key="test-key", latency=FAST, fault_after_chunks=8) as emu:
        emu.fault_next_request(Fault.STALL_MID_ANSWER)
        context = LLMContext()
        h = await run(limited(emu), context)
        try:
            await speak(h, LONG)
        finally:
            await h.stop()
        first, second = answer_requests(emu.stats)
        assert first.stalled_at is not None and second.finished
        assert second.setup_at - first.stalled_at < 2.0  # stall_timeout_s is 0.6 s here
        words, repeats = heard_once([first, second])
        assert words == LONG.split() and repeats <= 1
        error = h.errors()
        assert [e.category for e in error] == [ErrorCategory.SERVER]
        assert "stopped sending audio" in error[0].error
        assert assistant_text(context) == LONG


async def test_an_end_frame_during_a_stall_ends_the_pipeline_within_a_bound():
    async with GradiumEmulator(api_key="test-key", latency=FAST, fault_after_chunks=8) as emu:
        emu.fault_next_request(Fault.STALL_MID_ANSWER)
        h = await run(limited(emu, stall_timeout_s=1.5, first_audio_timeout_s=10.0), LLMContext())
        await h.speak_answer(LONG, tokens_per_s=80)
        await emu.stats.wait_for(lambda s: s.requests and s.requests[0].stalled_at, timeout=10)
        ended_at = time.monotonic()
        await h.stop(timeout=10)
        # Well within first_audio_timeout_s (10 s): the stall bound, not the first-audio one.
        assert time.monotonic() - ended_at < 4.0


async def test_a_session_limit_announced_by_an_error_frame_is_continued_quietly():
    async with GradiumEmulator(
        api_key="test-key", latency=FAST, session_limit_s=0.6, limit_error_frames=True
    ) as emu:
        emu.fault_next_connection(Fault.SESSION_LIMIT)  # the answer's socket
        context = LLMContext()
        h = await run(limited(emu), context)
        try:
            before = h.stopped()
            await h.speak_answer(LONG, tokens_per_s=40)
            await h.down.wait_for(lambda: h.stopped() > before, timeout=20)
        finally:
            await h.stop()
        reqs = answer_requests(emu.stats)
        assert len(reqs) == 2
        assert emu.stats.connections[reqs[0].connection_id - 1].close_code == 1008
        words, repeats = heard_once(reqs)
        assert words == LONG.split() and repeats <= 1
        # Not a SERVER error: a limit of the session, continued, said once as connectivity.
        errors = h.errors()
        assert [e.category for e in errors] == [ErrorCategory.CONNECTIVITY]
        assert "session limit" in errors[0].error
        assert assistant_text(context) == LONG


async def test_idle_limits_announced_by_an_error_frame_cost_nothing():
    async with GradiumEmulator(
        api_key="test-key",
        latency=FAST,
        faults=[Fault.IDLE_TIMEOUT],
        idle_timeout_s=0.2,
        limit_error_frames=True,
    ) as emu:
        context = LLMContext()
        h = await run(limited(emu), context)
        try:
            await emu.stats.wait_for(
                lambda s: sum(c.closed_by == "server" for c in s.connections) >= 3, timeout=5
            )
            await speak(h, ANSWERS[0])
        finally:
            await h.stop()
        assert h.errors() == []
        assert assistant_text(context) == ANSWERS[0]
