"""A phone agent: Pipecat's development runner serves Twilio's Media Streams on ``/ws``.

The same pipeline as the browser agent (``agent_pipeline.py``), at the phone's rate: 8 kHz in and
out, and Gradium is asked for 8 kHz audio (``pcm_8000``), so nothing is resampled before the
serializer turns it into mu-law. Run it behind a public host name (``ngrok http 7860`` gives one)
and point a Twilio number at it::

    pip install -e ".[phone]"
    python examples/phone_agent.py -t twilio -x YOUR_HOST.ngrok.io

The runner answers Twilio's webhook (``POST /``) with TwiML that connects the call's Media Stream
to ``wss://YOUR_HOST/ws``. ``-t telnyx``, ``-t plivo`` and ``-t exotel`` work the same way: the
runner tells the provider from the stream's first messages.

What it uses, by the keys it finds (in the environment or a ``.env`` file):

- TTS: ``GradiumStreamingTTSService``; without ``GRADIUM_API_KEY`` the embedded emulator.
- LLM: OpenAI with ``OPENAI_API_KEY``; without it, the scripted stand-in (``scripted_llm.py``).
- STT: Deepgram with ``DEEPGRAM_API_KEY``; without it, a stand-in (``scripted_stt.py``) that
  turns each stretch of speech Silero VAD hears into "N seconds of speech", so the caller's turns
  still reach the LLM. Either way, speaking over the bot interrupts it (Silero VAD).
- Hanging up: with the provider's credentials (``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN``,
  ``TELNYX_API_KEY``, ``PLIVO_AUTH_ID`` and ``PLIVO_AUTH_TOKEN``) the call is hung up when the
  bot's pipeline ends; without them the caller's hang-up ends the call.

It also serves Pipecat's eval harness on the same ``/ws`` route (``pipecat eval run``, see
``evals/``).
"""

import asyncio
import os
import sys
from contextlib import AsyncExitStack

from dotenv import load_dotenv
from loguru import logger
from pipecat.runner.types import RunnerArguments, WebSocketRunnerArguments
from pipecat.runner.utils import create_transport, parse_telephony_websocket
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

# The runner imports this file as __main__; its sibling modules are found through sys.path[0].
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent_pipeline import make_tts, run_agent  # noqa: E402
from scripted_llm import ScriptedLLMService  # noqa: E402
from scripted_stt import SpeechLengthTranscriber  # noqa: E402

load_dotenv(override=True)

#: A phone line's rate, in and out; Gradium produces it directly.
SAMPLE_RATE = 8000
TELEPHONY = ("twilio", "telnyx", "plivo", "exotel")

SYSTEM_PROMPT = (
    "You are a friendly voice assistant answering a phone call. Answer in one or two short "
    "spoken sentences, without lists, markdown or emoji."
)
GREETING = "Hello! You have reached a scripted stand-in speaking through Gradium. Say something."
ANSWER = (
    "I heard {said}. This is answer number {turn}, and it is long on purpose, so that you can "
    "talk over me: the moment you speak, I stop, and when you finish, my next answer starts."
)


def make_llm():
    """OpenAI with its key, else the scripted stand-in (said so in the log)."""
    if os.getenv("OPENAI_API_KEY"):
        from pipecat.services.openai.llm import OpenAILLMService

        return OpenAILLMService(api_key=os.getenv("OPENAI_API_KEY"))
    logger.warning("OPENAI_API_KEY not set: answers come from a scripted stand-in, not an LLM")
    return ScriptedLLMService(greeting=GREETING, answer=ANSWER)


def make_stt():
    """Deepgram with its key, else the stand-in that transcribes speech as its length."""
    if os.getenv("DEEPGRAM_API_KEY"):
        from pipecat.services.deepgram.stt import DeepgramSTTService

        return DeepgramSTTService(api_key=os.getenv("DEEPGRAM_API_KEY"))
    logger.warning(
        "DEEPGRAM_API_KEY not set: the caller's words are not recognized; each stretch of "
        "speech reaches the LLM as its length"
    )
    return SpeechLengthTranscriber()


def can_hang_up(provider: str) -> bool:
    """Whether the runner's serializer for ``provider`` has the credentials to hang up."""
    env = os.getenv
    if provider == "twilio":
        api_key = env("TWILIO_API_KEY") and env("TWILIO_API_SECRET")
        return bool(env("TWILIO_ACCOUNT_SID") and (env("TWILIO_AUTH_TOKEN") or api_key))
    if provider == "telnyx":
        return bool(env("TELNYX_API_KEY"))
    if provider == "plivo":
        return bool(env("PLIVO_AUTH_ID") and env("PLIVO_AUTH_TOKEN"))
    return True  # Exotel's serializer never hangs up.


