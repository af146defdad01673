"""The browser agent in a real browser, offline: Debian's Chromium, the agent's own page, WebRTC.

``examples/browser_agent.py`` runs as the README says (Pipecat's development runner, SmallWebRTC,
offline: the embedded emulator speaks, the scripted stand-in answers). Headless Chromium opens
the page the README names first (``/offline/``, built on Pipecat's client library) with every
request outside 127.0.0.1 refused: Playwright aborts any other host and Chromium resolves no
other name, and the test asserts that no refused request was needed. Every assertion reads what
the browser itself received: the WebRTC statistics of the incoming audio track (energy,
duration) and its WebAudio level every ~10 ms (when it falls silent), both sampled by a script
the test adds to the page.

It skips only when it cannot run here: no Chromium (``apt-get install chromium``; ``.ci/run``
installs it); under ``CI=true`` that fails instead. Measurements are printed and saved to
``out/browser_test.json``; a screenshot of the page mid-conversation to ``out/browser_agent.png``.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags that work on a closed network, as root, with no display or devices.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    # No name resolves but the agent's: a hidden fetch (a CDN, a STUN server) cannot leave.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
#: Mean square (full scale 1.0) below which a 10 ms block counts as silent (-40 dBFS).
SILENT = 1e-4
#: A silent run this long after the interruption is the answer having stopped (longer than
#: the pauses between the emulator's words).
SILENT_RUN_MS = 150.0

sys.path.insert(0, str(ROOT / "examples"))
from scripted_llm import ANSWER, GREETING  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def cannot_run(reason: str) -> None:
    """Skip, saying why; in CI (``CI=true``, as ``.ci/run`` sets) that is a failure instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"the browser test must run in CI: {reason}")
    pytest.skip(reason)


def readme_page_path() -> str:
    """The path of the URL the README gives first for the browser agent."""
    readme = (ROOT / "README.md").read_text()
    after = readme.split("<!-- browser-command -->")[1]
    match = re.search(r"http://localhost:7860(/[^\s*)]*)", after)
    assert match, "the README names no URL after its browser command"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_agent(port: int, log: Path) -> subprocess.Popen:
    """Run the README's agent command (offline: no keys) and wait until it serves."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    # The agent and Pipecat's runner both load a .env (override=True): a developer's keys
    # there would switch the test to the real services. python-dotenv >= 1.2 skips every
    # load_dotenv() under this variable.
    assert Version(metadata.version("python-dotenv")) >= Version("1.2"), (
        "python-dotenv >= 1.2 is needed to keep a .env's keys out of the browser test"
    )
    env["PYTHON_DOTENV_DISABLED"] = "1"
    cmd = [sys.executable, "examples/browser_agent.py", "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "-t", "webrtc"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 45
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the agent exited: {log.read_text()[-2000:]}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/status") as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the agent did not serve within 45 s: {log.read_text()[-2000:]}")


def expected_speech_s(text: str) -> float:
    """Seconds from the first to the last sound of ``text`` in the emulator's voice."""
    from pipecat_gradium.emulator.voice import ESPEAK_RATE, synthesize

    samples = synthesize(text).samples.astype(np.float64) / 32768.0
    loud = np.flatnonzero(samples**2 > SILENT)
    return (loud[-1] - loud[0]) / ESPEAK_RATE


def loud_span(blocks, start: float, end: float) -> tuple[float, float, float]:
    """First and last loud block in [start, end] and the loud seconds between them."""
    loud = [t for t, ms in blocks if start <= t <= end and ms > SILENT]
    assert loud, f"no audio above silence between {start:.0f} and {end:.0f} ms"
    return loud[0], loud[-1], len(loud) * 0.0107


def stats_energy(samples, start: float, end: float) -> tuple[float, float]:
    """RMS level (full scale 1.0) and seconds of audio from WebRTC stats in [start, end]."""
    inside = [s for s in samples if start <= s[0] <= end]
    assert len(inside) >= 2, "no WebRTC statistics in that window"
    energy = inside[-1][1] - inside[0][1]
    seconds = inside[-1][2] - inside[0][2]
    return float(np.sqrt(energy / seconds)), seconds


