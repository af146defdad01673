"""What the user hears under each fault, with the service's default settings.

Usage::

    python -m benchmarks.faults          # about 90 s; prints README's fault table

Each row injects one fault with the in-process emulator (default latency model, generation at
4x real time to keep the run short), drives the service with its default settings
(``stop_frame_timeout_s`` 3 s, ``first_audio_timeout_s`` 10 s, probing back-off 0.5 s doubling to 5 s)
in a real pipeline with Pipecat's assistant context aggregator downstream, and reads from the
emulator's records which source words were heard in full. "Silence" is the longest gap a
listener would hear mid-answer: audio played from its first chunk on, at real time.
"""

import sys

from loguru import logger

logger.remove()
logger.add(sys.stderr, level="WARNING", filter=lambda r: r["name"].startswith("benchmarks"))

import asyncio  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from pipecat.frames.frames import InterruptionFrame, LLMFullResponseEndFrame  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.processors.aggregators.llm_response_universal import (  # noqa: E402
    LLMAssistantAggregator,
)

from benchmarks.measure import silences  # noqa: E402
from benchmarks.traces import ANSWER_FIRST_3, ANSWER_FIRST_6  # noqa: E402
from pipecat_gradium import GradiumStreamingTTSService  # noqa: E402
from pipecat_gradium.emulator import Fault, GradiumEmulator, LatencyModel  # noqa: E402
from pipecat_gradium.emulator.stats import RequestStats  # noqa: E402
from pipecat_gradium.testing import (  # noqa: E402
    PipelineHarness,
    answer_requests,
    heard_once,
    start_pipeline,
)

TOKENS_PER_S = 33.0
LATENCY = LatencyModel(speed=4.0)
TAGGED = (
    'Wait<break time="100ms"/>now, we will check the train times first, then the weather for '
    "the weekend, and after that I can book the two seats by the window for you."
)


@dataclass
class Row:
    """One fault's figures."""

    fault: str
    heard: str = ""
    silence: str = ""
    errors: str = ""
    recovery: str = ""
    notes: list[str] = field(default_factory=list)


def silence_s(requests: list[RequestStats]) -> float:
    """Longest mid-answer gap a listener hears, playing the answer's audio at real time."""
    return max(silences(sorted(c for r in requests for c in r.audio_chunks)), default=0.0)


def errors_text(h: PipelineHarness) -> str:
    errors = h.errors()
    if not errors:
        return "0"
    kinds: dict[str, int] = {}
    for e in errors:
        name = e.category.name if e.category else "NONE"
        kinds[name] = kinds.get(name, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in kinds.items())


def ended(h: PipelineHarness) -> int:
    return len(h.down.frames(LLMFullResponseEndFrame))


async def scenario(
    name: str,
    drive: Callable[[PipelineHarness, GradiumEmulator, GradiumStreamingTTSService, Row], Awaitable],
    *,
    emulator: dict | None = None,
    service: dict | None = None,
    before: Callable[[GradiumEmulator], None] | None = None,
) -> Row:
    row = Row(name)
    async with GradiumEmulator(api_key="k", latency=LATENCY, **(emulator or {})) as emu:
        if before:
            before(emu)
        options = {"api_key": "k", "url": emu.ws_url, **(service or {})}
        tts = GradiumStreamingTTSService(**options)
        context = LLMContext()
        h = await start_pipeline(tts, downstream=[LLMAssistantAggregator(context)])
        try:
            await drive(h, emu, tts, row)
        finally:
            await h.stop()
        row.errors = row.errors or errors_text(h)
        said = " ".join(
            str(m.get("content", ""))
            for m in context.get_messages()
            if m.get("role") == "assistant"
        ).split()
        row.notes.append(f"context {len(said)} words")
    print(f"{name}: {row}", file=sys.stderr, flush=True)
    return row


def heard_row(row: Row, requests: list[RequestStats], text: str) -> None:
    words, repeats = heard_once(requests)
    total = len(text.replace('<break time="100ms"/>', " ").split())
    row.heard = f"{len(words)}/{total} words" + (f", {repeats} repeated" if repeats else "")
    row.silence = f"{silence_s(requests):.2f} s"
    if len(requests) > 1:
        cut, cont = requests[-2], requests[-1]
        if cut.audio_chunks and cont.first_audio_at:
            row.recovery = f"{(cont.first_audio_at - cut.audio_chunks[-1][0]) * 1000:.0f} ms"


