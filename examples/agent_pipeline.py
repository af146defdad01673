"""The voice-agent pipeline every agent runs (browser, Daily and phone agents).

Transport in, speech-to-text when there is one, the context aggregators around the LLM, Gradium
TTS, transport out. The bot greets the user once the client is ready (an RTVI client: the page,
Pipecat's eval harness) or, on a phone call, once the call connects; the session ends when the
client leaves.
"""

import os
from contextlib import AsyncExitStack

from loguru import logger
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from pipecat_gradium import GradiumStreamingTTSService

#: The pipeline's output rate; Gradium is asked for it directly, nothing is resampled.
SAMPLE_RATE = 24000


async def make_tts(stack: AsyncExitStack) -> GradiumStreamingTTSService:
    """Gradium with its key, else the embedded emulator (closed with the session)."""
    if os.getenv("GRADIUM_API_KEY"):
        return GradiumStreamingTTSService()
    from pipecat_gradium.emulator import GradiumEmulator

    emu = await stack.enter_async_context(GradiumEmulator())
    logger.warning(
        f"GRADIUM_API_KEY not set: speaking through the embedded emulator at {emu.ws_url}"
    )
    return GradiumStreamingTTSService(api_key=emu.api_key, url=emu.ws_url)


async def run_agent(
    transport: BaseTransport,
    *,
    stt: FrameProcessor | None,
    llm: FrameProcessor,
    tts: FrameProcessor,
    system_prompt: str,
    handle_sigint: bool,
    sample_rate: int = SAMPLE_RATE,
    audio_in_sample_rate: int = 16000,
    greet_on_connect: bool = False,
    user_turn_strategies: UserTurnStrategies | None = None,
) -> None:
    """Build the pipeline and run it until the client disconnects.

    Args:
        transport: The session's transport.
        stt: Speech-to-text (with Silero VAD), or None when the user types.
        llm: The LLM service.
        tts: The TTS service.
        system_prompt: The conversation's first message.
        handle_sigint: Passed to Pipecat's ``WorkerRunner``.
        sample_rate: The pipeline's output rate (Gradium is asked for it directly).
        audio_in_sample_rate: The pipeline's input rate (Pipecat's default: 16 kHz).
        greet_on_connect: Greet when the transport's client connects (a phone call, which has
            no RTVI client) instead of when an RTVI client says it is ready.
        user_turn_strategies: When a user turn starts and stops (None: Pipecat's defaults).
    """
    context = LLMContext([{"role": "system", "content": system_prompt}])
    vad = None
    if stt is not None:
        from pipecat.audio.vad.silero import SileroVADAnalyzer

        vad = SileroVADAnalyzer()
    user_agg, assistant_agg = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=vad, user_turn_strategies=user_turn_strategies
        ),
    )
    pipeline = Pipeline(
        [
            transport.input(),
            *([stt] if stt else []),
            user_agg,
            llm,
            tts,
            transport.output(),
            # Gradium's word timestamps reach the context as TTSTextFrames: after a
            # barge-in it holds only the words the user heard.
            assistant_agg,
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_out_sample_rate=sample_rate,
            enable_metrics=True,
            enable_usage_metrics=True,
            audio_in_sample_rate=audio_in_sample_rate,
        ),
    )

    async def greet() -> None:
        context.add_message(
            {"role": "developer", "content": "Start by concisely introducing yourself."}
        )
        await worker.queue_frames([LLMRunFrame()])

    if greet_on_connect:

        @transport.event_handler("on_client_connected")
        async def on_client_connected(transport, client):
            logger.info("Call connected: greeting")
            await greet()

    else:

        @worker.rtvi.event_handler("on_client_ready")
        async def on_client_ready(rtvi):
            logger.info("Client ready: greeting")
            await greet()

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        logger.info("Client disconnected")
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=handle_sigint)
    await runner.add_workers(worker)
    await runner.run()
