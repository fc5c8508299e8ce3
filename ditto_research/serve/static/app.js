// The live page: pick a portrait, send the microphone (or a file) over WebRTC, play the talking head back.
// Protocol: POST /api/offer (see ditto_research/serve/webrtc.py); numbers arrive on the "stats" data channel.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);
const STATS = ["first_frame_ms", "lag_ms", "lag_p50_ms", "lag_p95_ms", "fps", "dropped", "frames", "skipped_s", "pipeline_ms"];
const ICE_GATHER_MS = 3000;

let call = null; // {pc, channel, streams, audio} of the running session

function api(path) {
  return token ? `${path}?token=${encodeURIComponent(token)}` : path;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.message || body.detail || `HTTP ${response.status}`;
  } catch (e) {
    return `HTTP ${response.status}`;
  }
}

function setState(state, message = "") {
  const pill = $("state");
  pill.className = `state ${state}`;
  pill.dataset.state = state;
  $("state-text").textContent = state;
  const line = $("message");
  line.textContent = message;
  line.className = state === "error" ? "message error" : "message";
  $("start").disabled = state === "connecting" || state === "streaming";
  $("stop").disabled = !(state === "connecting" || state === "streaming");
}

function showStats(stats) {
  for (const key of STATS) {
    const value = stats[key];
    const shown = key === "fps" || key === "skipped_s" ? Number(value).toFixed(1) : String(Math.round(value));
    $(key).textContent = value === null || value === undefined ? "–" : shown;
  }
}

// ---- portraits -------------------------------------------------------------------------------------------

async function loadPortraits(select) {
  const response = await fetch(api("/api/portraits"));
  if (!response.ok) throw new Error(await errorText(response));
  const portraits = await response.json();
  const menu = $("portrait");
  menu.replaceChildren(
    ...portraits.map((p) => new Option(`${p.name} · ${p.width}×${p.height}`, p.id))
  );
  if (select) menu.value = select;
}

async function upload(file) {
  const hint = $("upload-message");
  hint.className = "hint";
  hint.textContent = `checking ${file.name}…`;
  const response = await fetch(api("/api/portraits"), {
    method: "POST",
    // an image/* type: the server refuses others (a page elsewhere could send those without asking first)
    headers: { "X-Filename": file.name, "Content-Type": file.type.startsWith("image/") ? file.type : "image/unknown" },
    body: file,
  });
  if (!response.ok) {
    hint.className = "hint error";
    hint.textContent = await errorText(response);
    return;
  }
  const portrait = await response.json();
  await loadPortraits(portrait.id);
  hint.textContent = `added ${portrait.name}`;
}

// ---- audio sources ---------------------------------------------------------------------------------------

async function microphone() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    video: false,
  });
  return { stream, play: () => {}, close: () => stream.getTracks().forEach((t) => t.stop()) };
}

async function audioFile(onEnded) {
  const file = $("audio-file").files[0];
  if (!file) throw new Error("choose an audio file first");
  const context = new AudioContext();
  let buffer;
  try {
    buffer = await context.decodeAudioData(await file.arrayBuffer());
  } catch (e) {
    context.close();
    throw new Error(`${file.name} is not audio this browser can decode`);
  }
  const destination = context.createMediaStreamDestination();
  const node = context.createBufferSource();
  node.buffer = buffer;
  node.connect(destination);
  node.onended = onEnded;
  return {
    stream: destination.stream,
    play: () => { context.resume(); node.start(); },
    close: () => context.close(),
  };
}

// ---- the call --------------------------------------------------------------------------------------------

function waitForIce(pc) {
  // aiortc takes the candidates in the offer (no trickle): wait for gathering, bounded.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ICE_GATHER_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

function countShownFrames(video) {
  let shown = 0;
  $("shown").textContent = "0";
  if (!("requestVideoFrameCallback" in video)) return;
  const tick = () => {
    shown += 1;
    $("shown").textContent = String(shown);
    video.dataset.shown = String(shown);
    if (call) video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
}

function onChannelMessage(event) {
  const message = JSON.parse(event.data);
  if (message.type === "stats") {
    showStats(message);
  } else if (message.type === "done") {
    showStats(message);
    finish("ended", `session ended (${message.reason}) after ${message.frames} frames`);
  } else if (message.type === "error") {
    finish("error", message.message);
  }
}

async function start() {
  const portrait = $("portrait").value;
  if (!portrait) { setState("error", "no portrait: upload one first"); return; }
  const useFile = document.querySelector('input[name="source"]:checked').value === "file";
  setState("connecting", "connecting…");
  showStats({});
  try {
    const pc = new RTCPeerConnection();
    call = { pc, channel: null, audio: null };
    call.audio = useFile
      ? await audioFile(() => call && call.channel.readyState === "open" && call.channel.send('{"type":"end"}'))
      : await microphone();
    for (const track of call.audio.stream.getAudioTracks()) pc.addTrack(track, call.audio.stream);
    pc.addTransceiver("video", { direction: "recvonly" });
    const channel = pc.createDataChannel("stats");
    call.channel = channel;
    channel.onmessage = onChannelMessage;
    channel.onopen = () => call && call.audio.play();

    const video = $("video");
    const remote = new MediaStream();
    pc.ontrack = (event) => {
      remote.addTrack(event.track);
      video.srcObject = remote;
      video.muted = false;
    };
    video.onplaying = () => {
      $("video").parentElement.classList.add("live");
      if (call) setState("streaming");
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") finish("error", "the connection failed (no route to the server?)");
    };

    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc);
    const response = await fetch(api("/api/offer"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", portrait, options: [] }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    const answer = await response.json();
    if (!call || call.pc !== pc) return; // stopped meanwhile
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    $("message").textContent = `session ${answer.session}`;
    countShownFrames(video);
  } catch (e) {
    finish("error", e.message || String(e));
  }
}

function keepLastFrame(video) {
  // A closed stream turns the <video> black: show its last frame as the poster instead.
  if (!video.videoWidth) return;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  video.poster = canvas.toDataURL("image/jpeg", 0.9);
  video.srcObject = null;
}

function finish(state, message) {
  if (!call) return;
  const { pc, channel, audio } = call;
  call = null;
  keepLastFrame($("video"));
  if (channel && channel.readyState === "open" && state !== "ended") channel.send('{"type":"cancel"}');
  setTimeout(() => pc.close(), 100); // lets "cancel" leave first
  if (audio) audio.close();
  setState(state, message);
}

// ---- wiring ----------------------------------------------------------------------------------------------

function init() {
  setState("idle");
  for (const radio of document.querySelectorAll('input[name="source"]')) {
    radio.addEventListener("change", () => { $("audio-file").disabled = radio.value !== "file" || !radio.checked; });
  }
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", () => finish("ended", "stopped"));
  $("upload").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) upload(file).catch((e) => { $("upload-message").textContent = e.message; });
    event.target.value = "";
  });
  loadPortraits().catch((e) => setState("error", `cannot list portraits: ${e.message}`));
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
