"""The metrics the README promises (TTFB, TTFA, usage characters) and OpenTelemetry spans as
Pipecat's own TTS services emit them, read with OpenTelemetry's in-memory exporter."""

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pipecat.frames.frames import InterruptionFrame, MetricsFrame, StartFrame, TTSStoppedFrame
from pipecat.metrics.metrics import (
    TextAggregationMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection
from pipecat.workers.runner import WorkerRunner

from pipecat_gradium.emulator import GradiumEmulator
from pipecat_gradium.testing import FrameRecorder, PipelineHarness, start_pipeline
from pipecat_gradium.tracing import TTFA_ATTRIBUTE

ANSWER = "Sure, the train leaves at eight fifteen from platform four."
LONG = (
    "This answer is long enough to be interrupted while it speaks, with many words after "
    "the first phrase, and more words after those, so the barge-in cuts it."
)


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """An in-memory exporter on the global tracer provider (set once per process)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def start_traced(service) -> PipelineHarness:
    """``[recorder, service, recorder]`` in a worker with Pipecat's tracing on."""
    up = FrameRecorder(FrameDirection.UPSTREAM)
    down = FrameRecorder(FrameDirection.DOWNSTREAM)
    worker = PipelineWorker(
        Pipeline([up, service, down]),
        params=PipelineParams(audio_out_sample_rate=24000, enable_metrics=True),
        enable_tracing=True,
        cancel_on_idle_timeout=False,
        idle_timeout_secs=None,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run_task = asyncio.create_task(runner.run())
    h = PipelineHarness(worker=worker, up=up, down=down, run_task=run_task)
    await down.wait_for(lambda: bool(down.frames(StartFrame)), timeout=10)
    return h


def metrics(h: PipelineHarness, kind: type) -> list:
    return [d for f in h.down.frames(MetricsFrame) for d in f.data if isinstance(d, kind)]


async def test_ttfb_ttfa_and_usage_characters_for_every_answer(emu: GradiumEmulator, make_tts):
    tts = make_tts()
    h = await start_pipeline(tts, sample_rate=24000, metrics=True)
    try:
        for n, text in enumerate([ANSWER, ANSWER.upper()], start=1):
            await h.speak_answer(text, tokens_per_s=200)
            await h.down.wait_for(lambda n=n: len(h.down.frames(TTSStoppedFrame)) >= n, 10)
            assert tts.last_time_to_first_audio_s is not None
            assert 0 < tts.last_time_to_first_audio_s < 2.0
    finally:
        await h.stop()
    ttfb = [d for d in metrics(h, TTFBMetricsData) if d.processor == tts.name and d.value > 0]
    assert len(ttfb) == 2 and all(d.value < 2.0 for d in ttfb)
    usage = [d.value for d in metrics(h, TTSUsageMetricsData) if d.processor == tts.name]
    # Characters sent, counted per message: the whole of both answers, nothing twice.
    assert sum(usage) == 2 * len(ANSWER)
    # Aggregation is timed for each answer's first phrase only (each answer has several).
    aggregation = [d for d in metrics(h, TextAggregationMetricsData) if d.processor == tts.name]
    assert len(aggregation) == 2 and all(0 < d.value < 2.0 for d in aggregation)
    # TTFA as the service reports it equals what the harness saw leave the service, roughly.
    assert all(t.ttfa is not None and t.ttfa < 2.0 for t in h.answers)


async def test_one_tts_span_per_answer_with_pipecats_attributes(
    emu: GradiumEmulator, make_tts, spans: InMemorySpanExporter
):
    spans.clear()
    tts = make_tts()
    h = await start_traced(tts)
    try:
        await h.speak_answer(ANSWER, tokens_per_s=200)
        await h.down.wait_for(lambda: len(h.down.frames(TTSStoppedFrame)) >= 1, 10)
        # A second answer, interrupted while its audio plays.
        started = len(h.audio_frames())
        await h.speak_answer(LONG, tokens_per_s=200)
        await h.down.wait_for(lambda: len(h.audio_frames()) > started + 3, 10)
        await h.send(InterruptionFrame())
        await h.speak_answer(ANSWER, tokens_per_s=200)
        # The interrupted answer ends with no TTSStoppedFrame of its own; the third ends normally.
        await h.down.wait_for(lambda: len(h.down.frames(TTSStoppedFrame)) >= 2, 10)
    finally:
        await h.stop()
    tts_spans = [s for s in spans.get_finished_spans() if s.name == "tts"]
    assert len(tts_spans) == 3, [s.name for s in spans.get_finished_spans()]
    first, cut, last = sorted(tts_spans, key=lambda s: s.start_time or 0)
    for span in (first, last):
        a = span.attributes or {}
        assert a["voice_id"] == "YTpq7expH9539ERJ"
        assert a["gen_ai.request.model"] == "default"
        assert a["gen_ai.output.type"] == "speech"
        assert a["metrics.character_count"] == len(ANSWER)
        assert 0 < a["metrics.ttfb"] < 2.0
        assert 0 < a[TTFA_ATTRIBUTE] < 2.0
        assert not a.get("tts.interrupted")
    assert (cut.attributes or {}).get("tts.interrupted") is True
