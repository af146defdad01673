"""The phone agent on a call, with the test playing Twilio: no Twilio account, no internet.

``examples/phone_agent.py`` runs as the README says (``-t twilio``, offline: the embedded emulator
speaks, the scripted stand-ins answer and transcribe). The test answers the runner's webhook
like Twilio, then connects to the ``/ws`` route the TwiML names and speaks Twilio's Media Streams
protocol: ``connected`` and ``start`` first (the runner tells Twilio from them), then 20 ms of
mu-law 8 kHz ``media`` every 20 ms, as a phone line sends it (silence, or the caller's speech:
eSpeak's voice saying a sentence), a ``mark`` and, to hang up, ``stop``.

How the caller's turn reaches the LLM offline: Silero VAD (in the agent's user aggregator) hears
the speech; the STT stand-in turns it into the transcript "N seconds of speech"; a fixed pause
after it ends the turn; the scripted LLM answers that transcript. Barge-in needs VAD alone.

The caller models Twilio's player: the bot's ``media`` is queued and played at 8 kHz; ``clear``
drops what is queued. Figures go to ``out/phone_test.json``.
"""

import asyncio
import base64
import collections
import json
import os
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soxr
import websockets
from pipecat.audio.utils import create_stream_resampler, pcm_to_ulaw, ulaw_to_pcm

from tests.e2e.agent_process import ROOT, open_tcp_states, running_agent, wait_for_log

pytestmark = pytest.mark.timeout(90)

RATE = 8000
FRAME = 160  # 20 ms of mu-law at 8 kHz: what Twilio sends per media message
SILENCE = b"\xff" * FRAME  # mu-law zero
#: A media gap this long means the bot has finished sending an answer (it sends audio at twice
#: real time, in 40 ms messages every 20 ms).
ANSWER_GAP_S = 0.7
FIRST_TURN = "Hello there I would like to know when you are open on Sunday"
BARGE_IN = "Sorry to cut in but I have another question for you"


async def ulaw_speech(text: str) -> bytes:
    """``text`` in the emulator's eSpeak voice, as Twilio would carry it: mu-law at 8 kHz."""
    from pipecat_gradium.emulator.voice import ESPEAK_RATE, synthesize

    samples = (await asyncio.to_thread(synthesize, text)).samples.astype(np.float32) / 32768.0
    pcm = soxr.resample(samples, ESPEAK_RATE, RATE)
    pcm16 = (np.clip(pcm, -1, 1) * 32767).astype(np.int16).tobytes()
    ulaw = await pcm_to_ulaw(pcm16, RATE, RATE, create_stream_resampler())
    return ulaw + SILENCE[: (-len(ulaw)) % FRAME]


class Utterance:
    """Speech queued for the caller's line, and when its first and last frames went out."""

    def __init__(self, ulaw: bytes):
        self.frames = collections.deque(ulaw[i : i + FRAME] for i in range(0, len(ulaw), FRAME))
        self.seconds = len(ulaw) / RATE
        self.started_at: float | None = None
        self.ended = asyncio.Event()
        self.ended_at: float | None = None


