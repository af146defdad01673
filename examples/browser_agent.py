"""A voice agent in your browser, offline: Pipecat's development runner, SmallWebRTC, Gradium TTS.

Run it, then open http://localhost:7860/offline/ and press Connect::

    pip install -e ".[webrtc]" && python examples/browser_agent.py

The page at ``/offline/`` (``examples/browser/``) is built on Pipecat's client library and
needs nothing outside this machine; ``/`` leads to it. Pipecat's prebuilt page stays at
``/client/`` for people online (it loads Daily's device helper from c.daily.co).

What it uses, by the keys it finds (in the environment or a ``.env`` file), said at start-up:

- TTS: ``GradiumStreamingTTSService``; without ``GRADIUM_API_KEY`` it speaks through the
  embedded Gradium emulator (an eSpeak NG voice on 127.0.0.1, no internet).
- LLM: OpenAI with ``OPENAI_API_KEY``; without it, a scripted stand-in (``scripted_llm.py``, not
  a model) that streams sub-word tokens like an LLM, so barge-in and the context work.
- Input: the page's text box; the microphone too with ``DEEPGRAM_API_KEY`` (Deepgram STT and
  Silero VAD).

The bot greets you when the page connects. Type while it speaks to interrupt it. Pipecat's runner
options apply (``--host``, ``--port``, ``-t webrtc``; ``--help`` lists them). Pipecat's eval
harness connects to the runner's ``/ws`` route (``pipecat eval run evals/``).
"""

import importlib.util
import os
import sys
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

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
#: The offline page: its HTML, the bundle of Pipecat's client library, served by the agent.
PAGE_DIR = Path(__file__).resolve().parent / "browser"
PAGE_PATH = "/offline/"


def uses() -> dict:
    """What the agent runs on, by the keys it finds (shown at start-up and on the page)."""
    microphone = bool(os.getenv("DEEPGRAM_API_KEY"))
    return {
        "tts": "Gradium"
        if os.getenv("GRADIUM_API_KEY")
        else "the embedded Gradium emulator (GRADIUM_API_KEY not set)",
        "llm": "OpenAI"
        if os.getenv("OPENAI_API_KEY")
        else "a scripted stand-in, not an LLM (OPENAI_API_KEY not set)",
        "input": "microphone (Deepgram) and text box"
        if microphone
        else "text box (DEEPGRAM_API_KEY not set: microphone off)",
        "microphone": microphone,
    }


def make_llm():
    """OpenAI with its key, else the scripted stand-in."""
    if os.getenv("OPENAI_API_KEY"):
        from pipecat.services.openai.llm import OpenAILLMService

        return OpenAILLMService(api_key=os.getenv("OPENAI_API_KEY"))
    return ScriptedLLMService()


def make_stt():
    """Deepgram (mic input) with its key, else None: input is the page's text box."""
    if not os.getenv("DEEPGRAM_API_KEY"):
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


def serve_offline_page(app) -> None:
    """Add the offline page to the runner's server, and say at start-up what the agent uses.

    Args:
        app: Pipecat's runner app (FastAPI), before ``main()`` adds its own routes.
    """
    from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
    from pipecat.runner import run

    @app.get("/", include_in_schema=False)
    async def root():
        # Registered before the runner's own "/" (which leads to /client/), so it wins.
        return RedirectResponse(PAGE_PATH)

    @app.get(PAGE_PATH, include_in_schema=False)
    async def page():
        return FileResponse(PAGE_DIR / "index.html")

    @app.get(PAGE_PATH + "page.bundle.js", include_in_schema=False)
    async def bundle():
        return FileResponse(PAGE_DIR / "page.bundle.js", media_type="text/javascript")

    @app.get(PAGE_PATH + "config.json", include_in_schema=False)
    async def config():
        return JSONResponse(uses())

    @asynccontextmanager
    async def announce(_app):
        # Once the server listens, after the runner's banner: the URL to open and what it uses.
        url = f"http://{run.runner_host()}:{run.runner_port()}{PAGE_PATH}"
        used = uses()
        logger.info(
            f"Browser agent: open {url} and press Connect (no internet needed; "
            "Pipecat's prebuilt page at /client/ loads Daily's code from c.daily.co)"
        )
        logger.info(f"  speech: {used['tts']}")
        logger.info(f"  answers: {used['llm']}")
        logger.info(f"  input: {used['input']}")
        yield

    # The runner wraps an existing lifespan with its own (SmallWebRTC's clean-up).
    app.router.lifespan_context = announce


if __name__ == "__main__":
    if not (PAGE_DIR / "page.bundle.js").exists():
        sys.exit(
            f"{PAGE_DIR / 'page.bundle.js'} is missing: cd examples/browser && npm ci && npm run build"
        )
    from pipecat.runner.run import app, main

    serve_offline_page(app)
    main()
