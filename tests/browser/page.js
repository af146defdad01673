// The browser test's page: Pipecat's client library talking to the agent over SmallWebRTC.
// It plays the bot's audio and samples the browser's own WebRTC statistics of the incoming
// audio track every 20 ms; the test reads window.probe.
import { PipecatClient } from "@pipecat-ai/client-js";
import { SmallWebRTCTransport, WavMediaManager } from "@pipecat-ai/small-webrtc-transport";

const probe = { samples: [], blocks: [], sent: [], events: [], botText: [], state: "idle", error: null };
window.probe = probe;
const peers = [];

// Keep each peer connection the transport makes, to read its statistics.
const NativePC = window.RTCPeerConnection;
window.RTCPeerConnection = class extends NativePC {
  constructor(...args) {
    super(...args);
    peers.push(this);
  }
};

function note(kind, detail = "") {
  probe.events.push([performance.now(), kind, detail]);
}

async function sample() {
  for (const pc of peers) {
    if (pc.connectionState !== "connected") continue;
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        // [ms, totalAudioEnergy, totalSamplesDuration (s), audioLevel (0..1),
        //  jitterBufferDelay (s, summed), jitterBufferEmittedCount]
        probe.samples.push([
          performance.now(),
          s.totalAudioEnergy ?? 0,
          s.totalSamplesDuration ?? 0,
          s.audioLevel ?? 0,
          s.jitterBufferDelay ?? 0,
          s.jitterBufferEmittedCount ?? 0,
        ]);
      }
    });
  }
}
setInterval(sample, 20);

// WebAudio: the incoming track's RMS level every 10 ms, stamped on the page's clock, for timing
// what WebRTC statistics (refreshed about every 60 ms) resolve too coarsely.
const LEVEL_WORKLET = `
registerProcessor("level", class extends AudioWorkletProcessor {
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
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([LEVEL_WORKLET], { type: "text/javascript" })));
  await ctx.resume();
  const node = new AudioWorkletNode(ctx, "level");
  ctx.createMediaStreamSource(new MediaStream([track])).connect(node);
  node.port.onmessage = (ev) => {
    const [contextTime, meanSquare] = ev.data;
    const ts = ctx.getOutputTimestamp();
    // [ms on the page's clock at the end of the block, mean square]
    probe.blocks.push([ts.performanceTime + (contextTime - ts.contextTime) * 1000, meanSquare]);
  };
  note("webaudio-started");
}

const $ = (id) => document.getElementById(id);
function show(line, cls) {
  const p = document.createElement("p");
  p.className = cls;
  p.textContent = line;
  $("log").appendChild(p);
  $("log").scrollTop = $("log").scrollHeight;
}
function setState(s) {
  probe.state = s;
  $("state").textContent = s;
}

let botLine = null;
const client = new PipecatClient({
  // WavMediaManager: no microphone needed, and nothing fetched from the internet.
  transport: new SmallWebRTCTransport({ mediaManager: new WavMediaManager() }),
  enableMic: false,
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
      listen(track).catch((e) => note("webaudio-error", String(e)));
    },
    onBotStartedSpeaking: () => note("bot-started-speaking"),
    onBotStoppedSpeaking: () => note("bot-stopped-speaking"),
    onBotOutput: (data) => {
      probe.botText.push(data);
      // Gradium's word timestamps advance each segment's spoken text: show what was heard.
      const heard = data.spoken_progress?.accumulated_text;
      if (!heard) return;
      if (!botLine) {
        botLine = document.createElement("p");
        botLine.className = "bot";
        botLine.segments = new Map();
        $("log").appendChild(botLine);
      }
      botLine.segments.set(data.segment_id, heard);
      botLine.textContent = [...botLine.segments.values()].join("");
      $("log").scrollTop = $("log").scrollHeight;
    },
    onError: (e) => {
      probe.error = JSON.stringify(e?.data ?? e);
      note("error", probe.error);
    },
  },
});

$("connect").addEventListener("click", async () => {
  try {
    await client.startBotAndConnect({ endpoint: "/start", requestData: { transport: "webrtc" } });
  } catch (e) {
    probe.error = String(e);
    setState("error");
  }
});

$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  show(text, "user");
  botLine = null;
  probe.sent.push([performance.now(), text]);
  await client.sendText(text);
});
