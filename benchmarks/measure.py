"""The scenarios: answer series (TTFA, messages, CPU), barge-in, concurrent sessions.

Every scenario runs real Pipecat pipelines ``[recorder, service, recorder]`` from
:mod:`pipecat_gradium.testing` against the emulator in its own process. Times are
``time.monotonic()`` in both processes (CLOCK_MONOTONIC is system-wide on Linux; checked at start).
"""

import asyncio
import random
import re
import resource
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)

from pipecat_gradium.testing import PipelineHarness, start_pipeline

from .clients import SAMPLE_RATE, ClientSpec
from .emulator import EmulatorProcess
from .traces import Trace

TAG = re.compile(r"<[^>]*>")
#: A word, for counting words across clients that space their messages differently.
WORD = re.compile(r"\w+")
ANSWER_TIMEOUT_S = 30.0


def cpu_s() -> float:
    """This process's CPU time (user + system), in seconds."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def audio_s(frame: TTSAudioRawFrame) -> float:
    """Seconds of audio in a frame."""
    return len(frame.audio) / 2 / frame.num_channels / frame.sample_rate


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class Answer:
    """One streamed answer and what the pipeline did with it."""

    trace: str
    started_at: float = 0.0  # LLMFullResponseStartFrame queued
    first_token_at: float | None = None
    first_audio_at: float | None = None
    context_id: str | None = None
    end_at: float | None = None
    audio_s: float = 0.0
    record_index: int = 0  # index into the downstream records when it started
    stopped: asyncio.Event = field(default_factory=asyncio.Event)  # its TTSStoppedFrame left

    @property
    def ttfa(self) -> float | None:
        """First LLMTextFrame queued -> first TTSAudioRawFrame out of the service."""
        if self.first_token_at is None or self.first_audio_at is None:
            return None
        return self.first_audio_at - self.first_token_at


class Session:
    """A running pipeline plus per-answer bookkeeping of the frames leaving the service."""

    def __init__(self, harness: PipelineHarness):
        """Watch ``harness``'s downstream recorder.

        Args:
            harness: The running pipeline.
        """
        self.h = harness
        self.answers: list[Answer] = []
        self.ignore_contexts: set[str] = set()
        self.audio_arrivals: dict[str, list[tuple[float, float]]] = {}
        self.on_audio: Any = None
        harness.down.on_frame = self._on_frame

    @classmethod
    async def start(cls, spec: ClientSpec, url: str) -> "Session":
        """Start a pipeline running ``spec``'s client."""
        return cls(await start_pipeline(spec.make(url), sample_rate=SAMPLE_RATE))

    def _on_frame(self, frame: Frame) -> None:
        now = time.monotonic()
        if isinstance(frame, TTSStoppedFrame):
            # Noted here, once per frame: scanning the records at every frame cost more CPU
            # at 96 sessions than the client under test.
            if self.answers and frame.context_id == self.answers[-1].context_id:
                self.answers[-1].stopped.set()
            return
        if not isinstance(frame, TTSAudioRawFrame):
            return
        ctx = frame.context_id or ""
        self.audio_arrivals.setdefault(ctx, []).append((now, audio_s(frame)))
        if ctx in self.ignore_contexts or not self.answers:
            return
        answer = self.answers[-1]
        if answer.first_token_at is None:
            return
        if answer.context_id is None:
            answer.context_id = ctx
            answer.first_audio_at = now
        if ctx == answer.context_id:
            answer.audio_s += audio_s(frame)
            if self.on_audio is not None:
                self.on_audio(answer)

    async def stream(self, trace: Trace, tokens: list[str] | None = None) -> Answer:
        """Stream one answer (start frame, TTFT, paced tokens, end frame).

        Cancel the task running it to model an LLM cut off by a barge-in: no end frame then.

        Args:
            trace: Text and pace.
            tokens: Tokens to send instead of the trace's.

        Returns:
            The answer's record (its audio fields fill in as frames arrive).
        """
        answer = Answer(trace.name, started_at=time.monotonic())
        answer.record_index = len(self.h.down.records)
        self.answers.append(answer)
        await self.h.send(LLMFullResponseStartFrame())
        # Tokens are due at fixed times, as from an LLM on the network: a busy event loop
        # delays a token but not the ones after it (a sleep per token would add up the lag
        # and starve Gradium of text, unlike a real LLM stream).
        first_due = time.monotonic() + trace.ttft_s
        for i, token in enumerate(tokens if tokens is not None else trace.tokens):
            delay = first_due + i / trace.tokens_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if answer.first_token_at is None:
                answer.first_token_at = time.monotonic()
            await self.h.send(LLMTextFrame(token))
        await self.h.send(LLMFullResponseEndFrame())
        return answer

    async def speak(self, trace: Trace) -> Answer:
        """Stream an answer and wait until all its audio has left the service."""
        answer = await self.stream(trace)
        await asyncio.wait_for(answer.stopped.wait(), ANSWER_TIMEOUT_S)
        answer.end_at = time.monotonic()
        return answer

    async def stop(self) -> None:
        """End the pipeline."""
        await self.h.stop()


