"""The fault matrix: every fault a deployment meets, and what the user hears under it.

Each test injects one fault with the emulator, drives the real service in a real pipeline (with
Pipecat's real assistant context aggregator downstream where the context is asserted), and
checks from the emulator's per-request records that every source word was heard exactly once
(at most one repeated at a cut), that one error with the right category reported the fault,
that recovery took a bounded time and a bounded number of connections, and that nothing was
left open. Every wait is small here (timeouts and back-offs are constructor options).

The README's fault table comes from ``python -m benchmarks.faults`` (default settings); these
tests assert the same behaviours with every wait small.
"""

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable

import pytest
from loguru import logger
from pipecat.frames.frames import (
    InterruptionFrame,
    LLMFullResponseEndFrame,
    TTSStartedFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.utils.errors import ErrorCategory

from pipecat_gradium import GradiumStreamingTTSService
from pipecat_gradium.emulator import Fault, GradiumEmulator
from pipecat_gradium.emulator.stats import RequestStats
from pipecat_gradium.testing import PipelineHarness, answer_requests, heard_once, start_pipeline
from tests.conftest import FAST, build_service

pytestmark = pytest.mark.timeout(30)

LONG = (
    "Let me walk you through the whole plan. First we pack the car early in the morning, "
    "then we drive north along the coast for about three hours, stopping twice for coffee "
    "and once for lunch at the little harbour town you liked last summer."
)
SHORT = "Sure thing. The forecast for tomorrow is sunny, with a light breeze."
TAGGED = 'Wait<break time="100ms"/>now, we will check the train times and then the weather.'


def service(emu: GradiumEmulator, **options) -> GradiumStreamingTTSService:
    """The service with the fault paths' waits small: timeouts, back-offs, keepalives."""
    options.setdefault("stop_frame_timeout_s", 0.3)
    options.setdefault("first_audio_timeout_s", 3.0)
    options.setdefault("probe_backoff_s", 0.05)
    options.setdefault("probe_backoff_max_s", 0.2)
    return build_service(emu, **options)


async def run(tts: GradiumStreamingTTSService, *, context: LLMContext | None = None):
    downstream = [LLMAssistantAggregator(context)] if context is not None else []
    return await start_pipeline(tts, downstream=downstream)


async def speak_once(
    tts: GradiumStreamingTTSService,
    text: str,
    *,
    context: LLMContext | None = None,
    timeout: float = 15.0,
    **speak,
) -> PipelineHarness:
    """Run a pipeline, speak ``text`` until its answer's TTSStoppedFrame, stop it.

    Returns:
        The stopped harness, for its records.
    """
    h = await run(tts, context=context)
    try:
        await h.speak_answer(text, **speak)
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=timeout)
    finally:
        await h.stop()
    return h


def sent_words(req: RequestStats) -> list[str]:
    """The source words a request received, tags read as separators (as Gradium reads them)."""
    return re.sub(r"<[^<>]*>", " ", req.text).split()


def assistant_text(context: LLMContext) -> str:
    return " ".join(
        str(m.get("content", "")) for m in context.get_messages() if m.get("role") == "assistant"
    )


def gap_s(before: RequestStats, after: RequestStats) -> float:
    """Silence between the cut request's last audio and its continuation's first."""
    assert before.audio_chunks and after.first_audio_at is not None
    return after.first_audio_at - before.audio_chunks[-1][0]


def assert_short_silence_at_the_cut(first: RequestStats, second: RequestStats) -> None:
    """The listener hears under a second of silence between a cut and its continuation."""
    assert gap_s(first, second) < 1.0


async def nothing_left_open(emu: GradiumEmulator) -> None:
    await emu.stats.wait_for(lambda s: all(c.closed_at is not None for c in s.connections), 5)
    # Give cancelled tasks their last turn of the loop before looking.
    await asyncio.sleep(0)
    leaked = [
        t.get_name()
        for t in asyncio.all_tasks()
        if t.get_name().startswith("gradium-")
        and not t.get_name().startswith("gradium-emu")
        and not t.done()
    ]
    assert leaked == []