async def one_answer(h: PipelineHarness, text: str = ANSWER_FIRST_6) -> None:
    before = h.stopped()
    await h.speak_answer(text, tokens_per_s=TOKENS_PER_S, ttft_s=0.3)
    await h.down.wait_for(lambda: h.stopped() > before, timeout=60)


async def baseline(h, emu, tts, row):
    await one_answer(h)
    heard_row(row, answer_requests(emu.stats), ANSWER_FIRST_6)


async def slow_start(h, emu, tts, row):
    emu.fault_next_request(Fault.SLOW_FIRST_AUDIO, count=3)
    for _ in range(3):
        await one_answer(h, ANSWER_FIRST_3)
    await one_answer(h)
    heard = [len(heard_once(answer_requests(emu.stats, i))[0]) for i in range(4)]
    first = emu.stats.requests[0]
    row.heard = f"{'/'.join(map(str, heard))} words of 40 (3 slow answers, then a fast one)"
    late = first.first_audio_at - first.text_times[0]
    row.silence = f"first audio {late:.1f} s after the first phrase"
    row.recovery = "usable" if tts.is_usable else "UNUSABLE"


async def slow_past_limit(h, emu, tts, row):
    emu.fault_next_request(Fault.SLOW_FIRST_AUDIO)
    began = time.monotonic()
    await h.speak_answer(ANSWER_FIRST_3, tokens_per_s=TOKENS_PER_S)
    await h.up.wait_for(lambda: bool(h.errors()), timeout=30)
    failed = time.monotonic() - began
    await h.down.wait_for(lambda: ended(h) >= 1, timeout=30)
    await one_answer(h)
    nxt = answer_requests(emu.stats, 1)
    row.heard = f"0/40, then the next answer {len(heard_once(nxt)[0])}/40"
    row.recovery = f"error {failed:.1f} s after the answer began; next answer speaks"


async def request_error_streaming(h, emu, tts, row):
    emu.fault_next_request(Fault.REQUEST_ERROR)
    await one_answer(h)
    heard_row(row, answer_requests(emu.stats), ANSWER_FIRST_6)


async def request_error_ended(h, emu, tts, row):
    emu.fault_next_request(Fault.REQUEST_ERROR)
    hold = emu.hold_after_chunks(emu.fault_after_chunks - 1)
    before = h.stopped()
    # A fast LLM: the whole answer is in before the error (the hold only orders the two).
    await h.speak_answer(ANSWER_FIRST_6, tokens_per_s=2000)
    await asyncio.wait_for(hold.reached.wait(), 30)
    await emu.stats.wait_for(lambda s: s.requests[0].eos_at is not None, 30)
    hold.release()
    await h.down.wait_for(lambda: h.stopped() > before, timeout=60)
    heard_row(row, answer_requests(emu.stats), ANSWER_FIRST_6)


def lost(fault: Fault, text: str = ANSWER_FIRST_6):
    async def drive(h, emu, tts, row):
        emu.fault_next_request(fault)
        await one_answer(h, text)
        heard_row(row, answer_requests(emu.stats), text)

    return drive


async def session_limit(h, emu, tts, row):
    await one_answer(h)
    heard_row(row, answer_requests(emu.stats), ANSWER_FIRST_6)


async def cut_short(h, emu, tts, row):
    await one_answer(h)
    reqs = answer_requests(emu.stats)
    words, _ = heard_once(reqs)
    row.heard = f"{len(words)}/40 words over {len(reqs)} attempts, then cut"
    row.silence = f"{sum(r.audio_s for r in reqs):.2f} s heard"