def spoken_text(request: dict[str, Any]) -> str:
    """The text an emulator request was sent, tags removed."""
    return TAG.sub("", "".join(request["texts"]))


def requests_between(stats: dict[str, Any], start: float, end: float) -> list[dict[str, Any]]:
    """Emulator requests whose setup arrived in ``[start, end)``."""
    return [r for r in stats["requests"] if start <= r["setup_at"] < end]


def split_words(texts: list[str]) -> int:
    """Messages that end inside a word: last char alphanumeric and the next starts so."""
    return sum(
        1 for a, b in zip(texts, texts[1:]) if a and b and a[-1].isalnum() and b[0].isalnum()
    )


def message_figures(reqs: list[dict[str, Any]]) -> dict[str, Any]:
    """Messages per answer for the requests of one answer."""
    texts = [t for r in reqs for t in r["texts"]]
    return {
        "messages": len(texts),
        "split_words": sum(split_words(r["texts"]) for r in reqs),
        "not_at_boundary": sum(
            1 for r in reqs for t in r["texts"][:-1] if not (t[-1:].isspace() or t.endswith(">"))
        ),
        "requests": len(reqs),
        "sockets": len({r["connection_id"] for r in reqs}),
        "chars": sum(len(TAG.sub("", t)) for t in texts),
        "flushes": sum(t.count("<flush>") for t in texts),
        "first_messages": texts[:3],
    }


# --------------------------------------------------------------------------- series


async def run_series(
    emu: EmulatorProcess, spec: ClientSpec, plan: list[tuple[Trace, int]], gap_s: float = 0.2
) -> dict[str, Any]:
    """Answers one after another in one pipeline; TTFA, messages and CPU per trace.

    Args:
        emu: The emulator.
        spec: The client.
        plan: Traces and how many answers of each (after one warm-up answer).
        gap_s: Pause between answers.

    Returns:
        Per-trace figures.
    """
    await emu.reset()
    session = await Session.start(spec, emu.ws_url)
    out: dict[str, Any] = {}
    try:
        await session.speak(plan[0][0])  # warm-up, not counted
        await asyncio.sleep(gap_s)
        for trace, n in plan:
            answers: list[Answer] = []
            cpu0 = cpu_s()
            for _ in range(n):
                answers.append(await session.speak(trace))
                await asyncio.sleep(gap_s)
            cpu = cpu_s() - cpu0
            out[trace.name] = {"answers": answers, "cpu_s": cpu}
    finally:
        await session.stop()
    stats = await emu.stats()
    result: dict[str, Any] = {}
    for name, data in out.items():
        answers = data["answers"]
        ttfas = [a.ttfa for a in answers if a.ttfa is not None]
        msgs = []
        for a in answers:
            assert a.end_at is not None
            msgs.append(message_figures(requests_between(stats, a.started_at, a.end_at)))
        audio = sum(a.audio_s for a in answers)
        result[name] = {
            "n": len(answers),
            "ttfa_s": ttfas,
            "ttfa_median_s": statistics.median(ttfas) if ttfas else None,
            "ttfa_p95_s": pct(ttfas, 95),
            "audio_s": audio,
            "cpu_s": data["cpu_s"],
            "cpu_per_audio_s": data["cpu_s"] / audio if audio else None,
            "messages_per_answer": statistics.mean(m["messages"] for m in msgs),
            "split_words_per_answer": statistics.mean(m["split_words"] for m in msgs),
            "not_at_boundary_per_answer": statistics.mean(m["not_at_boundary"] for m in msgs),
            "chars_per_answer": statistics.mean(m["chars"] for m in msgs),
            "flushes_per_answer": statistics.mean(m["flushes"] for m in msgs),
            "sockets_per_answer": statistics.mean(m["sockets"] for m in msgs),
            "first_messages": msgs[0]["first_messages"] if msgs else [],
        }
    return result


