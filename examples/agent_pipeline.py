"""The voice-agent pipeline both agents run (``browser_agent.py``, ``daily_agent.py``).

Transport in, speech-to-text when there is one, the context aggregators around the LLM, Gradium
TTS, transport out. The bot greets the user once the page's client is ready and the session ends
when the client leaves.
"""

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
from pipecat.workers.runner import WorkerRunner

#: The pipeline's output rate; Gradium is asked for it directly, nothing is resampled.
SAMPLE_RATE = 24000


async def run_agent(
    transport: BaseTransport,
    *,
    stt: FrameProcessor | None,
    llm: FrameProcessor,
    tts: FrameProcessor,
    system_prompt: str,
    handle_sigint: bool,
) -> None:
    """Build the pipeline and run it until the client disconnects.

    Args:
        transport: The session's transport.
        stt: Speech-to-text (with Silero VAD), or None when the user types.
        llm: The LLM service.
        tts: The TTS service.
        system_prompt: The conversation's first message.
        handle_sigint: Passed to Pipecat's ``WorkerRunner``.
    """
    context = LLMContext([{"role": "system", "content": system_prompt}])
    vad = None
    if stt is not None:
        from pipecat.audio.vad.silero import SileroVADAnalyzer

        vad = SileroVADAnalyzer()
    user_agg, assistant_agg = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=vad)
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
            audio_out_sample_rate=SAMPLE_RATE, enable_metrics=True, enable_usage_metrics=True
        ),
    )

    @worker.rtvi.event_handler("on_client_ready")
    async def on_client_ready(rtvi):
        logger.info("Client ready: greeting")
        context.add_message(
            {"role": "developer", "content": "Start by concisely introducing yourself."}
        )
        await worker.queue_frames([LLMRunFrame()])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        logger.info("Client disconnected")
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=handle_sigint)
    await runner.add_workers(worker)
    await runner.run()
