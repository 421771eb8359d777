"use strict";
// A browser call to one agent: the microphone goes to the server over WebRTC, the agent's
// voice comes back on the same peer connection, and the session's JSON events (transcript,
// speech start/stop, end) arrive on its data channel. Text from the call is only ever set
// with textContent.
(() => {
  const root = document.getElementById("call");
  const agentId = root.dataset.agentId;
  const iceServers = JSON.parse(root.dataset.iceServers || "[]");
  const offerUrl = `/v1/agents/${encodeURIComponent(agentId)}/webrtc/offer`;
  const startButton = document.getElementById("start");
  const stopButton = document.getElementById("stop");
  const statusLabel = document.getElementById("status");
  const micMeter = document.getElementById("mic-level");
  const agentMeter = document.getElementById("agent-level");
  const agentAudio = document.getElementById("agent-audio");
  const transcript = document.getElementById("transcript");
  const sessionLink = document.getElementById("session-link");

  const GATHER_WAIT_MS = 2000; // send the offer with the candidates found by then; trickle the rest
  const HANGUP_WAIT_MS = 1500;

  let call = null;

  function setStatus(text, state) {
    statusLabel.textContent = text;
    statusLabel.dataset.state = state;
  }

  function addTurn(speaker, text, interrupted) {
    const item = document.createElement("li");
    item.className = `turn ${speaker}${interrupted ? " interrupted" : ""}`;
    const who = document.createElement("span");
    who.className = "speaker";
    who.textContent = speaker === "user" ? "You" : "Agent";
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    const body = document.createElement("p");
    body.className = "text";
    body.textContent = text;
    item.append(who, time, body);
    if (interrupted) {
      const badge = document.createElement("span");
      badge.className = "badge interrupted-badge";
      badge.textContent = "interrupted";
      item.append(badge);
    }
    transcript.append(item);
    item.scrollIntoView({ block: "nearest" });
  }

  // Loudness of a stream (0..1) for a level meter.
  function levelMeter(context, stream, meter) {
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    return () => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      meter.value = Math.min(1, Math.sqrt(sum / samples.length) * 4);
    };
  }

  function onEvent(event) {
    switch (event.type) {
      case "transcript.user":
        addTurn("user", event.text, false);
        break;
      case "transcript.agent":
        addTurn("agent", event.text, event.interrupted);
        break;
      case "agent.speech.started":
        setStatus("Agent speaking", "connected");
        break;
      case "agent.speech.stopped":
        setStatus("Listening", "connected");
        break;
      case "input.speech.started":
        setStatus("You are speaking", "connected");
        break;
      case "session.error":
        setStatus(`Error: ${event.message}`, "error");
        break;
      case "session.ended":
        finish(`Call ended (${event.reason})`, "ended");
        break;
      case "signalling":
        if (event.message && event.message.type === "peerLeft") finish("Call ended", "ended");
        break;
    }
  }

  async function sendCandidates(candidates) {
    if (!candidates.length || !call || !call.pcId) return;
    const response = await fetch(offerUrl, {
      method: "PATCH",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ pc_id: call.pcId, candidates }),
    });
    if (!response.ok && response.status !== 404) console.warn("ICE candidates refused", response.status);
  }

  function waitForGathering(pc) {
    return new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const timer = setTimeout(resolve, GATHER_WAIT_MS);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async function start() {
    startButton.disabled = true;
    transcript.replaceChildren();
    sessionLink.hidden = true;
    setStatus("Starting…", "starting");
    try {
      const mic = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      const pc = new RTCPeerConnection({ iceServers });
      const audioContext = new AudioContext();
      call = { pc, mic, audioContext, pcId: null, sessionId: null, pending: [], gathered: false, meters: [], ended: false };
      const current = call;

      pc.addTransceiver(mic.getAudioTracks()[0], { direction: "sendrecv" });
      const channel = pc.createDataChannel("events", { ordered: true });
      channel.onmessage = (message) => {
        try {
          onEvent(JSON.parse(message.data));
        } catch (error) {
          console.warn("unreadable event", error);
        }
      };
      current.channel = channel;
      pc.ontrack = (event) => {
        const stream = event.streams[0] || new MediaStream([event.track]);
        agentAudio.srcObject = stream;
        agentAudio.play().catch((error) => console.warn("playback blocked", error));
        current.meters.push(levelMeter(audioContext, stream, agentMeter));
      };
      pc.onicecandidate = ({ candidate }) => {
        const item = candidate ? candidate.toJSON() : { candidate: "", sdpMid: "0", sdpMLineIndex: 0 };
        if (!candidate) current.gathered = true;
        if (current.pcId) sendCandidates([item]);
        else current.pending.push(item);
      };
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "connected") setStatus("Connected", "connected");
        else if (pc.connectionState === "failed") finish("The connection failed", "error");
        else if (pc.connectionState === "closed") finish("Call ended", "ended");
      };
      current.meters.push(levelMeter(audioContext, mic, micMeter));
      current.meterTimer = setInterval(() => current.meters.forEach((update) => update()), 100);

      await pc.setLocalDescription(await pc.createOffer());
      await waitForGathering(pc);
      current.pending = current.pending.filter((c) => c.candidate === ""); // the rest are in the SDP
      const response = await fetch(offerUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        credentials: "same-origin",
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(answer.message || `the server refused the call (${response.status})`);
      if (current.ended) return;
      current.pcId = answer.pc_id;
      current.sessionId = answer.session_id;
      root.dataset.sessionId = answer.session_id;
      await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
      await sendCandidates(current.pending.splice(0));
      setStatus("Connecting…", "connecting");
      stopButton.disabled = false;
    } catch (error) {
      finish(`Could not start the call: ${error.message}`, "error");
    }
  }

  async function hangUp() {
    if (!call) return;
    stopButton.disabled = true;
    const current = call;
    if (current.channel && current.channel.readyState === "open") {
      current.channel.send(JSON.stringify({ type: "session.end" }));
      await new Promise((resolve) => setTimeout(resolve, HANGUP_WAIT_MS));
    }
    if (!current.ended) finish("Call ended", "ended");
  }

  function finish(text, state) {
    const current = call;
    if (current && current.ended) return;
    setStatus(text, state);
    startButton.disabled = false;
    stopButton.disabled = true;
    if (!current) return;
    current.ended = true;
    clearInterval(current.meterTimer);
    micMeter.value = 0;
    agentMeter.value = 0;
    current.mic.getTracks().forEach((track) => track.stop());
    current.pc.close();
    current.audioContext.close();
    if (current.sessionId) {
      const link = sessionLink.querySelector("a");
      link.href = `/calls/${encodeURIComponent(current.sessionId)}`;
      link.textContent = current.sessionId;
      sessionLink.hidden = false;
    }
  }

  startButton.addEventListener("click", start);
  stopButton.addEventListener("click", hangUp);
})();