def connected_event(tts: GradiumStreamingTTSService) -> asyncio.Event:
    """An event set each time the service reports itself connected (``on_connected``)."""
    connected = asyncio.Event()

    @tts.event_handler("on_connected")
    async def on_connected(_service):
        connected.set()

    return connected


def one_error(h: PipelineHarness, category: ErrorCategory):
    errors = h.errors()
    assert [e.category for e in errors] == [category], [e.error for e in errors]
    return errors[0]


# --------------------------------------------------------------------------- slow starts


async def test_slow_first_audio_past_pipecats_timeout_is_waited_for():
    """A cold start longer than stop_frame_timeout_s, three answers in a row: all heard."""
    async with GradiumEmulator(api_key="test-key", latency=FAST, slow_first_audio_s=0.8) as emu:
        emu.fault_next_request(Fault.SLOW_FIRST_AUDIO, count=3)
        tts = service(emu)  # stop_frame_timeout_s 0.3, first_audio_timeout_s 3
        h = await run(tts)
        try:
            for i, text in enumerate([SHORT, SHORT, SHORT, LONG], start=1):
                await h.speak_answer(text, tokens_per_s=200)
                await h.down.wait_for(lambda i=i: h.stopped() >= i, timeout=10)
        finally:
            await h.stop()
        assert h.errors() == []
        assert tts.is_usable
        for i, text in enumerate([SHORT, SHORT, SHORT, LONG]):
            reqs = answer_requests(emu.stats, i)
            assert len(reqs) == 1 and reqs[0].finished
            assert reqs[0].heard_words == text.split()
        assert [r.faults for r in emu.stats.requests] == [["slow_first_audio"]] * 3 + [[]]
        assert h.words_out() == (" ".join([SHORT] * 3 + [LONG])).split()
        assert len(h.down.frames(TTSStartedFrame)) == 4
        first = emu.stats.requests[0]
        assert first.first_audio_at and first.eos_at
        await nothing_left_open(emu)


async def test_slow_first_audio_past_the_limit_is_one_error_and_the_next_answer_speaks():
    async with GradiumEmulator(api_key="test-key", latency=FAST, slow_first_audio_s=2.0) as emu:
        emu.fault_next_request(Fault.SLOW_FIRST_AUDIO)
        context = LLMContext()
        tts = service(emu, first_audio_timeout_s=0.5)
        h = await run(tts, context=context)
        try:
            began = time.monotonic()
            await h.speak_answer(SHORT)
            await h.up.wait_for(lambda: bool(h.errors()), timeout=5)
            failed_after = time.monotonic() - began
            await h.down.wait_for(lambda: h.stopped() >= 1, timeout=5)
            slow = emu.stats.requests[0]
            # The request is ended on Gradium's side: its socket closed, no audio generated.
            await emu.stats.wait_for(
                lambda s: s.connections[slow.connection_id - 1].closed_by == "client", 5
            )
            await h.speak_answer(LONG)
            await h.down.wait_for(lambda: h.stopped() >= 2, timeout=10)
        finally:
            await h.stop()
        error = one_error(h, ErrorCategory.SERVER)
        assert "first_audio_timeout_s" in error.error
        assert 0.5 <= failed_after < 1.5
        assert slow.audio_s == 0 and not slow.finished
        nxt = answer_requests(emu.stats, 1)
        assert len(nxt) == 1 and nxt[0].heard_words == LONG.split()
        assert h.words_out() == LONG.split()
        # The context holds what was heard: nothing of the first answer, all of the second.
        assert assistant_text(context) == LONG
        assert tts.is_usable
        await nothing_left_open(emu)


