"""A voice agent in your browser, offline: Pipecat's development runner, SmallWebRTC, Gradium TTS.

Run it, then open http://localhost:7860/client/ and press Connect::

    pip install -e ".[webrtc]" && python examples/browser_agent.py

What it uses, by the keys it finds (in the environment or a ``.env`` file):

- TTS: ``GradiumStreamingTTSService``; without ``GRADIUM_API_KEY`` it speaks through the
  embedded Gradium emulator (an eSpeak NG voice on 127.0.0.1, no internet).
- LLM: OpenAI with ``OPENAI_API_KEY``; without it, a scripted stand-in (``scripted_llm.py``, not
  a model) that streams sub-word tokens like an LLM, so barge-in and the context work.
- Input: the text box of Pipecat's prebuilt page; the microphone too with ``DEEPGRAM_API_KEY``
  (Deepgram STT and Silero VAD).

The bot greets you when the page connects. Type while it speaks to interrupt it. Pipecat's runner
options apply (``--host``, ``--port``, ``-t webrtc``; ``--help`` lists them).
"""

import os
import sys
from contextlib import AsyncExitStack

from dotenv import load_dotenv
from loguru import logger
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.workers.runner import WorkerRunner

from pipecat_gradium import GradiumStreamingTTSService

# The runner imports this file as __main__; its sibling module is found through sys.path[0].
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scripted_llm import ScriptedLLMService  # noqa: E402

load_dotenv(override=True)

SYSTEM_PROMPT = (
    "You are a friendly voice assistant talking to someone in a web page. Answer in one or two "
    "short spoken sentences, without lists, markdown or emoji."
)
#: The pipeline's output rate; Gradium is asked for it directly, nothing is resampled.
SAMPLE_RATE = 24000


def make_llm():
    """OpenAI with its key, else the scripted stand-in (said so in the log)."""
    if os.getenv("OPENAI_API_KEY"):
        from pipecat.services.openai.llm import OpenAILLMService

        return OpenAILLMService(api_key=os.getenv("OPENAI_API_KEY"))
    logger.warning("OPENAI_API_KEY not set: answers come from a scripted stand-in, not an LLM")
    return ScriptedLLMService()


def make_stt():
    """Deepgram (mic input) with its key, else None: input is the page's text box."""
    if not os.getenv("DEEPGRAM_API_KEY"):
        logger.warning("DEEPGRAM_API_KEY not set: the microphone is off; type in the page")
        return None
    from pipecat.services.deepgram.stt import DeepgramSTTService

    return DeepgramSTTService(api_key=os.getenv("DEEPGRAM_API_KEY"))


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


async def run_bot(transport: BaseTransport, runner_args: RunnerArguments) -> None:
    """Build the pipeline and run it until the page disconnects."""
    async with AsyncExitStack() as stack:
        stt = make_stt()
        llm = make_llm()
        tts = await make_tts(stack)

        context = LLMContext([{"role": "system", "content": SYSTEM_PROMPT}])
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
                # barge-in it holds only the words that were heard.
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

        runner = WorkerRunner(handle_sigint=runner_args.handle_sigint)
        await runner.add_workers(worker)
        await runner.run()


async def bot(runner_args: RunnerArguments):
    """Entry point for Pipecat's development runner."""
    audio_in = bool(os.getenv("DEEPGRAM_API_KEY"))
    transport = await create_transport(
        runner_args,
        {
            "webrtc": lambda: TransportParams(audio_in_enabled=audio_in, audio_out_enabled=True),
        },
    )
    await run_bot(transport, runner_args)


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
