"""Quickstart: an LLM's answer, streamed as tokens, spoken by Gradium into out/quickstart.wav."""

import asyncio
import wave
from pathlib import Path

from pipecat.frames.frames import (
    EndFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.workers.runner import WorkerRunner

from pipecat_gradium import GradiumStreamingTTSService
from pipecat_gradium.emulator import GradiumEmulator


async def main():
    # The embedded emulator, on 127.0.0.1. For Gradium itself, drop it and build the
    # service with no arguments: it reads GRADIUM_API_KEY.
    async with GradiumEmulator() as emu:
        tts = GradiumStreamingTTSService(api_key=emu.api_key, url=emu.ws_url)
        worker = PipelineWorker(Pipeline([tts]), params=PipelineParams(audio_out_sample_rate=24000))
        audio = bytearray()  # what a transport's output would play
        worker.set_reached_downstream_filter((TTSAudioRawFrame,))

        @worker.event_handler("on_frame_reached_downstream")
        async def keep(worker, frame):
            audio.extend(frame.audio)

        # What an LLM service pushes, token by token; EndFrame right after: all of it is spoken.
        tokens = ["Your", " train", " leaves", " at", " eight", " fif", "teen", "."]
        await worker.queue_frames([LLMFullResponseStartFrame(), *map(LLMTextFrame, tokens)])
        await worker.queue_frames([LLMFullResponseEndFrame(), EndFrame()])
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()
    Path("out").mkdir(exist_ok=True)
    with wave.open("out/quickstart.wav", "wb") as wav:
        wav.setparams((1, 2, 24000, 0, "NONE", "NONE"))  # mono, 16-bit, 24 kHz
        wav.writeframes(audio)
    print(f"wrote out/quickstart.wav: {len(audio) / 48000:.2f} s of speech")


if __name__ == "__main__":
    asyncio.run(main())