def jitter_buffer_ms(samples) -> float:
    """The browser's mean jitter-buffer delay over the session, in ms (its own statistics)."""
    last = samples[-1]
    return 1000 * last[4] / last[5] if last[5] else 0.0


def spoken_text(probe) -> str:
    """The bot's words as the page heard them (each segment's text up to its last word)."""
    segments: dict = {}
    for d in probe["botText"]:
        heard = (d.get("spoken_progress") or {}).get("accumulated_text")
        if heard:
            segments[d["segment_id"]] = heard
    return " ".join(" ".join(segments.values()).split())


def event_times(probe, kind: str, after: float = 0.0) -> list[float]:
    return [t for t, k, _ in probe["events"] if k == kind and t >= after]


def silence_onset(blocks, after: float) -> float:
    """When the audio fell silent for good: the start of the first silent run of
    ``SILENT_RUN_MS`` after ``after`` (the end of the last loud block before it)."""
    run_start = None
    last_loud = after
    for t, ms in blocks:
        if t < after:
            continue
        if ms > SILENT:
            run_start = None
            last_loud = t
        elif run_start is None:
            run_start = last_loud
        elif t - run_start >= SILENT_RUN_MS:
            return run_start
    raise AssertionError("the audio never fell silent after the interruption")


#: Added to the page before its own script: keeps each peer connection to sample the incoming
#: audio track's WebRTC statistics every 20 ms, and measures its level with WebAudio every 10 ms.
MEASURE_JS = """
(() => {
  const probe = { samples: [], blocks: [] };
  window.probe = probe;
  const peers = [];
  const NativePC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends NativePC {
    constructor(...args) {
      super(...args);
      peers.push(this);
      this.addEventListener("track", (ev) => {
        if (ev.track.kind === "audio") listen(ev.track);
      });
    }
  };
  setInterval(async () => {
    for (const pc of peers) {
      if (pc.connectionState !== "connected") continue;
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio") {
          // [ms, totalAudioEnergy, totalSamplesDuration (s), audioLevel,
          //  jitterBufferDelay (s, summed), jitterBufferEmittedCount]
          probe.samples.push([performance.now(), s.totalAudioEnergy ?? 0,
            s.totalSamplesDuration ?? 0, s.audioLevel ?? 0, s.jitterBufferDelay ?? 0,
            s.jitterBufferEmittedCount ?? 0]);
        }
      });
    }
  }, 20);
  const LEVEL = `registerProcessor("level", class extends AudioWorkletProcessor {
    constructor() { super(); this.sum = 0; this.n = 0; }
    process(inputs) {
      const ch = inputs[0] && inputs[0][0];
      if (ch) {
        for (const v of ch) this.sum += v * v;
        this.n += ch.length;
        if (this.n >= sampleRate / 100) {
          this.port.postMessage([currentTime, this.sum / this.n]);
          this.sum = 0; this.n = 0;
        }
      }
      return true;
    }
  });`;
  async function listen(track) {
    const ctx = new AudioContext();
    const url = URL.createObjectURL(new Blob([LEVEL], { type: "text/javascript" }));
    await ctx.audioWorklet.addModule(url);
    await ctx.resume();
    const node = new AudioWorkletNode(ctx, "level");
    ctx.createMediaStreamSource(new MediaStream([track])).connect(node);
    node.port.onmessage = (ev) => {
      const [contextTime, meanSquare] = ev.data;
      const ts = ctx.getOutputTimestamp();
      // [ms on the page's clock at the end of the block, mean square]
      probe.blocks.push([ts.performanceTime + (contextTime - ts.contextTime) * 1000, meanSquare]);
    };
  }
})();
"""
#: What the page recorded and what the measuring script sampled, as one object.
READ_JS = "({...window.session, ...window.probe})"