async def outage(h, emu, tts, row):
    # Gradium refuses connections (HTTP 503) from before the start, for 11 s.
    began = time.monotonic()
    connected = asyncio.Event()

    @tts.event_handler("on_connected")
    async def on_connected(_service):
        connected.set()

    held = []
    for _ in range(3):
        n = ended(h)
        await h.speak_answer(ANSWER_FIRST_3, tokens_per_s=TOKENS_PER_S)
        t = time.monotonic()
        await h.down.wait_for(lambda n=n: ended(h) > n, timeout=30)
        held.append(time.monotonic() - t)
        await asyncio.sleep(1.0)
    unusable = not tts.is_usable
    await asyncio.wait_for(connected.wait(), 60)
    back = time.monotonic() - began
    await one_answer(h)
    reqs = answer_requests(emu.stats)
    row.heard = f"3 answers lost (each ended {max(held) * 1000:.0f} ms after its text), "
    row.heard += f"then {len(heard_once(reqs)[0])}/40"
    refused = sum(c.refused for c in emu.stats.connections)
    row.recovery = (
        f"unusable after 3 answers: {unusable}; back in service {back - 11:.1f} s after the "
        f"outage ended; {refused} refused connections in {back:.0f} s"
    )


async def capped(h, emu, tts, row):
    # A second call in the same process: both share the standby sockets and the plan's cap.
    other = await start_pipeline(GradiumStreamingTTSService(api_key="k", url=emu.ws_url))
    try:
        for text in (ANSWER_FIRST_6, ANSWER_FIRST_3, ANSWER_FIRST_6):
            for call in (h, other):
                before = call.stopped()
                await call.speak_answer(text, tokens_per_s=TOKENS_PER_S, ttft_s=0.3)
                await call.down.wait_for(lambda c=call, b=before: c.stopped() > b, timeout=60)
    finally:
        await other.stop()
    answers: dict[str, list] = {}
    for r in emu.stats.requests:
        if not r.error:
            answers.setdefault(r.client_req_id.partition("#")[0], []).append(r)
    texts = {" ".join(t.split()) for t in (ANSWER_FIRST_6, ANSWER_FIRST_3)}
    whole = sum(" ".join(heard_once(reqs)[0]) in texts for reqs in answers.values())
    row.heard = f"{whole}/6 answers whole (2 calls x 3 answers)"
    row.errors = f"{errors_text(h)} + {errors_text(other)} (one per call)"
    row.recovery = (
        f"{len(emu.stats.connections)} connection attempts, {emu.stats.cap_refusals} refused "
        f"for the cap, peak {emu.stats.peak_sessions} sessions"
    )


async def unknown_voice(h, emu, tts, row):
    for _ in range(2):
        n = ended(h)
        await h.speak_answer(ANSWER_FIRST_3, tokens_per_s=TOKENS_PER_S)
        await h.down.wait_for(lambda n=n: ended(h) > n, timeout=30)
    setups = sum(r.voice_id == "no-such-voice" for r in emu.stats.requests)
    row.heard = "nothing, 2 answers (the voice is named once)"
    row.recovery = f"{setups} setups with that voice; {len(emu.stats.voice_lookups)} look-up"


async def no_worker_absorbed(h, emu, tts, row):
    emu.no_workers_for(1.5)
    await one_answer(h)
    heard_row(row, answer_requests(emu.stats), ANSWER_FIRST_6)
    first = emu.stats.requests[0]
    row.recovery = f"setup waited {first.worker_wait_s:.1f} s of its retry_for_s 2 s"


async def no_worker_failed(h, emu, tts, row):
    emu.fault_next_request(Fault.NO_WORKER)
    await one_answer(h)
    reqs = answer_requests(emu.stats)
    heard_row(row, reqs, ANSWER_FIRST_6)
    row.recovery = f"the setup failed after {reqs[0].worker_wait_s or 0:.1f} s; continued at once"


async def stalled(h, emu, tts, row):
    emu.fault_next_request(Fault.STALL_MID_ANSWER)
    await one_answer(h)
    reqs = answer_requests(emu.stats)
    heard_row(row, reqs, ANSWER_FIRST_6)
    if len(reqs) > 1 and reqs[0].stalled_at is not None:
        row.recovery = f"continued {reqs[1].setup_at - reqs[0].stalled_at:.1f} s after the stall"