async def test_llm_pause_longer_than_the_limit_after_audio_started_is_no_fault():
    """A tool call mid-answer: Gradium owes nothing while the LLM is quiet, then speaks the rest."""
    # Gradium takes 0.3 s to speak after the end: the watch looks in between.
    latency = dataclasses.replace(FAST, model_delay_s=0.3)
    async with GradiumEmulator(api_key="test-key", latency=latency) as emu:
        tts = service(emu, first_audio_timeout_s=0.6, quiet_flush_s=0.1)
        h = await run(tts)
        try:
            await h.speak_answer("Let me check the weather for you. ", end=False)
            await h.down.wait_for(lambda: len(h.audio_frames()) > 0, timeout=5)
            await asyncio.sleep(1.2)  # the tool call: twice the limit
            await h.speak_answer("It is sunny and warm today.", start=False)
            await h.down.wait_for(lambda: h.stopped() >= 1, timeout=10)
        finally:
            await h.stop()
        assert h.errors() == []
        expected = "Let me check the weather for you. It is sunny and warm today.".split()
        assert answer_requests(emu.stats)[0].heard_words == expected
        assert h.words_out() == expected
        await nothing_left_open(emu)


# --------------------------------------------------------------------------- request errors


async def test_request_error_while_the_llm_streams_is_continued_under_a_new_id():
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        emu.fault_next_request(Fault.REQUEST_ERROR)
        tts = service(emu)
        h = await speak_once(tts, LONG, tokens_per_s=60)
        reqs = answer_requests(emu.stats)
        first, second = reqs
        assert first.error and "1011" not in first.error  # the emulated 1011's message
        assert second.client_req_id == f"{first.client_req_id}#2"
        ids = [r.client_req_id for r in emu.stats.requests]
        assert len(ids) == len(set(ids)), "never two requests with one client_req_id"
        # The LLM was still streaming when the error came: the rest went to the continuation.
        assert len(sent_words(first)) < len(LONG.split()) and second.finished
        assert sent_words(second) == LONG.split()[len(first.heard_words) :]
        words, repeats = heard_once(reqs)
        assert words == LONG.split() and repeats <= 1
        assert h.words_out() == LONG.split()
        assert len(h.down.frames(TTSStartedFrame)) == 1 and h.stopped() == 1
        error = one_error(h, ErrorCategory.SERVER)
        assert "re-sending" in error.error
        assert_short_silence_at_the_cut(first, second)
        await nothing_left_open(emu)


async def test_request_error_after_the_llm_ended_is_continued():
    async with GradiumEmulator(api_key="test-key", latency=FAST, fault_after_chunks=3) as emu:
        emu.fault_next_request(Fault.REQUEST_ERROR)
        hold = emu.hold_after_chunks(2)
        tts = service(emu)
        h = await run(tts)
        try:
            await h.speak_answer(LONG)
            await asyncio.wait_for(hold.reached.wait(), 10)
            # The whole answer and its end_of_stream are in before the error fires.
            await emu.stats.wait_for(lambda s: s.requests[0].eos_at is not None, 5)
            hold.release()
            await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
        finally:
            await h.stop()
        reqs = answer_requests(emu.stats)
        first, second = reqs
        assert first.error is not None
        assert second.client_req_id == f"{first.client_req_id}#2"
        # All text was in before the error: the continuation re-sent the unheard part, then ended,
        # in messages no longer than max_chunk_chars (80).
        assert sent_words(first) == LONG.split() and first.eos_at is not None
        assert sent_words(second) == LONG.split()[len(first.heard_words) :]
        assert second.texts and all(len(t.replace("<flush>", "")) <= 80 for t in second.texts)
        assert second.eos_at is not None and second.finished
        words, repeats = heard_once(reqs)
        assert words == LONG.split() and repeats <= 1
        assert h.words_out() == LONG.split()
        one_error(h, ErrorCategory.SERVER)
        assert_short_silence_at_the_cut(first, second)
        await nothing_left_open(emu)


# --------------------------------------------------------------------------- lost sockets


