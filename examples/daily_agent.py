"""A voice agent on Daily (WebRTC) that speaks through GradiumStreamingTTSService.

Deepgram hears the user, OpenAI answers, Gradium speaks. Barge-in works out of the box: when the
user talks over the bot, the answer's Gradium socket is closed (Gradium stops generating) and the
next answer starts on a standby socket, so it pays no handshake.

Needs the ``daily`` extra and keys (in the environment or a ``.env`` file)::

    pip install -e ".[daily]"
    export GRADIUM_API_KEY=... DEEPGRAM_API_KEY=... OPENAI_API_KEY=... DAILY_API_KEY=...
    python examples/daily_agent.py --transport daily    # Pipecat's runner creates a Daily room
    python examples/daily_agent.py --transport webrtc   # local WebRTC page, no DAILY_API_KEY

Open the URL the runner prints (http://localhost:7860). For a first try with no keys at all, run
``examples/browser_agent.py`` instead. Both run the pipeline in ``agent_pipeline.py``.
"""

import importlib.util
import os
import sys

from dotenv import load_dotenv

load_dotenv(override=True)


def chosen_transport(argv: list[str]) -> str | None:
    """The ``-t``/``--transport`` value on the command line (None: the runner's default)."""
    return next(
        (argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-t", "--transport")),
        next((a.split("=", 1)[1] for a in argv if a.startswith("--transport=")), None),
    )


def missing_keys(argv: list[str]) -> list[str]:
    """The API keys this run needs that are not set (DAILY_API_KEY only for Daily)."""
    needed = ["GRADIUM_API_KEY", "DEEPGRAM_API_KEY", "OPENAI_API_KEY"]
    if chosen_transport(argv) in (None, "daily") or "-d" in argv or "--direct" in argv:
        needed.append("DAILY_API_KEY")
    return [key for key in needed if not os.getenv(key)]


def missing_modules(argv: list[str]) -> list[str]:
    """The modules of this project's ``daily`` extra this run needs that are not installed."""
    needed = ["deepgram", "openai", "onnxruntime", "fastapi", "uvicorn"]
    transport = chosen_transport(argv)
    if transport in (None, "daily") or "-d" in argv or "--direct" in argv:
        needed.append("daily")
    if transport in (None, "webrtc"):
        needed.append("aiortc")
    return [m for m in needed if importlib.util.find_spec(m) is None]


def cannot_start(argv: list[str]) -> str | None:
    """Everything missing for this run, in one line (None: it can start)."""
    problems = []
    if keys := missing_keys(argv):
        problems.append(
            f"Missing {', '.join(keys)}: set them in the environment or a .env file "
            "(--transport webrtc needs no DAILY_API_KEY; examples/browser_agent.py needs none)"
        )
    if modules := missing_modules(argv):
        problems.append(
            f"{', '.join(modules)} not installed: install this project's daily extra: "
            'pip install -e ".[daily]"'
        )
    return "; ".join(problems) + "." if problems else None


if __name__ == "__main__" and (problem := cannot_start(sys.argv[1:])):
    # Said once, before Pipecat loads or anything starts.
    sys.exit(problem)

from agent_pipeline import run_agent  # noqa: E402  (sys.path[0] is this file's folder)
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.transports.base_transport import BaseTransport, TransportParams

from pipecat_gradium import GradiumStreamingTTSService

SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Answer in short spoken sentences, without lists, "
    "markdown or emoji."
)


async def run_bot(transport: BaseTransport, handle_sigint: bool) -> None:
    """Build the pipeline and run it until the user leaves."""
    await run_agent(
        transport,
        stt=DeepgramSTTService(api_key=os.getenv("DEEPGRAM_API_KEY", "")),
        llm=OpenAILLMService(api_key=os.getenv("OPENAI_API_KEY")),
        # api_key=None reads GRADIUM_API_KEY; the pipeline's output rate (24 kHz) is asked of
        # Gradium directly, so nothing is resampled.
        tts=GradiumStreamingTTSService(
            settings=GradiumStreamingTTSService.Settings(voice="YTpq7expH9539ERJ", language="en"),
        ),
        system_prompt=SYSTEM_PROMPT,
        handle_sigint=handle_sigint,
    )


async def bot(runner_args: RunnerArguments):
    """Entry point for Pipecat's development runner."""

    def daily_params():
        # Imported only for Daily: --transport webrtc runs without daily-python.
        from pipecat.transports.daily.transport import DailyParams

        return DailyParams(audio_in_enabled=True, audio_out_enabled=True)

    params = {
        "daily": daily_params,
        "webrtc": lambda: TransportParams(audio_in_enabled=True, audio_out_enabled=True),
    }
    transport = await create_transport(runner_args, params)
    await run_bot(transport, runner_args.handle_sigint)


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