def serializer_without_hang_up(provider: str, call):
    """The provider's serializer with auto hang-up off (the runner's needs credentials)."""
    if provider == "twilio":
        from pipecat.serializers.twilio import TwilioFrameSerializer

        return TwilioFrameSerializer(
            stream_sid=call["stream_id"],
            call_sid=call["call_id"],
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
    if provider == "telnyx":
        from pipecat.serializers.telnyx import TelnyxFrameSerializer

        return TelnyxFrameSerializer(
            stream_id=call["stream_id"],
            outbound_encoding=call["outbound_encoding"],
            inbound_encoding="PCMU",
            call_control_id=call["call_id"],
            params=TelnyxFrameSerializer.InputParams(auto_hang_up=False),
        )
    from pipecat.serializers.plivo import PlivoFrameSerializer

    return PlivoFrameSerializer(
        stream_id=call["stream_id"],
        call_id=call["call_id"],
        params=PlivoFrameSerializer.InputParams(auto_hang_up=False),
    )


def phone_params() -> FastAPIWebsocketParams:
    return FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True)


def eval_params():
    from pipecat.evals.transport import EvalTransportParams

    return EvalTransportParams(audio_in_enabled=True, audio_out_enabled=True)


async def make_transport(runner_args: WebSocketRunnerArguments) -> BaseTransport:
    """The call's transport: the runner's, unless it would need hang-up credentials it lacks."""
    provider, call = await parse_telephony_websocket(runner_args.websocket)
    if provider in ("twilio", "telnyx", "plivo") and not can_hang_up(provider):
        logger.warning(
            f"No {provider} credentials: the agent cannot hang up; the caller's hang-up ends "
            "the call"
        )
        runner_args.transport_type = provider
        runner_args.call_data = call
        params = phone_params()
        params.add_wav_header = False
        params.serializer = serializer_without_hang_up(provider, call)
        return FastAPIWebsocketTransport(websocket=runner_args.websocket, params=params)
    # The runner's own transport (parsing is cached on the socket): a provider with
    # credentials, Exotel, or Pipecat's eval harness.
    return await create_transport(
        runner_args,
        {**{name: phone_params for name in TELEPHONY}, "eval": eval_params},
    )


async def run_bot(transport: BaseTransport, runner_args: RunnerArguments, call: bool) -> None:
    """Build the pipeline and run it until the call (or the eval session) ends."""
    before = asyncio.all_tasks()
    stt = make_stt()
    async with AsyncExitStack() as stack:
        await run_agent(
            transport,
            stt=stt,
            llm=make_llm(),
            tts=await make_tts(stack),
            system_prompt=SYSTEM_PROMPT,
            handle_sigint=runner_args.handle_sigint,
            sample_rate=SAMPLE_RATE,
            audio_in_sample_rate=SAMPLE_RATE,
            # A call has no RTVI client to say it is ready: greet when it connects.
            greet_on_connect=call,
            # Without an STT, the stand-in's transcript comes at the end of speech: a fixed
            # pause after it ends the turn (Pipecat's default waits for its turn model).
            user_turn_strategies=(
                UserTurnStrategies(stop=[SpeechTimeoutUserTurnStopStrategy()])
                if isinstance(stt, SpeechLengthTranscriber)
                else None
            ),
        )
    # What the call started and is still running (the emulator, the pipeline's tasks,
    # sockets' readers): nothing, when it ended cleanly.
    left = [t.get_name() for t in asyncio.all_tasks() - before if not t.done()]
    logger.info(f"Session ended: {len(left)} of its tasks still running {left}")


async def bot(runner_args: RunnerArguments):
    """Entry point for Pipecat's development runner (its ``/ws`` route)."""
    if not isinstance(runner_args, WebSocketRunnerArguments):
        raise ValueError(
            "The phone agent serves the runner's /ws route: run it with -t twilio (or telnyx, "
            "plivo, exotel), or with no -t for Pipecat's eval harness"
        )
    transport = await make_transport(runner_args)
    await run_bot(transport, runner_args, call=runner_args.transport_type in TELEPHONY)


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