@pytest.mark.parametrize(
    ("fault", "category"),
    [
        (Fault.RESET_MID_ANSWER, ErrorCategory.CONNECTIVITY),
        (Fault.RESET_MID_WORD, ErrorCategory.CONNECTIVITY),
        (Fault.ERROR_MID_ANSWER, ErrorCategory.SERVER),
    ],
)
async def test_socket_lost_mid_answer_loses_and_repeats_nothing(
    fault: Fault, category: ErrorCategory
):
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        emu.fault_next_request(fault)
        context = LLMContext()
        tts = service(emu)
        h = await speak_once(tts, LONG, tokens_per_s=60, context=context)
        reqs = answer_requests(emu.stats)
        first, second = reqs
        if fault is Fault.RESET_MID_WORD:
            # The audio sent stopped inside a word whose timing had gone out: the word is cut.
            cut_word, start, stop = first.words[-1]
            assert start < first.audio_s < stop
            assert cut_word not in first.heard_words[-1:]
            assert second.heard_words[0] == cut_word
        words, repeats = heard_once(reqs)
        assert words == LONG.split() and repeats <= 1
        assert h.words_out() == LONG.split()
        assert assistant_text(context) == LONG
        one_error(h, category)
        # The first socket, two standby, and the standby refilled after the continuation took one.
        assert len(emu.stats.connections) <= 5
        assert_short_silence_at_the_cut(first, second)
        await nothing_left_open(emu)


async def test_reset_where_a_tag_touches_a_word_loses_no_word():
    """``Wait<break .../>now``: the tag separates two words, as Gradium reads it."""
    async with GradiumEmulator(api_key="test-key", latency=FAST, fault_after_chunks=11) as emu:
        emu.fault_next_request(Fault.RESET_MID_WORD)
        tts = service(emu)
        h = await speak_once(tts, TAGGED, tokens_per_s=60)
        reqs = answer_requests(emu.stats)
        assert len(reqs) == 2
        first = reqs[0]
        assert first.heard_words[:2] == ["Wait", "now,"], "the cut comes after the tag"
        words, repeats = heard_once(reqs)
        expected = TAGGED.replace('<break time="100ms"/>', " ").split()
        assert words == expected and repeats <= 1
        one_error(h, ErrorCategory.CONNECTIVITY)
        await nothing_left_open(emu)


async def test_session_limit_mid_answer_is_continued():
    async with GradiumEmulator(api_key="test-key", latency=FAST, session_limit_s=0.6) as emu:
        emu.fault_next_connection(Fault.SESSION_LIMIT)  # the answer's socket
        tts = service(emu)
        h = await speak_once(tts, LONG, tokens_per_s=40)
        reqs = answer_requests(emu.stats)
        assert len(reqs) == 2
        assert emu.stats.connections[reqs[0].connection_id - 1].close_code == 1008
        words, repeats = heard_once(reqs)
        assert words == LONG.split() and repeats <= 1
        assert h.words_out() == LONG.split()
        one_error(h, ErrorCategory.CONNECTIVITY)
        await nothing_left_open(emu)


async def test_answer_cut_with_no_continuation_keeps_only_heard_words_in_the_context():
    """Every socket resets mid-answer: after the last attempt the answer is cut short."""
    async with GradiumEmulator(
        api_key="test-key", latency=FAST, faults=[Fault.RESET_MID_ANSWER], fault_after_chunks=4
    ) as emu:
        context = LLMContext()
        tts = service(emu)
        h = await run(tts, context=context)
        try:
            await h.speak_answer(LONG, tokens_per_s=60)
            await h.down.wait_for(lambda: bool(h.down.frames(LLMFullResponseEndFrame)), 15)
            await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
        finally:
            await h.stop()
        reqs = answer_requests(emu.stats)
        assert len(reqs) == 3, "attempts are bounded"
        words, repeats = heard_once(reqs)
        assert 0 < len(words) < len(LONG.split())
        assert words == LONG.split()[: len(words)]
        # The context holds exactly the words heard: Pipecat does not complete the rest.
        assert assistant_text(context).split() == words
        assert h.words_out() == words
        errors = h.errors()
        assert [e.category for e in errors] == [ErrorCategory.CONNECTIVITY] * 3
        assert "cut short" in errors[-1].error
        await nothing_left_open(emu)


# --------------------------------------------------------------------------- outages