class TwilioCaller:
    """The caller's side of a Twilio Media Stream, and a model of Twilio's player.

    ``media``: every message from the bot with its arrival time; ``clears``: when each ``clear``
    arrived; ``heard``: (start, end) of each stretch of the bot's audio the player played.
    """

    def __init__(self, ws, stream_sid: str, call_sid: str):
        self.ws = ws
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.media: list[tuple[float, bytes]] = []
        self.clears: list[float] = []
        self.others: list[dict] = []
        self.heard: list[list[float]] = []
        self._play_until = 0.0
        self._speech: collections.deque[Utterance] = collections.deque()
        self._seq = 0
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def send(self, event: str, **fields) -> None:
        self._seq += 1
        message = {"event": event, "sequenceNumber": str(self._seq), **fields}
        if event != "connected":
            message["streamSid"] = self.stream_sid
        await self.ws.send(json.dumps(message))

    async def dial(self) -> None:
        await self.send("connected", protocol="Call", version="1.0.0")
        await self.send(
            "start",
            start={
                "accountSid": "AC" + "0" * 32,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
            },
        )
        self._tasks = [asyncio.create_task(self._line()), asyncio.create_task(self._listen())]

    def say(self, ulaw: bytes) -> Utterance:
        utterance = Utterance(ulaw)
        self._speech.append(utterance)
        return utterance

    async def hang_up(self) -> None:
        await self.send("stop", stop={"accountSid": "AC" + "0" * 32, "callSid": self.call_sid})
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()

    async def _line(self) -> None:
        """A phone line: 20 ms of audio every 20 ms, on a fixed schedule."""
        start = time.monotonic()
        n = 0
        while True:
            payload = SILENCE
            if self._speech:
                utterance = self._speech[0]
                if utterance.started_at is None:
                    utterance.started_at = time.monotonic()
                payload = utterance.frames.popleft()
                if not utterance.frames:
                    self._speech.popleft()
                    utterance.ended_at = time.monotonic()
                    utterance.ended.set()
            ms = n * 20
            await self.send(
                "media",
                media={
                    "track": "inbound",
                    "chunk": str(n + 1),
                    "timestamp": str(ms),
                    "payload": base64.b64encode(payload).decode(),
                },
            )
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))

    async def _listen(self) -> None:
        async for raw in self.ws:
            now = time.monotonic()
            message = json.loads(raw)
            event = message.get("event")
            assert message.get("streamSid") == self.stream_sid, message
            if event == "media":
                audio = base64.b64decode(message["media"]["payload"])
                self.media.append((now, audio))
                # Twilio plays the stream in order: from now, or after what is queued.
                begin = max(now, self._play_until)
                self._play_until = begin + len(audio) / RATE
                if self.heard and begin <= self.heard[-1][1] + 1e-3:
                    self.heard[-1][1] = self._play_until
                else:
                    self.heard.append([begin, self._play_until])
            elif event == "clear":
                self.clears.append(now)
                if self._play_until > now:  # the queued audio is dropped, unplayed
                    self._play_until = now
                    self.heard[-1][1] = now
            else:
                self.others.append(message)
            self._changed.set()

    async def wait_until(self, condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{what} (waited {timeout_s:.0f} s)")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
            except TimeoutError:
                pass

    async def answer_sent(self, after: float, timeout_s: float, what: str) -> list:
        """The bot's media after ``after``, once a first message came and then a gap."""
        await self.wait_until(
            lambda: any(t > after for t, _ in self.media), timeout_s, f"no media: {what}"
        )
        await self.wait_until(
            lambda: time.monotonic() - self.media[-1][0] > ANSWER_GAP_S, 30, f"{what} never ended"
        )
        return [(t, a) for t, a in self.media if t > after]


def seconds(media) -> float:
    return sum(len(a) for _, a in media) / RATE


async def rms(media) -> float:
    pcm = await ulaw_to_pcm(b"".join(a for _, a in media), RATE, RATE, create_stream_resampler())
    return float(np.sqrt(np.mean(np.frombuffer(pcm, np.int16).astype(np.float64) ** 2)))


async def emulator_requests(base: str) -> list[dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/_emulator/stats") as r:
            return (await r.json())["requests"]


def request_for(requests: list[dict], starts: str) -> dict:
    for r in requests:
        r["text"] = "".join(r["texts"]).replace("<flush>", "")
    found = [r for r in requests if r["text"].lstrip().startswith(starts)]
    assert len(found) == 1, [r["text"][:60] for r in requests]
    return found[0]


async def test_phone_call_greeting_barge_in_next_answer_and_hang_up(tmp_path):
    log = tmp_path / "agent.log"
    first_turn, barge_in = await asyncio.gather(ulaw_speech(FIRST_TURN), ulaw_speech(BARGE_IN))
    async with running_agent("phone_agent.py", log, "-t", "twilio", "-x", "phone.test") as (
        agent,
        port,
    ):
        # Twilio's webhook: the runner answers with TwiML that streams the call to /ws.
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/") as r:
                twiml = await r.text()
        assert '<Stream url="wss://phone.test/ws">' in twiml, twiml

        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            caller = TwilioCaller(ws, "MZ" + "1" * 32, "CA" + "2" * 32)
            dialled = time.monotonic()
            await caller.dial()

            # 1. The greeting, in full.
            greeting = await caller.answer_sent(dialled, 30, "no greeting")
            text = log.read_text()
            assert "speaking through the embedded emulator" in text
            assert "answers come from a scripted stand-in" in text
            assert "No twilio credentials: the agent cannot hang up" in text
            emulator = (
                text.split("speaking through the embedded emulator at ws://")[1]
                .split("/api/")[0]
                .strip()
            )
            base = f"http://{emulator}"

            # 2. The caller speaks; the answer starts after the turn ends.
            turn = caller.say(first_turn)
            await turn.ended.wait()
            assert turn.ended_at is not None and turn.started_at is not None
            await caller.wait_until(
                lambda: caller.media[-1][0] > turn.ended_at, 10, "no answer to the caller's turn"
            )
            answer_1_first = next(t for t, _ in caller.media if t > turn.ended_at)
            # 3. One second into the answer, the caller talks over it.
            await caller.wait_until(
                lambda: time.monotonic() > answer_1_first + 1.0, 5, "answer 1 stopped early"
            )
            cut = caller.say(barge_in)
            await caller.wait_until(lambda: caller.clears, 5, "no clear after the barge-in")
            await cut.ended.wait()
            assert cut.started_at is not None and cut.ended_at is not None
            clear_at = caller.clears[-1]
            # 4. The next answer plays; the caller hangs up two seconds into it.
            await caller.wait_until(
                lambda: seconds([m for m in caller.media if m[0] > cut.ended_at]) >= 2.0,
                10,
                "no answer after the barge-in",
            )
            answer_2 = [m for m in caller.media if m[0] > cut.ended_at]
            # Twilio reports a mark when playback reaches it; Pipecat's serializer sets none and
            # ignores any that comes.
            await caller.send("mark", mark={"name": "answer 2"})
            requests = await emulator_requests(base)

            # 5. Hang up: the session ends and leaves nothing open.
            session_log_at = len(log.read_text())
            await caller.hang_up()
        ended = await wait_for_log(
            log, r"Session ended: (\d+) of its tasks still running (.*)", 15, session_log_at
        )
        sockets = open_tcp_states(agent.pid)

    greeting_req = request_for(requests, "Hello! You have reached")
    answer_1_req = request_for(requests, "I heard")
    answer_2_req = request_for(requests, "You cut me off after")
    answer_1 = [(t, a) for t, a in caller.media if turn.ended_at < t <= clear_at]
    after_clear = [(t, a) for t, a in caller.media if clear_at < t <= cut.ended_at]
    heard_greeting = [h for h in caller.heard if h[0] < greeting[-1][0] + 0.1]
    span = greeting[-1][0] - greeting[0][0]
    figures = {
        "greeting_audio_s": seconds(greeting),
        "greeting_voice_s": greeting_req["audio_s"],
        "greeting_arrival_span_s": span,
        "greeting_pace": span / seconds(greeting),
        "greeting_playout_gaps": len(heard_greeting) - 1,
        "greeting_rms": await rms(greeting),
        "first_turn_speech_s": turn.seconds,
        "first_media_after_turn_s": answer_1_first - turn.ended_at,
        "answer_1_audio_before_clear_s": seconds(answer_1),
        "answer_1_voice_s": answer_1_req["audio_s"],
        "barge_in_speech_to_clear_s": clear_at - cut.started_at,
        "media_after_clear_before_turn_end": len(after_clear),
        "silence_after_clear_s": answer_2[0][0] - clear_at,
        "first_media_after_barge_in_turn_s": answer_2[0][0] - cut.ended_at,
        "answer_2_audio_before_hang_up_s": seconds(answer_2),
        "answer_2_text": answer_2_req["text"][:80],
        "answer_2_rms": await rms(answer_2),
        "output_formats": sorted({r["setup"]["output_format"] for r in requests}),
        "tasks_left": int(ended.group(1)),
        "sockets_after_hang_up": sockets,
        "other_messages": caller.others,
        "load_average": os.getloadavg(),
    }
    (ROOT / "out").mkdir(exist_ok=True)
    (ROOT / "out" / "phone_test.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))

    # Gradium was asked for the phone's rate directly: nothing resampled before mu-law.
    assert figures["output_formats"] == ["pcm_8000"]
    assert "resampling" not in log.read_text()
    # The greeting: all of the voice's audio, as speech, at real-time pace (Pipecat's WebSocket
    # output sends one chunk per chunk's duration; a loaded machine only makes it slower).
    assert abs(figures["greeting_audio_s"] - greeting_req["audio_s"]) < 0.05
    assert figures["greeting_audio_s"] > 3.0
    assert 0.9 < figures["greeting_pace"] < 1.5
    assert figures["greeting_rms"] > 1000
    # The caller's turn reached the LLM as the stand-in's transcript of its length.
    assert answer_1_req["text"].lstrip().startswith("I heard ")
    assert "seconds of speech" in answer_1_req["text"]
    assert figures["first_media_after_turn_s"] < 3.0
    # The barge-in: Twilio's clear soon after the caller's speech began (VAD needs 0.2 s of it),
    # then no media at all until the caller's turn had ended.
    assert figures["answer_1_audio_before_clear_s"] > 1.0
    assert figures["barge_in_speech_to_clear_s"] < 1.0
    assert figures["media_after_clear_before_turn_end"] == 0
    # The next answer, quoting the words the caller heard of the one cut off (Gradium's word
    # timestamps reached the context).
    quoted = answer_2_req["text"].split("You cut me off after:")[1].split(".")[0].strip()
    assert quoted and quoted in answer_1_req["text"][: len(answer_1_req["text"]) // 2], quoted
    assert figures["answer_2_audio_before_hang_up_s"] >= 2.0
    assert figures["answer_2_rms"] > 1000
    assert figures["first_media_after_barge_in_turn_s"] < 3.0
    # Hung up mid-answer: nothing of the call is left running or open; only the runner listens.
    assert figures["tasks_left"] == 0, ended.group(2)
    assert sockets and set(sockets) == {"LISTEN"}, sockets
    # Nothing but media and clear came back.
    assert figures["other_messages"] == []


def test_extras_install_the_phone_agent_and_the_eval_harness():
    import re
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    def pipecat_extras(name: str) -> set[str]:
        found = [re.search(r"pipecat-ai\[([^\]]+)\]", r) for r in extras[name]]
        return {e.strip() for m in found if m for e in m.group(1).split(",")}

    # The runner and its /ws route, Silero VAD, the keyed services, the emulator's voice.
    assert {"websocket", "runner", "silero", "openai", "deepgram"} <= pipecat_extras("phone")
    assert any(r.startswith("espeakng-loader") for r in extras["phone"])
    # `pipecat eval run` is Pipecat's CLI; the suite runs it and the phone agent.
    assert "cli" in pipecat_extras("evals")
    assert {"websocket", "runner", "silero", "cli"} <= pipecat_extras("dev")
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[phone]"' in readme
    assert "python examples/phone_agent.py -t twilio -x" in readme
    assert "pipecat eval run evals/ --bot-url ws://localhost:7860/ws" in readme
