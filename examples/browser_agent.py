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
options apply (``--host``, ``--port``, ``-t webrtc``; ``--help`` lists them). Pipecat's eval
harness connects to the runner's ``/ws`` route (``pipecat eval run evals/``).
"""

import os
import sys
from contextlib import AsyncExitStack

from dotenv import load_dotenv
from loguru import logger
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.transports.base_transport import BaseTransport, TransportParams

# The runner imports this file as __main__; its sibling modules are found through sys.path[0].
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent_pipeline import make_tts, run_agent  # noqa: E402
from scripted_llm import ScriptedLLMService  # noqa: E402

load_dotenv(override=True)

SYSTEM_PROMPT = (
    "You are a friendly voice assistant talking to someone in a web page. Answer in one or two "
    "short spoken sentences, without lists, markdown or emoji."
)


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


async def run_bot(transport: BaseTransport, runner_args: RunnerArguments) -> None:
    """Build the pipeline and run it until the page disconnects."""
    async with AsyncExitStack() as stack:
        await run_agent(
            transport,
            stt=make_stt(),
            llm=make_llm(),
            tts=await make_tts(stack),
            system_prompt=SYSTEM_PROMPT,
            handle_sigint=runner_args.handle_sigint,
        )


def eval_params(audio_in: bool):
    """The eval transport's parameters (imported only when the harness connects)."""
    from pipecat.evals.transport import EvalTransportParams

    return EvalTransportParams(audio_in_enabled=audio_in, audio_out_enabled=True)


async def bot(runner_args: RunnerArguments):
    """Entry point for Pipecat's development runner."""
    audio_in = bool(os.getenv("DEEPGRAM_API_KEY"))
    transport = await create_transport(
        runner_args,
        {
            "webrtc": lambda: TransportParams(audio_in_enabled=audio_in, audio_out_enabled=True),
            # Pipecat's eval harness (``pipecat eval run``) on the runner's /ws route.
            "eval": lambda: eval_params(audio_in),
        },
    )
    await run_bot(transport, runner_args)


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