async def barge_in_while_continuing(h, emu, tts, row):
    emu.fault_next_request(Fault.RESET_MID_ANSWER)
    emu.latency = dataclasses.replace(emu.latency, handshake_s=1.0)
    # A fast LLM: the whole answer is in before the reset; the barge-in comes at its report.
    await h.speak_answer(ANSWER_FIRST_6, tokens_per_s=2000)
    await h.up.wait_for(lambda: bool(h.errors()), timeout=30)
    at = time.monotonic()
    await h.send(InterruptionFrame())
    await emu.stats.wait_for(lambda s: len(s.connections) >= 2, timeout=30)
    await one_answer(h, ANSWER_FIRST_3)
    first_id = emu.stats.requests[0].client_req_id
    mine = [r for r in emu.stats.requests if r.client_req_id.startswith(first_id)]
    after = [r for r in mine if r.setup_at > at]
    generated = sum(d for r in mine for t, d in r.audio_chunks if t > at)
    row.heard = f"the next answer {len(heard_once(answer_requests(emu.stats, 1))[0])}/40"
    row.recovery = (
        f"{len(after)} setups for the interrupted answer after the barge-in; "
        f"{generated:.2f} s generated for it after the barge-in"
    )


async def rejected_key(h, emu, tts, row):
    await h.up.wait_for(lambda: bool(h.errors()), timeout=10)
    await h.speak_answer(ANSWER_FIRST_3, tokens_per_s=TOKENS_PER_S)
    await h.down.wait_for(lambda: ended(h) >= 1, timeout=30)
    opened = len(emu.stats.connections)
    await asyncio.sleep(2.0)
    row.heard = "nothing (permanent)"
    row.recovery = f"{len(emu.stats.connections) - opened} connections after the error"


async def main() -> list[Row]:
    rows = [
        await scenario("none (baseline)", baseline),
        await scenario("first audio 4.8 s late (> 3 s stop-frame timeout)", slow_start, emulator={"slow_first_audio_s": 4.8}),
        await scenario("first audio 12 s late (> 10 s limit)", slow_past_limit, emulator={"slow_first_audio_s": 12.0}),
        await scenario("request error 1011, LLM still streaming", request_error_streaming),
        await scenario("request error 1011, LLM already ended", request_error_ended),
        await scenario("socket error 1011 + close", lost(Fault.ERROR_MID_ANSWER)),
        await scenario("TCP reset mid-answer", lost(Fault.RESET_MID_ANSWER)),
        await scenario("TCP reset inside a word", lost(Fault.RESET_MID_WORD)),
        await scenario("reset where a tag touches a word", lost(Fault.RESET_MID_WORD, TAGGED), emulator={"fault_after_chunks": 11}),
        await scenario("session limit mid-answer", session_limit, emulator={"session_limit_s": 2.5}, before=lambda emu: emu.fault_next_connection(Fault.SESSION_LIMIT)),
        await scenario("every socket reset (no continuation left)", cut_short, emulator={"faults": [Fault.RESET_MID_ANSWER], "fault_after_chunks": 8}),
        await scenario("Gradium unreachable (HTTP 503) at start, back after 11 s", outage, before=lambda emu: emu.start_outage(11.0)),
        await scenario("malformed frame", lost(Fault.MALFORMED_JSON)),
        await scenario("rejected key", rejected_key, service={"api_key": "wrong"}),
        await scenario("plan cap of 2 sessions (open sockets), 2 calls in one process", capped, emulator={"max_sessions": 2}),
        await scenario("unknown voice id (error 1011 after the setup)", unknown_voice, emulator={"voices": ["YTpq7expH9539ERJ"]}, service={"settings": GradiumStreamingTTSService.Settings(voice="no-such-voice")}),
        await scenario("no worker for 1.5 s at the setup (within retry_for_s)", no_worker_absorbed),
        await scenario("no worker longer than retry_for_s (1011 before audio)", no_worker_failed, emulator={"no_worker_s": 5.0}),
        await scenario("Gradium stalls mid-answer, socket open", stalled, emulator={"fault_after_chunks": 8}),
        await scenario("barge-in while the continuation's socket connects (1 s handshake)", barge_in_while_continuing, service={"standby_sockets": 0}),
    ]  # fmt: skip
    return rows


def render(rows: list[Row]) -> str:
    lines = [
        "| fault | what the user hears | longest silence | errors | recovery | context |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.fault} | {r.heard} | {r.silence} | {r.errors} | {r.recovery} "
            f"| {'; '.join(r.notes)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(asyncio.run(main())))
