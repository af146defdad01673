"""The main job: a scripted LLM answer stream spoken by GradiumStreamingTTSService into a WAV file.

A real Pipecat pipeline. A scripted LLM streams sub-word tokens at 33 tokens/s after a 300 ms time
to first token; the service turns them into Gradium requests; the audio is written to
``out/demo.wav`` as a listener hears it: played in real time, as a transport plays it (the
service delivers audio faster than that). The second answer is interrupted by the user after one
second of it has played (a barge-in): what had not played is dropped, as a transport drops it,
and the third answer starts on a standby socket.

Without ``GRADIUM_API_KEY`` it runs on the embedded Gradium emulator (eSpeak NG voice, Gradium's
protocol and a stated latency model), so it needs no key and no internet. With the key set it
speaks through Gradium itself.

Run::

    python examples/offline_demo.py [--out out/demo.wav] [--rate 24000]
"""

import argparse
import asyncio
import os
import sys
import time
import wave
from contextlib import AsyncExitStack
from pathlib import Path

from loguru import logger
from pipecat.frames.frames import InterruptionFrame

from pipecat_gradium import GradiumStreamingTTSService
from pipecat_gradium.testing import start_pipeline

ANSWERS = [
    "Hi! I am your travel assistant. The forecast for tomorrow in Lisbon is sunny, "
    "with a light breeze in the afternoon and a high of twenty four degrees.",
    "Your train leaves at eight fifteen from platform four. I would get there a little early, "
    "because the station is busy on Friday mornings and the queue for coffee is long.",
    "Sure, I will book the table for two at seven thirty. Anything else?",
]
TOKENS_PER_S = 33.0
TTFT_S = 0.3
BARGE_IN_AFTER_S = 1.0


async def run(out: Path, rate: int) -> None:
    """Speak the scripted conversation and write the WAV file."""
    async with AsyncExitStack() as stack:
        key = os.environ.get("GRADIUM_API_KEY")
        if key:
            url = os.environ.get("GRADIUM_URL", "wss://api.gradium.ai/api/speech/tts")
            print(f"Speaking through Gradium at {url}")
        else:
            from pipecat_gradium.emulator import GradiumEmulator, LatencyModel

            latency = LatencyModel()
            emu = await stack.enter_async_context(GradiumEmulator(latency=latency))
            key, url = "test-key", emu.ws_url
            print(
                f"GRADIUM_API_KEY not set: using the embedded emulator at {url}\n"
                f"  latency model: handshake {latency.handshake_s * 1000:.0f} ms, setup "
                f"{latency.setup_s * 1000:.0f} ms, model delay {latency.model_delay_s * 1000:.0f}"
                f" ms, look-ahead {latency.lookahead_words} words, {latency.speed:g}x real time"
            )

        tts = GradiumStreamingTTSService(api_key=key, url=url)
        h = await start_pipeline(tts, sample_rate=rate, paced=True)
        player = h.player
        assert player is not None
        try:
            completed = 0
            for i, answer in enumerate(ANSWERS, start=1):
                played, delivered = len(player.played), len(h.audio_frames())
                timing = await h.speak_answer(answer, tokens_per_s=TOKENS_PER_S, ttft_s=TTFT_S)
                if i == 2:
                    # The user talks over the bot once a second of this answer has played.
                    await player.wait_for(
                        lambda p=played: player.seconds(since=p) >= BARGE_IN_AFTER_S, 30
                    )
                    cuts = len(player.interruptions)
                    await h.send(InterruptionFrame())
                    await player.wait_for(lambda c=cuts: len(player.interruptions) > c, 10)
                    heard = player.seconds(since=played, until=player.interruptions[-1])
                    sent = h.audio_seconds(since=delivered)
                    note = (
                        f", then the barge-in ({sent:.2f} s of it had been delivered; the "
                        "rest is dropped, as a transport drops it)"
                    )
                else:
                    completed += 1
                    # Delivered in full to the player, and all of it played (or playing).
                    await player.wait_for(lambda n=completed: player.stops >= n and player.idle, 60)
                    heard = player.seconds(since=played)
                    note = ""
                ttfa = timing.ttfa
                shown = f"{ttfa * 1000:.0f} ms" if ttfa is not None else "n/a"
                print(f"answer {i}: time to first audio {shown}, {heard:.2f} s played{note}")
        finally:
            await h.stop()

        audio = b"".join(f.audio for f in player.played)
        out.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(out), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            wav.writeframes(audio)
        errors = h.errors()
        print(f"wrote {out}: {len(audio) / 2 / rate:.1f} s of speech at {rate} Hz")
        if errors:
            print(f"{len(errors)} error(s): " + "; ".join(e.error for e in errors))
            sys.exit(1)


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo.wav"))
    parser.add_argument("--rate", type=int, default=24000, help="pipeline output rate (Hz)")
    parser.add_argument("--verbose", action="store_true", help="show Pipecat's debug log")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if args.verbose else "WARNING")
    started = time.monotonic()
    asyncio.run(run(args.out, args.rate))
    print(f"done in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
