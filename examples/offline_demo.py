"""The main job: a short conversation spoken by GradiumStreamingTTSService into a WAV file.

A real Pipecat pipeline. A scripted LLM streams sub-word tokens at 33 tokens/s after a 300 ms time
to first token; the service turns them into Gradium requests. ``out/demo.wav`` is the
conversation as it sounds in the room, on one clock:

- the user's lines, in a second voice (the emulator's eSpeak NG voice, pitched up), with the bot
  silent while the user speaks;
- silence from the end of each user line to the bot's first sound: turn detection (0.2 s, as
  Pipecat's VAD waits by default), the LLM's first token, then the service's time to first audio;
- the bot's audio played in real time, as a transport plays it (the service delivers it faster):
  each 40 ms piece starts when it reaches the transport or when the previous one ends;
- a barge-in: the user talks over the second answer once 1.6 s of it has played; the bot stops
  when the interruption reaches it (0.2 s into the user's line, as Pipecat's VAD needs that long
  to call it speech), what had not played is dropped as a transport drops it, and the third
  answer starts on a standby socket.

The lines printed are the file's timeline: each interval's start and end in the file.

Without ``GRADIUM_API_KEY`` it runs on the embedded Gradium emulator (eSpeak NG voice, Gradium's
protocol and a stated latency model), so it needs no key and no internet. With the key set the
bot speaks through Gradium itself (the user's lines stay in the local voice).

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from loguru import logger
from pipecat.frames.frames import InterruptionFrame, TTSAudioRawFrame

from pipecat_gradium import GradiumStreamingTTSService
from pipecat_gradium.testing import start_pipeline

#: (what the user says, the bot's scripted answer); the second answer is barged into.
TURNS = [
    (
        "What will the weather be like in Lisbon tomorrow?",
        "Tomorrow in Lisbon it will be sunny, with a light breeze in the afternoon "
        "and a high of twenty four degrees.",
    ),
    (
        "And when does my train leave?",
        "Your train leaves at eight fifteen from platform four. I would get there a little early, "
        "because the station is busy on Friday mornings and the queue for coffee is long.",
    ),
    (
        "Sorry, could you book dinner for two at seven thirty instead?",
        "Sure, I will book the table for two at seven thirty. Anything else?",
    ),
]
BARGE_IN_TURN = 3  # this turn's user line interrupts the answer before it
TOKENS_PER_S = 33.0
TTFT_S = 0.3
#: Pipecat's VAD defaults: the user's silence that ends a turn, and the voice that starts one.
TURN_END_S = 0.2
VAD_START_S = 0.2
#: The user answers this long after the bot's last sound.
USER_PAUSE_S = 0.5
BARGE_IN_AFTER_S = 1.6
#: The user's voice: the emulator's, a quarter higher (and spoken slower to keep its pace).
USER_PITCH = 1.25


@dataclass
class Interval:
    """One line of the timeline: who is heard from ``start`` to ``end`` (seconds in the file)."""

    start: float
    end: float
    who: str  # "user", "bot" or "silence"
    note: str


@dataclass
class Piece:
    """40 ms of the bot's audio as a transport plays it."""

    start: float  # monotonic
    samples: np.ndarray
    context_id: str | None

    def end(self, rate: int) -> float:
        """When it stops sounding."""
        return self.start + len(self.samples) / rate


def played_pieces(records, rate: int) -> list[Piece]:
    """The bot's audio as a transport plays it, from the frames' arrival times.

    Each 40 ms piece starts when it arrives or when the previous one ends, whichever is later;
    an interruption drops the pieces that had not started. This is the playback
    ``PacedPlayer`` performs, computed from the recorder's timestamps so that the event
    loop's own lateness does not put gaps into the file.

    Args:
        records: The downstream recorder's records (what reached the transport, and when).
        rate: The output rate.

    Returns:
        The pieces that played, in order.
    """
    pieces: list[Piece] = []
    free_at = 0.0
    step = rate * 40 // 1000
    for record in records:
        frame = record.frame
        if isinstance(frame, InterruptionFrame):
            pieces = [p for p in pieces if p.start < record.at]
            free_at = pieces[-1].end(rate) if pieces else record.at
        elif isinstance(frame, TTSAudioRawFrame):
            audio = np.frombuffer(frame.audio, dtype=np.int16)
            for i in range(0, len(audio), step):
                piece = Piece(max(free_at, record.at), audio[i : i + step], frame.context_id)
                free_at = piece.end(rate)
                pieces.append(piece)
    return pieces


def user_voice(text: str, rate: int) -> np.ndarray:
    """The user's line in the second voice, trimmed of silence (blocking: eSpeak NG)."""
    from pipecat_gradium.emulator.audio import resample
    from pipecat_gradium.emulator.voice import ESPEAK_RATE, synthesize

    synth = synthesize(text, rate_wpm=int(175 / USER_PITCH))
    loud = np.flatnonzero(np.abs(synth.samples.astype(np.int32)) > 300)
    speech = synth.samples[loud[0] : loud[-1] + 1]
    # Played back faster than it was made: higher, like another speaker.
    return resample(speech, int(ESPEAK_RATE * USER_PITCH), rate)


