"""The fault matrix: every fault a deployment meets, and what the user hears under it.

Each test injects one fault with the emulator, drives the real service in a real pipeline (with
Pipecat's real assistant context aggregator downstream where the context is asserted), and
checks from the emulator's per-request records that every source word was heard exactly once
(at most one repeated at a cut), that one error with the right category reported the fault,
that recovery took a bounded time and a bounded number of connections, and that nothing was
left open. Every wait is small here (timeouts and back-offs are constructor options).

Set ``FAULT_MATRIX_REPORT=<path>`` to write the figures measured (README's fault table).
"""

import asyncio
import dataclasses
import json
import os
import re
import time
from collections.abc import Callable

import pytest
from loguru import logger
from pipecat.frames.frames import (
    LLMFullResponseEndFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.utils.errors import ErrorCategory

from pipecat_gradium import GradiumStreamingTTSService
from pipecat_gradium.emulator import Fault, GradiumEmulator
from pipecat_gradium.emulator.stats import RequestStats
from pipecat_gradium.testing import PipelineHarness, answer_requests, heard_once, start_pipeline

from .conftest import FAST, build_service

pytestmark = pytest.mark.timeout(30)

LONG = (
    "Let me walk you through the whole plan. First we pack the car early in the morning, "
    "then we drive north along the coast for about three hours, stopping twice for coffee "
    "and once for lunch at the little harbour town you liked last summer."
)
SHORT = "Sure thing. The forecast for tomorrow is sunny, with a light breeze."
TAGGED = 'Wait<break time="100ms"/>now, we will check the train times and then the weather.'

FIGURES: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def report_figures():
    """Write the figures measured when FAULT_MATRIX_REPORT names a file."""
    yield
    path = os.environ.get("FAULT_MATRIX_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(FIGURES, f, indent=2)


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


def stopped(h: PipelineHarness) -> int:
    return len(h.down.frames(TTSStoppedFrame))


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
        await h.down.wait_for(lambda: stopped(h) >= 1, timeout=timeout)
    finally:
        await h.stop()
    return h


def words_out(h: PipelineHarness, context_id: str | None = None) -> list[str]:
    """Words the service passed on as heard (TTSTextFrame), i.e. what the context gets."""
    return [
        f.text
        for f in h.down.frames(TTSTextFrame)
        if context_id is None or f.context_id == context_id
    ]


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


def record_continuation(
    name: str,
    emu: GradiumEmulator,
    first: RequestStats,
    second: RequestStats,
    words: list[str],
    repeats: int,
) -> None:
    """Assert the silence at the cut stayed under a second; keep the row's figures."""
    gap = gap_s(first, second)
    assert gap < 1.0
    FIGURES[name] = {
        "words_heard": f"{len(words)}/{len(LONG.split())}",
        "repeated": repeats,
        "gap_s": round(gap, 3),
        "connections": len(emu.stats.connections),
    }


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
                await h.down.wait_for(lambda i=i: stopped(h) >= i, timeout=10)
        finally:
            await h.stop()
        assert h.errors() == []
        assert tts.is_usable
        for i, text in enumerate([SHORT, SHORT, SHORT, LONG]):
            reqs = answer_requests(emu.stats, i)
            assert len(reqs) == 1 and reqs[0].finished
            assert reqs[0].heard_words == text.split()
        assert [r.faults for r in emu.stats.requests] == [["slow_first_audio"]] * 3 + [[]]
        assert words_out(h) == (" ".join([SHORT] * 3 + [LONG])).split()
        assert len(h.down.frames(TTSStartedFrame)) == 4
        first = emu.stats.requests[0]
        assert first.first_audio_at and first.eos_at
        FIGURES["slow_first_audio_within_limit"] = {
            "first_audio_after_end_s": round(first.first_audio_at - first.eos_at, 2),
            "words_heard": f"{len(first.heard_words)}/{len(SHORT.split())}",
            "errors": 0,
        }
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
            await h.down.wait_for(lambda: stopped(h) >= 1, timeout=5)
            slow = emu.stats.requests[0]
            # The request is ended on Gradium's side: its socket closed, no audio generated.
            await emu.stats.wait_for(
                lambda s: s.connections[slow.connection_id - 1].closed_by == "client", 5
            )
            await h.speak_answer(LONG)
            await h.down.wait_for(lambda: stopped(h) >= 2, timeout=10)
        finally:
            await h.stop()
        error = one_error(h, ErrorCategory.SERVER)
        assert "first_audio_timeout_s" in error.error
        assert 0.5 <= failed_after < 1.5
        assert slow.audio_s == 0 and not slow.finished
        nxt = answer_requests(emu.stats, 1)
        assert len(nxt) == 1 and nxt[0].heard_words == LONG.split()
        assert words_out(h) == LONG.split()
        # The context holds what was heard: nothing of the first answer, all of the second.
        assert assistant_text(context) == LONG
        assert tts.is_usable
        FIGURES["slow_first_audio_past_limit"] = {
            "error_after_s": round(failed_after, 2),
            "limit_s": 0.5,
            "next_answer_words_heard": f"{len(nxt[0].heard_words)}/{len(LONG.split())}",
        }
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
            await h.down.wait_for(lambda: stopped(h) >= 1, timeout=10)
        finally:
            await h.stop()
        assert h.errors() == []
        expected = "Let me check the weather for you. It is sunny and warm today.".split()
        assert answer_requests(emu.stats)[0].heard_words == expected
        assert words_out(h) == expected
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
        assert words_out(h) == LONG.split()
        assert len(h.down.frames(TTSStartedFrame)) == 1 and stopped(h) == 1
        error = one_error(h, ErrorCategory.SERVER)
        assert "re-sending" in error.error
        record_continuation("request_error_llm_streaming", emu, first, second, words, repeats)
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
            await h.down.wait_for(lambda: stopped(h) >= 1, timeout=15)
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
        assert words_out(h) == LONG.split()
        one_error(h, ErrorCategory.SERVER)
        record_continuation("request_error_llm_ended", emu, first, second, words, repeats)
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
        assert words_out(h) == LONG.split()
        assert assistant_text(context) == LONG
        one_error(h, category)
        # The first socket, two standby, and the standby refilled after the continuation took one.
        assert len(emu.stats.connections) <= 5
        record_continuation(f"lost_socket_{fault.value}", emu, first, second, words, repeats)
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
        FIGURES["reset_tag_touching_word"] = {
            "words_heard": f"{len(words)}/{len(expected)}",
            "repeated": repeats,
        }
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
        assert words_out(h) == LONG.split()
        one_error(h, ErrorCategory.CONNECTIVITY)
        FIGURES["session_limit"] = {
            "words_heard": f"{len(words)}/{len(LONG.split())}",
            "repeated": repeats,
            "gap_s": round(gap_s(reqs[0], reqs[1]), 3),
        }
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
            await h.down.wait_for(lambda: stopped(h) >= 1, timeout=15)
        finally:
            await h.stop()
        reqs = answer_requests(emu.stats)
        assert len(reqs) == 3, "attempts are bounded"
        words, repeats = heard_once(reqs)
        assert 0 < len(words) < len(LONG.split())
        assert words == LONG.split()[: len(words)]
        # The context holds exactly the words heard: Pipecat does not complete the rest.
        assert assistant_text(context).split() == words
        assert words_out(h) == words
        errors = h.errors()
        assert [e.category for e in errors] == [ErrorCategory.CONNECTIVITY] * 3
        assert "cut short" in errors[-1].error
        heard_s = sum(r.audio_s for r in reqs)
        FIGURES["cut_no_continuation"] = {
            "audio_heard_s": round(heard_s, 2),
            "context_words": len(words),
            "answer_words": len(LONG.split()),
            "errors": len(errors),
        }
        await nothing_left_open(emu)


# --------------------------------------------------------------------------- outages


async def test_outage_at_start_ends_answers_at_once_then_recovers_by_itself():
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        emu.start_outage()
        tts = service(emu, stop_frame_timeout_s=2.0)
        connected = asyncio.Event()

        @tts.event_handler("on_connected")
        async def on_connected(_service):
            connected.set()

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
            await h.down.wait_for(lambda: stopped(h) >= 1, timeout=10)
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
        assert words_out(h) == LONG.split()
        FIGURES["outage_at_start"] = {
            "answer_end_s_max": round(max(held), 3),
            "errors": len(errors),
            "recovery_after_end_s": round(recovery, 3),
            "refused_connections": refused,
            "first_answer_after_words_heard": f"{len(reqs[0].heard_words)}/{len(LONG.split())}",
        }
        await nothing_left_open(emu)


async def test_outage_mid_call_answer_fails_fast_and_the_next_after_recovery_speaks():
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emu:
        tts = service(emu, standby_sockets=0)
        connected = asyncio.Event()

        @tts.event_handler("on_connected")
        async def on_connected(_service):
            connected.set()

        h = await run(tts)
        try:
            await h.speak_answer(SHORT)
            await h.down.wait_for(lambda: stopped(h) >= 1, timeout=10)
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
            await h.down.wait_for(lambda: stopped(h) >= 2, timeout=10)
        finally:
            await h.stop()
        one_error(h, ErrorCategory.CONNECTIVITY)
        assert answer_ended < 0.5
        assert 0.6 <= recovered < 1.5
        last = emu.stats.requests[-1]
        assert last.heard_words == LONG.split()
        assert words_out(h)[-len(LONG.split()) :] == LONG.split()
        FIGURES["outage_mid_call"] = {
            "answer_end_s": round(answer_ended, 3),
            "outage_s": 0.6,
            "recovered_after_s": round(recovered, 3),
            "errors": len(h.errors()),
        }
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
        assert words_out(h) == LONG.split()
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
            await h.down.wait_for(lambda: stopped(h) >= 1, timeout=10)
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


# --------------------------------------------------------------------------- fixed while here


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
                    await h.down.wait_for(lambda i=i: stopped(h) >= i, timeout=10)
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


# --------------------------------------------------------------------------- heard words (pure)


def request_with(texts: list[str], words: list[tuple[str, float, float]], audio_s: float):
    from pipecat_gradium.attempt import Attempt

    req = Attempt(
        "r", None, number=1, gradium_rate=24000, output_rate=24000,  # type: ignore[arg-type]
    )  # fmt: skip
    req.texts = list(texts)
    for w in words:
        req.add_word(*w)
    req.audio_s = audio_s
    return req


@pytest.mark.parametrize(
    ("texts", "heard", "rest"),
    [
        (['Wait<break time="100ms"/>now, we will go. '], 2, "we will go. "),
        (["The forecast <flush>", "for tomorrow  is\nsunny. "], 3, "tomorrow  is\nsunny. "),
        (["one<flush>two three "], 1, "two three "),
        (['a <break time="1s"/> b c '], 1, "b c "),
        (["all of it. "], 3, ""),
    ],
)
def test_unspoken_text_counts_words_the_way_gradium_splits_them(texts, heard, rest):
    from pipecat_gradium.alignment import source_words

    # Gradium reports the words it speaks (the alignment maps them back onto the source).
    spoken = [w.text for w in source_words("".join(texts))][:heard]
    words = [(w, i * 0.5, i * 0.5 + 0.4) for i, w in enumerate(spoken)]
    req = request_with(texts, words, audio_s=heard * 0.5)
    assert req.heard == heard
    assert req.unspoken_text() == rest


def test_a_word_counts_as_heard_only_when_its_audio_has_fully_arrived():
    req = request_with(["Hello there friend. "], [("Hello", 0.0, 0.3), ("there", 0.3, 0.6)], 0.45)
    assert req.heard == 1
    assert req.take_heard() == [("Hello", 0.0)]
    assert req.unspoken_text() == "there friend. "
    req.audio_s = 0.6
    assert req.take_heard() == [("there", 0.3)]