async def test_outage_at_start_ends_answers_at_once_then_recovers_by_itself():
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        emu.start_outage()
        tts = service(emu, stop_frame_timeout_s=2.0)
        connected = connected_event(tts)
        h = await run(tts)
        try:
            await h.up.wait_for(lambda: len(h.errors()) >= 1, timeout=5)
            held: list[float] = []
            for i in range(1, 4):
                began = time.monotonic()
                await h.speak_answer(SHORT)
                await h.down.wait_for(
                    lambda i=i: len(h.down.frames(LLMFullResponseEndFrame)) >= i, timeout=5
                )
                held.append(time.monotonic() - began)
            await h.up.wait_for(lambda: len(h.errors()) >= 4, timeout=5)
            assert not tts.is_usable
            ended = time.monotonic()
            emu.end_outage()
            await asyncio.wait_for(connected.wait(), 5)
            recovery = time.monotonic() - ended
            assert tts.is_usable
            await h.speak_answer(LONG)
            await h.down.wait_for(lambda: h.stopped() >= 1, timeout=10)
        finally:
            await h.stop()
        errors = h.errors()
        # The start-up failure, then one per answer that needed a socket; the third
        # reports the service unusable (ServiceSwitcher can fail over). No second error.
        assert [e.category for e in errors] == [ErrorCategory.CONNECTIVITY] * 4
        assert "unusable" in errors[-1].error
        # No answer held the pipeline for stop_frame_timeout_s (2 s here).
        assert max(held) < 0.5, held
        # Probing: capped back-off of 0.2 s, so recovery is noticed within about that.
        assert recovery < 1.0
        refused = sum(c.refused for c in emu.stats.connections)
        assert refused < 60
        reqs = emu.stats.requests
        assert len(reqs) == 1 and reqs[0].heard_words == LONG.split()
        assert h.words_out() == LONG.split()
        await nothing_left_open(emu)


async def test_outage_mid_call_answer_fails_fast_and_the_next_after_recovery_speaks():
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        tts = service(emu, standby_sockets=0)
        connected = connected_event(tts)
        h = await run(tts)
        try:
            await h.speak_answer(SHORT)
            await h.down.wait_for(lambda: h.stopped() >= 1, timeout=10)
            connected.clear()
            # The open socket dies and no new one can be opened for 0.6 s.
            emu.start_outage(duration_s=0.6, drop_open=True)
            first = emu.stats.requests[0]
            await emu.stats.wait_for(
                lambda s: s.connections[first.connection_id - 1].closed_by == "reset", 5
            )
            began = time.monotonic()
            await h.speak_answer(SHORT)
            await h.up.wait_for(lambda: len(h.errors()) >= 1, timeout=5)
            await h.down.wait_for(lambda: len(h.down.frames(LLMFullResponseEndFrame)) >= 2, 5)
            answer_ended = time.monotonic() - began
            # Recovery is found by the background probe, not by waiting for a new answer.
            await asyncio.wait_for(connected.wait(), 5)
            recovered = time.monotonic() - began
            await h.speak_answer(LONG)
            await h.down.wait_for(lambda: h.stopped() >= 2, timeout=10)
        finally:
            await h.stop()
        one_error(h, ErrorCategory.CONNECTIVITY)
        assert answer_ended < 0.5
        assert 0.6 <= recovered < 1.5
        last = emu.stats.requests[-1]
        assert last.heard_words == LONG.split()
        assert h.words_out()[-len(LONG.split()) :] == LONG.split()
        await nothing_left_open(emu)


# --------------------------------------------------------------------------- connections


async def test_connection_refused_at_start_is_reported_and_next_answer_connects(
    emu: GradiumEmulator, make_tts
):
    emu.fault_next_connection(Fault.REFUSE_CONNECTION, count=1)
    h = await start_pipeline(make_tts(standby_sockets=0))
    try:
        await h.up.wait_for(lambda: bool(h.errors()), timeout=5)
        await h.speak_answer(SHORT)
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
    finally:
        await h.stop()
    errors = h.errors()
    assert len(errors) == 1
    assert errors[0].category == ErrorCategory.CONNECTIVITY
    assert "cannot connect to Gradium" in errors[0].error and "503" in errors[0].error
    assert h.words_out() == SHORT.split()


