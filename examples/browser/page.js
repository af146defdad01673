// The agent's offline page: Pipecat's client library talking to examples/browser_agent.py over
// SmallWebRTC. Nothing is fetched from outside the agent's own origin: the bot's audio plays
// from the WebRTC track, the microphone (when the agent has speech-to-text) is read by
// WavMediaManager instead of Daily's device helper, which loads its code from c.daily.co.
// window.session records what happened (events with their times, messages sent, the bot's
// words as heard), for scripts and the browser test.
import { PipecatClient } from "@pipecat-ai/client-js";
import { SmallWebRTCTransport, WavMediaManager } from "@pipecat-ai/small-webrtc-transport";

const session = { events: [], sent: [], botText: [], state: "disconnected", error: null };
window.session = session;

const $ = (id) => document.getElementById(id);
function note(kind, detail = "") {
  session.events.push([performance.now(), kind, detail]);
}
function show(line, cls) {
  const p = document.createElement("p");
  p.className = cls;
  p.textContent = line;
  $("log").appendChild(p);
  $("log").scrollTop = $("log").scrollHeight;
  return p;
}
function setState(s) {
  session.state = s;
  $("state").textContent = s;
}

// What the agent runs on (emulator or Gradium, stand-in or OpenAI, microphone or text box).
const config = await fetch("config.json").then((r) => r.json());
$("uses").textContent = `Speech: ${config.tts}. Answers: ${config.llm}. Input: ${config.input}.`;

let botLine = null;
const client = new PipecatClient({
  transport: new SmallWebRTCTransport({ mediaManager: new WavMediaManager() }),
  enableMic: config.microphone,
  enableCam: false,
  callbacks: {
    onTransportStateChanged: (s) => setState(s),
    onBotReady: () => note("bot-ready"),
    onTrackStarted: (track, participant) => {
      if (track.kind !== "audio" || participant?.local) return;
      note("track-started");
      const audio = $("bot-audio");
      audio.srcObject = new MediaStream([track]);
      audio.play().catch((e) => note("play-error", String(e)));
    },
    onBotStartedSpeaking: () => note("bot-started-speaking"),
    onBotStoppedSpeaking: () => note("bot-stopped-speaking"),
    onUserTranscript: (data) => {
      if (data.final) show(data.text, "user");
    },
    onBotOutput: (data) => {
      session.botText.push(data);
      // Gradium's word timestamps advance each segment's spoken text: show what was heard.
      const heard = data.spoken_progress?.accumulated_text;
      if (!heard) return;
      if (!botLine) {
        botLine = show("", "bot");
        botLine.segments = new Map();
      }
      botLine.segments.set(data.segment_id, heard);
      botLine.textContent = [...botLine.segments.values()].join("");
      $("log").scrollTop = $("log").scrollHeight;
    },
    onUserStartedSpeaking: () => {
      botLine = null;
    },
    onError: (e) => {
      session.error = JSON.stringify(e?.data ?? e);
      note("error", session.error);
      show(`Error: ${session.error}`, "error");
    },
  },
});

$("connect").addEventListener("click", async () => {
  if (session.state !== "disconnected" && session.state !== "error") {
    await client.disconnect();
    $("connect").textContent = "Connect";
    return;
  }
  $("connect").textContent = "Disconnect";
  try {
    await client.startBotAndConnect({ endpoint: "/start", requestData: { transport: "webrtc" } });
  } catch (e) {
    session.error = String(e);
    setState("error");
    show(`Could not connect: ${e}`, "error");
  }
});

$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  show(text, "user");
  botLine = null;
  session.sent.push([performance.now(), text]);
  await client.sendText(text);
});