async def test_agent_speaks_answers_and_is_interrupted_in_a_real_browser(tmp_path):
    if CHROMIUM is None:
        cannot_run("Chromium not found: install Debian's chromium (apt-get install chromium)")
    from playwright.async_api import async_playwright

    started = time.monotonic()
    page_path = readme_page_path()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "agent.log"
    agent = await start_agent(port, log)
    blocked: list[str] = []
    try:
        # Before any client: the start-up log names the page and what the agent runs on.
        startup = log.read_text()
        assert f"open http://127.0.0.1:{port}{page_path} " in startup, startup[-2000:]
        assert "speech: the embedded Gradium emulator" in startup
        assert "answers: a scripted stand-in" in startup
        assert "input: text box" in startup
        # Pipecat's prebuilt page is still served, for people online.
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/client/") as r:
                assert r.status == 200 and "<html" in (await r.text()).lower()
            async with http.get(f"{base}/", allow_redirects=False) as r:
                assert r.headers["Location"] == page_path

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
            )
            context = await browser.new_context()

            async def local_only(route):
                host = urlsplit(route.request.url).hostname
                if host in LOCAL_HOSTS:
                    await route.continue_()
                else:
                    blocked.append(route.request.url)
                    await route.abort("blockedbyclient")

            await context.route("**/*", local_only)
            await context.add_init_script(MEASURE_JS)
            page = await context.new_page()
            page.on(
                "websocket",
                lambda ws: blocked.extend(
                    [] if urlsplit(ws.url).hostname in LOCAL_HOSTS else [ws.url]
                ),
            )
            await page.goto(f"{base}{page_path}")
            await page.get_by_text("Speech: the embedded Gradium emulator").wait_for(timeout=10000)
            await page.click("#connect")

            async def wait(js: str, timeout_s: float, what: str) -> None:
                try:
                    await page.wait_for_function(js, timeout=timeout_s * 1000, polling=50)
                except Exception as e:
                    probe = await page.evaluate(READ_JS)
                    raise AssertionError(
                        f"{what}: {e}\nevents: {probe['events']}\nblocked: {blocked}\n"
                        f"agent log: {log.read_text()[-3000:]}"
                    ) from e

            # 1. The greeting, spoken in full.
            await wait(
                "session.events.some(e => e[1] === 'bot-stopped-speaking')", 30, "no greeting"
            )
            probe = await page.evaluate(READ_JS)
            g_start = event_times(probe, "bot-started-speaking")[0]
            g_stop = event_times(probe, "bot-stopped-speaking")[0]
            first, last, g_loud_s = loud_span(probe["blocks"], g_start, g_stop + 300)
            g_rms, g_stats_s = stats_energy(probe["samples"], g_start, g_stop + 300)
            g_expected = expected_speech_s(GREETING)
            # Silence before the bot spoke: the energy above is the greeting's, not noise.
            quiet_rms, _ = stats_energy(probe["samples"], 0, g_start - 100)

            # 2. A typed message gets a spoken answer; 3. typing while it speaks interrupts it.
            await page.fill("#text", "What is the weather like")
            await page.press("#text", "Enter")
            await wait(
                f"probe.blocks.filter(b => b[0] > session.sent[0][0] && b[1] > {SILENT}).length"
                " > 150",
                15,
                "the typed message got no spoken answer",
            )
            await page.fill("#text", "Stop, something else")
            await page.press("#text", "Enter")
            await wait(
                "session.sent.length === 2 && session.events.filter(e => e[1] === "
                "'bot-started-speaking' && e[0] > session.sent[1][0]).length > 0 && "
                f"probe.blocks.filter(b => b[0] > session.sent[1][0] && b[1] > {SILENT}).length"
                " > 150",
                15,
                "the answer after the interruption did not speak",
            )
            probe = await page.evaluate(READ_JS)
            screenshot = OUT / "browser_agent.png"
            OUT.mkdir(exist_ok=True)
            await page.screenshot(path=str(screenshot))
            await browser.close()
    finally:
        agent.send_signal(signal.SIGINT)
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()

    # Nothing outside 127.0.0.1 was asked for: the page works with no internet.
    assert not blocked, f"the page needed the internet: {blocked}"
    assert probe["error"] is None, probe["error"]
    blocks = probe["blocks"]
    sent1, sent2 = probe["sent"][0][0], probe["sent"][1][0]
    a1_first, _, a1_loud_s = loud_span(blocks, sent1, sent2)
    # The interruption reached the bot's output stage before the browser heard of it: the
    # bot-stopped-speaking message that stage sent in response is the latest that moment can be.
    reached = event_times(probe, "bot-stopped-speaking", after=sent2)[0]
    onset = silence_onset(blocks, sent2)
    next_start = event_times(probe, "bot-started-speaking", after=sent2)[0]
    a2_first, a2_last, a2_loud_s = loud_span(blocks, next_start, blocks[-1][0])
    a2_rms, _ = stats_energy(probe["samples"], a2_first, a2_last)
    heard = spoken_text(probe)
    figures = {
        "greeting_expected_s": round(g_expected, 2),
        "greeting_first_to_last_sound_s": round((last - first) / 1000, 2),
        "greeting_loud_s": round(g_loud_s, 2),
        "greeting_rms_webrtc_stats": round(g_rms, 4),
        "greeting_window_stats_s": round(g_stats_s, 2),
        "before_greeting_rms": round(quiet_rms, 6),
        "answer1_ms_from_send_to_first_sound": round(a1_first - sent1),
        "answer1_loud_s_before_barge_in": round(a1_loud_s, 2),
        "interruption_reached_bot_ms_after_send": round(reached - sent2),
        "silent_ms_after_interruption_reached_bot": round(onset - reached),
        "silent_ms_after_send": round(onset - sent2),
        "gap_before_next_answer_ms": round(a2_first - onset),
        "answer2_loud_s": round(a2_loud_s, 2),
        "jitter_buffer_mean_ms": round(jitter_buffer_ms(probe["samples"]), 1),
        "answer2_rms_webrtc_stats": round(a2_rms, 4),
        "test_s": round(time.monotonic() - started, 1),
        "screenshot": str(screenshot),
    }
    (OUT / "browser_test.json").write_text(json.dumps(figures, indent=2))
    print("browser test:", json.dumps(figures))

    # The whole session, shutdown included, logged no error (Pipecat's check of the stand-in's
    # settings among them).
    errors = [line for line in log.read_text().splitlines() if "| ERROR" in line]
    assert not errors, errors
    # The greeting arrived as audio: well above silence, lasting as long as its text takes.
    assert quiet_rms < 0.01
    assert g_rms > 0.05
    assert abs((last - first) / 1000 - g_expected) < 0.25 * g_expected
    # The typed message got a spoken answer.
    assert a1_loud_s > 1.0
    # The interrupted answer fell silent within 300 ms of the interruption reaching the bot,
    # and stayed silent until the next answer, which speaks.
    assert onset - reached <= 300
    assert a2_first - onset >= SILENT_RUN_MS
    assert a2_loud_s > 1.0 and a2_rms > 0.05
    # After the barge-in the stand-in quotes the end of its previous answer as the context
    # holds it: the words the page heard before the interruption, not the whole scripted text.
    assert "You cut me off after: " in heard, heard
    quoted = heard.split("You cut me off after: ")[1].split(".")[0]
    before = heard.split("You cut me off")[0]
    interrupted = (
        "You typed: What is the weather like" + before.split("What is the weather like")[1]
    )
    plain = " ".join(w.strip(".,;:!?") for w in interrupted.split())
    assert quoted and plain.endswith(quoted), (quoted, interrupted)
    assert len(interrupted.split()) < len(ANSWER.split())