async def test_socket_reset_mid_answer_continues_the_answer_on_a_new_socket(
    emu: GradiumEmulator, make_tts
):
    """The LLM is still streaming when the socket dies: no word is lost or repeated."""
    emu.fault_next_connection(Fault.RESET_MID_ANSWER)
    h = await start_pipeline(make_tts())
    try:
        await h.speak_answer(LONG, tokens_per_s=60)
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=20)
    finally:
        await h.stop()
    first, second = emu.stats.requests
    assert emu.stats.connections[first.connection_id - 1].closed_by == "reset"
    assert second.client_req_id == f"{first.client_req_id}#2"
    assert second.connection_id != first.connection_id and second.finished
    # What the second request got is exactly what the first never spoke in full, then the rest.
    heard = len(first.heard_words)
    assert first.words and heard < len(LONG.split())
    assert sent_words(second) == LONG.split()[heard:]
    assert h.words_out() == LONG.split()
    assert len(h.down.frames(TTSStartedFrame)) == 1 and h.stopped() == 1
    assert {f.context_id for f in h.audio_frames()} == {first.client_req_id}
    errors = h.errors()
    assert len(errors) == 1 and errors[0].category == ErrorCategory.CONNECTIVITY
    assert "re-sending" in errors[0].error


async def test_server_dropping_idle_sockets_causes_no_reconnect_storm(make_tts):
    async with GradiumEmulator(
        api_key="test-key", latency=FAST, idle_timeout_s=0.001, faults=[Fault.IDLE_TIMEOUT]
    ) as emulator:
        h = await start_pipeline(make_tts(url=emulator.ws_url))
        try:
            await emulator.stats.wait_for(
                lambda s: sum(c.closed_by == "server" for c in s.connections) >= 3, timeout=5
            )
            # The scenario is the passage of time: how many sockets does a second cost?
            await asyncio.sleep(1.0)
            opened = len(emulator.stats.connections)
        finally:
            await h.stop()
        assert opened <= 5
        assert not h.errors()


async def test_persistently_unreachable_gradium_reports_unusable_after_three_answers(make_tts):
    async with GradiumEmulator(
        api_key="test-key", latency=FAST, faults=[Fault.REFUSE_CONNECTION]
    ) as emulator:
        tts = make_tts(url=emulator.ws_url, probe_backoff_s=30.0)
        h = await start_pipeline(tts)
        try:
            for _ in range(3):
                await h.speak_answer(SHORT)
            await h.up.wait_for(lambda: len(h.errors()) >= 4, timeout=10)
        finally:
            await h.stop()
        errors = h.errors()
        # The start, then three answers that needed a socket: one attempt and one error each.
        assert len(errors) == 4
        assert all(e.category == ErrorCategory.CONNECTIVITY for e in errors)
        assert "unusable" in errors[-1].error and not tts.is_usable
        assert len(emulator.stats.connections) == 4


# --------------------------------------------------------------------------- barge-in under a fault


def generated_after(requests: list[RequestStats], at: float) -> float:
    """Seconds of audio Gradium generated for these requests after ``at``."""
    return sum(duration for r in requests for sent, duration in r.audio_chunks if sent > at)


async def test_barge_in_while_the_continuation_connects_sets_nothing_up():
    """A reset, then a slow handshake for the continuation, and a barge-in during it."""
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        emu.fault_next_connection(Fault.RESET_MID_ANSWER)
        h = await run(service(emu, standby_sockets=0))
        try:
            # Every socket opened from now on takes a second to connect.
            emu.latency = dataclasses.replace(emu.latency, handshake_s=1.0)
            # The whole answer is in before the reset; the barge-in comes at its report, well
            # inside the continuation's one-second handshake.
            await h.speak_answer(LONG)
            await h.up.wait_for(lambda: bool(h.errors()), timeout=10)  # the reset, reported
            interrupted_at = time.monotonic()
            await h.send(InterruptionFrame())
            # The continuation's socket opens after the barge-in; then the next answer uses it.
            await emu.stats.wait_for(lambda s: len(s.connections) >= 2, timeout=5)
            before = h.stopped()
            await h.speak_answer(SHORT)
            await h.down.wait_for(lambda: h.stopped() > before, timeout=10)
        finally:
            await h.stop()
        first, *rest = emu.stats.requests
        assert [r.client_req_id for r in rest] != [] and all(
            "#" not in r.client_req_id for r in rest
        )
        assert len(rest) == 1 and rest[0].finished  # only the next answer
        assert generated_after([first], interrupted_at) == 0.0
        one_error(h, ErrorCategory.CONNECTIVITY)
        await nothing_left_open(emu)