# --------------------------------------------------------------------------- barge-in


#: A token of the interrupted answer still on its way when the barge-in overtakes it.
IN_FLIGHT_TOKEN = " Then we"


@dataclass
class BargeIn:
    """One barge-in round."""

    interrupted: Answer
    interrupt_at: float = 0.0
    heard_s: float = 0.0
    next_answer: Answer | None = None
    stale: list[str] = field(default_factory=list)


async def run_barge_in(
    emu: EmulatorProcess,
    spec: ClientSpec,
    trace: Trace,
    rounds: int,
    at_audio_s: float = 1.0,
    gap_s: float = 0.3,
    tail_s: float = 1.0,
    in_flight: str | None = None,
) -> dict[str, Any]:
    """Interrupt answers at ``at_audio_s`` of their audio; measure waste, stale frames, next TTFA.

    Each round: an answer is streamed; once ``at_audio_s`` seconds of its audio have left the
    service the LLM stream is cancelled and an ``InterruptionFrame`` is queued; if the LLM was
    still streaming, its ``LLMFullResponseEndFrame`` follows (a cancelled Pipecat LLM pushes
    it). ``gap_s`` later the next answer starts (same trace) and is spoken to the end.
    ``stray_words``: words sent to Gradium after the barge-in beyond the next answer's own.

    Args:
        emu: The emulator (its model's speed applies).
        spec: The client.
        trace: The answers' trace.
        rounds: How many barge-ins.
        at_audio_s: Audio seconds out of the service before the barge-in.
        gap_s: From the barge-in to the next answer's start frame.
        tail_s: Pause after each round's next answer.
        in_flight: A token of the interrupted answer that reaches the service after the
            ``InterruptionFrame`` (it was between processors when the barge-in overtook it),
            e.g. :data:`IN_FLIGHT_TOKEN`; None for none.

    Returns:
        Figures per round and their medians.
    """
    await emu.reset()
    session = await Session.start(spec, emu.ws_url)
    results: list[BargeIn] = []
    try:
        for _ in range(rounds):
            reached = asyncio.Event()

            def on_audio(answer: Answer, reached: asyncio.Event = reached) -> None:
                if answer.audio_s >= at_audio_s - 1e-9:
                    reached.set()

            session.on_audio = on_audio
            task = asyncio.create_task(session.stream(trace))
            await asyncio.wait_for(reached.wait(), ANSWER_TIMEOUT_S)
            session.on_audio = None
            answer = session.answers[-1]
            rnd = BargeIn(answer)
            rnd.interrupt_at = time.monotonic()
            rnd.heard_s = answer.audio_s
            cut_short = not task.done()
            task.cancel()
            await session.h.send(InterruptionFrame())
            if cut_short:
                # What a cancelled Pipecat LLM leaves behind: its answer's end frame (pushed
                # from the ``finally`` of its completion), after a token it had on its way
                # (overtaken by the interruption) when ``in_flight`` says so.
                tail = [LLMTextFrame(in_flight)] if in_flight else []
                await session.h.send(*tail, LLMFullResponseEndFrame())
            cut = len(session.h.down.records)
            assert answer.context_id is not None
            session.ignore_contexts.add(answer.context_id)
            await asyncio.sleep(gap_s)
            rnd.next_answer = await session.speak(trace)
            # Stale: the interrupted answer's frames after the InterruptionFrame left the service.
            records = session.h.down.records
            idx = next(
                (
                    i
                    for i in range(cut - 1, len(records))
                    if isinstance(records[i].frame, InterruptionFrame)
                ),
                None,
            )
            if idx is None:
                idx = next(
                    i
                    for i in range(len(records))
                    if records[i].at >= rnd.interrupt_at
                    and isinstance(records[i].frame, InterruptionFrame)
                )
            rnd.stale = [
                type(r.frame).__name__
                for r in records[idx + 1 :]
                if isinstance(r.frame, (TTSAudioRawFrame, TTSTextFrame))
                and r.frame.context_id == answer.context_id
            ]
            results.append(rnd)
            # An abandoned request (the built-in's) keeps generating meanwhile: give it time
            # to show in the emulator's stats before the pipeline closes its socket.
            await asyncio.sleep(tail_s)
    finally:
        session.on_audio = None
        await session.stop()
    stats = await emu.stats()
    rows = []
    for i, rnd in enumerate(results):
        nxt = rnd.next_answer
        assert nxt is not None
        reqs = requests_between(stats, rnd.interrupted.started_at, nxt.started_at)
        waste = sum(d for r in reqs for at, d in r["audio_chunks"] if at > rnd.interrupt_at)
        sent = sum(len(spoken_text(r).strip()) for r in reqs)
        heard_words = [w[0] for r in reqs for w in r["words"] if w[1] < rnd.heard_s]
        heard = len(" ".join(heard_words))
        # Words sent to Gradium after the barge-in that are not the next answer's. Counted as
        # runs of letters and digits: the built-in joins sentences without a space
        # ("today.Expect"), which a split at whitespace would count as one word.
        until = results[i + 1].interrupted.started_at if i + 1 < len(results) else float("inf")
        after = requests_between(stats, rnd.interrupt_at, until)
        sent_after = Counter(WORD.findall(" ".join(spoken_text(r) for r in after)))
        stray = sorted((sent_after - Counter(WORD.findall("".join(trace.tokens)))).elements())
        rows.append(
            {
                "heard_s": rnd.heard_s,
                "waste_s": waste,
                "chars_sent": sent,
                "chars_heard": heard,
                "chars_unheard": max(0, sent - heard),
                "stale_frames": len(rnd.stale),
                "stray_words": len(stray),
                "stray": stray,
                "stale_kinds": sorted(set(rnd.stale)),
                "next_ttfa_s": nxt.ttfa,
                "requests": len(reqs),
                "generated_s": sum(r["audio_s"] for r in reqs),
            }
        )

    def med(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return statistics.median(vals) if vals else None

    return {
        "rounds": rows,
        "waste_s": med("waste_s"),
        "chars_unheard": med("chars_unheard"),
        "stale_frames": sum(r["stale_frames"] for r in rows),
        "stray_words": sum(r["stray_words"] for r in rows),
        "next_ttfa_s": med("next_ttfa_s"),
    }


# --------------------------------------------------------------------------- concurrency


def silences(arrivals: list[tuple[float, float]]) -> list[float]:
    """The waits of a listener who plays from the first frame on and pauses when audio is late.

    Args:
        arrivals: ``(time, seconds of audio)`` of each frame, in order of arrival.

    Returns:
        Every wait, in seconds, in order (zero-length ones left out).
    """
    waits: list[float] = []
    if not arrivals:
        return waits
    play_end = arrivals[0][0]
    for at, dur in arrivals:
        if at > play_end:
            waits.append(at - play_end)
            play_end = at
        play_end += dur
    return waits


def lateness(arrivals: list[tuple[float, float]]) -> float:
    """How far arrivals fell behind real-time playback that starts at the first arrival.

    Chunk k must arrive by ``t0 + (audio before it)``; returns the worst lateness in seconds.
    """
    if not arrivals:
        return 0.0
    t0 = arrivals[0][0]
    played = 0.0
    worst = 0.0
    for at, dur in arrivals:
        worst = max(worst, at - (t0 + played))
        played += dur
    return worst


async def run_concurrency(
    emu: EmulatorProcess,
    spec: ClientSpec,
    trace: Trace,
    levels: list[int],
    gap_threshold_s: float = 0.1,
    stagger_s: float = 1.0,
    time_cap_s: float = 60.0,
) -> dict[str, Any]:
    """N pipelines in this process, each speaking one answer; does any fall behind real time?

    A session has a gap when one of its audio frames leaves the service more than
    ``gap_threshold_s`` later than real-time playback starting at its first audio frame
    would need it. The same lateness is computed from the emulator's send times, to tell a
    late client from a late (CPU-starved) emulator.

    Args:
        emu: The emulator.
        spec: The client.
        trace: The answer every session speaks.
        levels: Session counts to try, increasing; stops at the first with a gap.
        gap_threshold_s: Lateness that counts as a gap.
        stagger_s: Sessions start at random offsets in ``[0, stagger_s)``.
        time_cap_s: Stop trying higher levels after this long in total.

    Returns:
        Per level: sessions with a gap, worst lateness (client and emulator), median TTFA.
    """
    rng = random.Random(4)
    per_level: list[dict[str, Any]] = []
    began = time.monotonic()
    for n in levels:
        if time.monotonic() - began > time_cap_s:
            break
        await emu.reset()
        sessions = [await Session.start(spec, emu.ws_url) for _ in range(n)]
        cpu0, t0 = cpu_s(), time.monotonic()

        async def one(s: Session) -> Answer:
            await asyncio.sleep(rng.uniform(0, stagger_s))
            return await s.speak(trace)

        try:
            answers = await asyncio.gather(*(one(s) for s in sessions))
        finally:
            cpu, wall = cpu_s() - cpu0, time.monotonic() - t0
            await asyncio.gather(*(s.stop() for s in sessions), return_exceptions=True)
        stats = await emu.stats()
        client_late = [
            lateness(s.audio_arrivals.get(a.context_id or "", []))
            for s, a in zip(sessions, answers)
        ]
        server_late = [lateness([tuple(c) for c in r["audio_chunks"]]) for r in stats["requests"]]
        ttfas = [a.ttfa for a in answers if a.ttfa is not None]
        row = {
            "sessions": n,
            "sessions_with_gap": sum(1 for x in client_late if x > gap_threshold_s),
            "worst_lateness_s": max(client_late),
            "emulator_worst_lateness_s": max(server_late) if server_late else None,
            "ttfa_median_s": statistics.median(ttfas) if ttfas else None,
            "cpu_utilisation": cpu / wall if wall else None,
            "audio_s": sum(a.audio_s for a in answers),
            "cpu_per_audio_s": cpu / sum(a.audio_s for a in answers) if answers else None,
        }
        per_level.append(row)
        if row["sessions_with_gap"]:
            break
    ok = [r["sessions"] for r in per_level if not r["sessions_with_gap"]]
    return {
        "levels": per_level,
        "max_sessions_without_gap": max(ok) if ok else 0,
        "capped": bool(per_level) and not per_level[-1]["sessions_with_gap"],
    }