@dataclass
class Turn:
    """What happened in one turn, on the monotonic clock."""

    said: str
    user_start: float
    user_end: float
    asked: float  # when the LLM was asked (after turn detection)
    ttfa: float | None
    barge_in_at: float | None = None  # the next user line started over this answer


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
        voices = [await asyncio.to_thread(user_voice, said, rate) for said, _ in TURNS]

        tts = GradiumStreamingTTSService(api_key=key, url=url)
        h = await start_pipeline(tts, sample_rate=rate, paced=True)
        try:
            turns, t0 = await converse(h, voices, rate)
            delivered = {
                context_id: h.audio_seconds(context_id)
                for context_id in dict.fromkeys(f.context_id for f in h.audio_frames())
            }
        finally:
            await h.stop()
        errors = h.errors()

    lines, audio = compose(turns, voices, played_pieces(h.down.records, rate), delivered, t0, rate)
    print(" start -    end s  who      what is heard")
    for line in lines:
        print(f"{line.start:6.2f} - {line.end:6.2f} s  {line.who:7s}  {line.note}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(out), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(audio.tobytes())
    total = {
        who: sum(i.end - i.start for i in lines if i.who == who)
        for who in ("user", "bot", "silence")
    }
    print(
        f"wrote {out}: {len(audio) / rate:.2f} s at {rate} Hz (bot {total['bot']:.2f} s, user "
        f"{total['user']:.2f} s, silence {total['silence']:.2f} s; the barge-in overlaps the "
        "two voices)"
    )
    if errors:
        print(f"{len(errors)} error(s): " + "; ".join(e.error for e in errors))
        sys.exit(1)


async def converse(h, voices: list[np.ndarray], rate: int) -> tuple[list[Turn], float]:
    """The turns, in real time: the user speaks, the bot answers; one answer is barged into.

    Returns:
        What happened in each turn, and the moment the conversation began.
    """
    player = h.player
    assert player is not None
    turns: list[Turn] = []
    t0 = time.monotonic()
    user_start = t0
    for n, ((said, answer), voice) in enumerate(zip(TURNS, voices, strict=True), start=1):
        if n != BARGE_IN_TURN:
            # The user speaks (a pause at the user's pace, not synchronisation).
            await asyncio.sleep(max(0.0, user_start + len(voice) / rate - time.monotonic()))
        user_end = user_start + len(voice) / rate
        await asyncio.sleep(max(0.0, user_end + TURN_END_S - time.monotonic()))
        turn = Turn(said, user_start, user_end, time.monotonic(), None)
        turns.append(turn)
        played, stops = len(player.played), player.stops
        timing = await h.speak_answer(answer, tokens_per_s=TOKENS_PER_S, ttft_s=TTFT_S)
        if n + 1 == BARGE_IN_TURN:
            # The user talks over the bot once this much of the answer has played; the
            # interruption reaches the bot when the VAD calls the user's voice speech.
            await player.wait_for(lambda p=played: player.seconds(since=p) >= BARGE_IN_AFTER_S, 30)
            user_start = turn.barge_in_at = time.monotonic()
            await asyncio.sleep(VAD_START_S)
            cuts = len(player.interruptions)
            await h.send(InterruptionFrame())
            await player.wait_for(lambda c=cuts: len(player.interruptions) > c, 10)
            await asyncio.sleep(max(0.0, user_start + len(voices[n]) / rate - time.monotonic()))
        else:
            # Delivered in full to the player, and all of it played.
            await player.wait_for(lambda s=stops: player.stops > s and player.idle, 60)
            # The user answers a little after the bot's last sound.
            user_start = played_pieces(h.down.records, rate)[-1].end(rate) + USER_PAUSE_S
        turn.ttfa = timing.ttfa
    return turns, t0


def compose(turns, voices, pieces: list[Piece], delivered, t0: float, rate: int):
    """The file and its timeline: the user's lines and the bot's played pieces, mixed.

    Returns:
        The timeline's intervals in the order they start, and the mixed int16 samples.
    """
    lines: list[Interval] = []
    sounds: list[tuple[float, np.ndarray]] = []
    answers = list(dict.fromkeys(p.context_id for p in pieces))
    previous_end = None
    for n, (turn, voice, context_id) in enumerate(zip(turns, voices, answers, strict=True), 1):
        mine = [p for p in pieces if p.context_id == context_id]
        start, end = mine[0].start - t0, mine[-1].end(rate) - t0
        user_start, user_end = turn.user_start - t0, turn.user_end - t0
        sounds.append((user_start, voice))
        sounds.extend((p.start - t0, p.samples) for p in mine)
        if previous_end is not None and turn.user_start - t0 > previous_end:
            lines.append(Interval(previous_end, user_start, "silence", "the user's pause"))
        barging = previous_end is not None and user_start < previous_end
        note = f'"{turn.said}"'
        if barging:
            note += f" (barging in: the bot stops {previous_end - user_start:.2f} s later)"
        lines.append(Interval(user_start, user_end, "user", note))
        ttfa = f"{turn.ttfa * 1000:.0f} ms" if turn.ttfa is not None else "n/a"
        lines.append(
            Interval(
                user_end,
                start,
                "silence",
                f"turn detection {TURN_END_S:.2f} s, the LLM's first token {TTFT_S:.2f} s, "
                f"the service's time to first audio {ttfa}",
            )
        )
        heard = sum(len(p.samples) for p in mine) / rate
        waits = end - start - heard
        note = f"answer {n}: {heard:.2f} s played"
        if waits > 0.001:
            note += f", {waits:.2f} s of waits for audio"
        if turn.barge_in_at is not None:
            note += (
                f"; {delivered[context_id]:.2f} s of it had been delivered, the rest is "
                "dropped as a transport drops it"
            )
        lines.append(Interval(start, end, "bot", note))
        previous_end = end
    lines.sort(key=lambda i: i.start)
    length = max(s + len(a) / rate for s, a in sounds)
    mixed = np.zeros(int(round(length * rate)), dtype=np.int32)
    for start, samples in sounds:
        i = int(round(start * rate))
        mixed[i : i + len(samples)] += samples[: len(mixed) - i]
    return lines, np.clip(mixed, -32768, 32767).astype(np.int16)


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