# --------------------------------------------------------------------------- the rest


@pytest.mark.parametrize("fault", [Fault.MALFORMED_JSON, Fault.UNKNOWN_MESSAGES])
async def test_odd_frames_lose_nothing(fault: Fault):
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        emu.fault_next_connection(fault)
        h = await speak_once(service(emu), LONG, timeout=10)
        assert h.errors() == []
        reqs = answer_requests(emu.stats)
        assert len(reqs) == 1 and reqs[0].heard_words == LONG.split()
        assert h.words_out() == LONG.split()
        await nothing_left_open(emu)


async def test_idle_timeout_costs_nothing():
    async with GradiumEmulator(
        api_key="test-key", latency=FAST, faults=[Fault.IDLE_TIMEOUT], idle_timeout_s=0.2
    ) as emu:
        h = await run(service(emu))
        try:
            await emu.stats.wait_for(
                lambda s: sum(c.closed_by == "server" for c in s.connections) >= 3, timeout=5
            )
            await h.speak_answer(LONG)
            await h.down.wait_for(lambda: h.stopped() >= 1, timeout=10)
        finally:
            await h.stop()
        assert h.errors() == []
        reqs = answer_requests(emu.stats)
        assert len(reqs) == 1 and reqs[0].heard_words == LONG.split()
        assert len(emu.stats.connections) <= 8
        await nothing_left_open(emu)


async def test_rejected_key_is_the_only_permanent_fault():
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        tts = service(emu, api_key="wrong-key")
        h = await run(tts)
        try:
            await h.up.wait_for(lambda: bool(h.errors()), timeout=5)
            await h.speak_answer(SHORT)
            await h.down.wait_for(lambda: bool(h.down.frames(LLMFullResponseEndFrame)), 5)
            opened = len(emu.stats.connections)
            await asyncio.sleep(0.5)  # longer than the probe back-off: nothing may probe
        finally:
            await h.stop()
        error = one_error(h, ErrorCategory.AUTHENTICATION)
        assert "GRADIUM_API_KEY" in error.error and not tts.is_usable
        assert len(emu.stats.connections) == opened <= 3
        assert emu.stats.requests == []
        await nothing_left_open(emu)


# --------------------------------------------------------------------------- bad input and secrets


def test_http_url_is_refused_at_construction():
    with pytest.raises(ValueError, match="wss://"):
        GradiumStreamingTTSService(api_key="k", url="http://127.0.0.1:1/api/speech/tts")


def capture_logs() -> tuple[list[str], Callable[[], None]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG")
    return lines, lambda: logger.remove(sink)


async def test_unsupported_language_warns_once_naming_the_supported_ones():
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        lines, stop_capture = capture_logs()
        try:
            settings = GradiumStreamingTTSService.Settings(language="xx")
            h = await run(service(emu, settings=settings))
            try:
                for i in (1, 2):
                    await h.speak_answer(SHORT)
                    await h.down.wait_for(lambda i=i: h.stopped() >= i, timeout=10)
            finally:
                await h.stop()
        finally:
            stop_capture()
        warnings = [line for line in lines if "'xx'" in line and "supported" in line]
        assert len(warnings) == 1
        assert "en, fr, de, es, pt" in warnings[0]
        assert all("json_config" not in r.setup for r in emu.stats.requests)


async def test_key_in_the_url_query_is_masked_in_errors_and_logs():
    secret = "SECRET-KEY-42"
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        emu.start_outage()
        lines, stop_capture = capture_logs()
        try:
            tts = service(emu, url=f"{emu.ws_url}?api_key={secret}")
            h = await run(tts)
            try:
                await h.up.wait_for(lambda: bool(h.errors()), timeout=5)
                await h.speak_answer(SHORT)
                await h.up.wait_for(lambda: len(h.errors()) >= 2, timeout=5)
            finally:
                await h.stop()
        finally:
            stop_capture()
        errors = h.errors()
        assert errors and all(secret not in e.error for e in errors)
        assert not [line for line in lines if secret in line]
