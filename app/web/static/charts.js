// Charts drawn with the vendored Chart.js from the JSON API: the overview's from /v1/analytics,
// the session page's latency waterfall from /v1/sessions/{id}, and its recording's waveform.
// Each chart is kept in window.switchboardCharts by its canvas id; a drawn section gets
// data-state="drawn" (or "error").
"use strict";

const COLORS = ["#2f5bea", "#1f8a4c", "#b7791f", "#c4352b", "#7b4fd6", "#1a9aa8", "#d45d9c", "#6b7385"];
const charts = {};
window.switchboardCharts = charts;

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

function draw(id, config) {
  const options = { responsive: true, maintainAspectRatio: false, animation: false, ...config.options };
  charts[id] = new Chart(document.getElementById(id), { ...config, options });
}

function bucketLabel(start, bucket) {
  return bucket === "hour" ? `${start.slice(5, 10)} ${start.slice(11, 13)}:00` : start.slice(0, 10);
}

function color(index) {
  return COLORS[index % COLORS.length];
}

// One stacked dataset per key of each bucket's `field` (an object of amounts).
function stackedBy(buckets, field, names = {}) {
  const keys = [...new Set(buckets.flatMap((bucket) => Object.keys(bucket[field])))];
  return keys.map((key, index) => ({
    label: names[key] || key,
    data: buckets.map((bucket) => bucket[field][key] || 0),
    backgroundColor: color(index),
  }));
}

const STACKED = { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } };

function seconds(value) {
  return value === null ? "—" : `${value.toFixed(2)} s`;
}

async function drawOverview(root) {
  const params = new URLSearchParams({ from: root.dataset.from, to: root.dataset.to, bucket: root.dataset.bucket });
  if (root.dataset.agentId) params.set("agent_id", root.dataset.agentId);
  const [calls, latency, cost] = await Promise.all(
    ["calls", "latency", "cost"].map((kind) => getJSON(`/v1/analytics/${kind}?${params}`)),
  );
  const labels = calls.buckets.map((bucket) => bucketLabel(bucket.start, calls.bucket));

  document.getElementById("stat-calls").textContent = calls.calls;
  document.getElementById("stat-failed").textContent = calls.failed;
  document.getElementById("stat-latency").textContent = `${seconds(latency.p50_secs)} / ${seconds(latency.p95_secs)}`;
  document.getElementById("stat-cost").textContent = cost.total.toFixed(4);

  draw("calls-chart", {
    type: "bar",
    data: {
      labels,
      datasets: [
        { label: "Calls", data: calls.buckets.map((b) => b.calls), backgroundColor: color(0) },
        { label: "Failed", data: calls.buckets.map((b) => b.failed), backgroundColor: color(3) },
      ],
    },
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  const reasons = Object.keys(calls.end_reasons);
  draw("end-reasons-chart", {
    type: "doughnut",
    data: {
      labels: reasons,
      datasets: [{ data: reasons.map((r) => calls.end_reasons[r]), backgroundColor: reasons.map((_, i) => color(i)) }],
    },
    options: { plugins: { legend: { position: "right" } } },
  });
  draw("latency-chart", {
    type: "line",
    data: {
      labels,
      datasets: [
        { label: "p50", data: latency.buckets.map((b) => b.p50_secs), borderColor: color(0), backgroundColor: color(0) },
        { label: "p95", data: latency.buckets.map((b) => b.p95_secs), borderColor: color(2), backgroundColor: color(2) },
      ],
    },
    options: { spanGaps: true, scales: { y: { beginAtZero: true } } },
  });
  draw("cost-agent-chart", {
    type: "bar",
    data: { labels, datasets: stackedBy(cost.buckets, "by_agent", cost.agent_names) },
    options: STACKED,
  });
  draw("cost-stage-chart", {
    type: "bar",
    data: { labels, datasets: stackedBy(cost.buckets, "by_stage") },
    options: STACKED,
  });
}

// The parts of a turn as Pipecat's UserBotLatencyObserver names them; others show their key.
const PART_LABELS = {
  endpointing_wait: "Endpointing",
  transcription: "Transcription",
  turn_detection: "Turn detection",
  llm_inference: "LLM first token",
  sentence_aggregation: "Sentence aggregation",
  speech_synthesis: "TTS first audio",
  output_transport: "Output",
  pipeline: "Pipeline",
};

// The session's turns as horizontal bars: each turn's parts laid end to end inside its
// voice-to-voice time (outlined). On the call's `timeline` (x: seconds since the call started)
// the turns sit where they happened, with each barge-in until the agent stopped; otherwise
// every turn starts at 0 (x: seconds since the caller's end of speech).
function turnBars(session, timeline) {
  const { turns, interruptions } = session.latency;
  const origin = Date.parse(session.started_at) / 1000;
  const rows = [
    ...turns.map((turn, index) => ({ turn, index, at: timeline ? turn.at - origin : 0 })),
    ...(timeline ? interruptions : []).map((barge) => ({ barge, at: barge.at - origin })),
  ].sort((a, b) => a.at - b.at);
  const labels = rows.map((row) =>
    row.turn ? `Turn ${row.index + 1} · ${row.turn.voice_to_voice_secs.toFixed(2)} s` : `Barge-in · ${row.barge.stop_secs.toFixed(2)} s`,
  );
  const keys = [...new Set(turns.flatMap((turn) => Object.keys(turn.parts)))];
  const datasets = keys.map((key, index) => ({
    label: PART_LABELS[key] || key,
    data: rows.map((row) => {
      if (!row.turn || !(key in row.turn.parts)) return null;
      let start = row.at;
      for (const [part, secs] of Object.entries(row.turn.parts)) {
        if (part === key) return [start, start + secs];
        start += secs;
      }
      return null;
    }),
    backgroundColor: color(index),
    grouped: false,
    order: 1,
  }));
  datasets.push({
    label: "Voice-to-voice",
    data: rows.map((row) => (row.turn ? [row.at, row.at + row.turn.voice_to_voice_secs] : null)),
    backgroundColor: "rgba(0, 0, 0, 0)",
    borderColor: "#1d2330",
    borderWidth: 2,
    borderSkipped: false,
    grouped: false,
    order: 0,
  });
  if (timeline) {
    datasets.push({
      label: "Barge-in until the agent stopped",
      data: rows.map((row) => (row.barge ? [row.at, row.at + row.barge.stop_secs] : null)),
      backgroundColor: "#c4352b",
      grouped: false,
      order: 1,
    });
  }
  const axis = timeline ? "seconds since the call started" : "seconds since the caller's end of speech";
  return {
    type: "bar",
    data: { labels, datasets },
    options: {
      indexAxis: "y",
      scales: { x: { beginAtZero: true, title: { display: true, text: axis } } },
      plugins: {
        tooltip: {
          callbacks: { label: (item) => `${item.dataset.label}: ${(item.raw[1] - item.raw[0]).toFixed(3)} s` },
        },
      },
    },
  };
}

async function drawSession(root) {
  const session = await getJSON(`/v1/sessions/${encodeURIComponent(root.dataset.sessionId)}`);
  const turns = session.latency ? session.latency.turns : [];
  if (!turns.length) {
    root.querySelector(".charts").replaceWith(Object.assign(document.createElement("p"), {
      className: "muted placeholder",
      textContent: "No turns were measured on this call.",
    }));
    return;
  }
  draw("waterfall-chart", turnBars(session, false));
  // Calls recorded before turns carried their start have no timeline.
  const timed = session.started_at && [...turns, ...session.latency.interruptions].every((row) => row.at);
  if (timed) draw("timeline-chart", turnBars(session, true));
  else document.getElementById("timeline-chart").closest("section").remove();
}

// The recording's two channels (caller above the line, agent below), with the transcript's
// turns marked; clicking the waveform or a turn plays from there.
async function drawWaveform(box, audio) {
  const response = await fetch(audio.src);
  if (!response.ok) throw new Error(`the recording answered ${response.status}`);
  const bytes = await response.arrayBuffer();
  // The player plays the fetched copy: it can seek in it (the streamed original can't be).
  audio.src = URL.createObjectURL(new Blob([bytes], { type: "audio/wav" }));
  const decoder = new OfflineAudioContext(2, 1, 8000);
  const recording = await decoder.decodeAudioData(bytes.slice(0));
  const canvas = box.querySelector("canvas");
  const width = (canvas.width = canvas.clientWidth * devicePixelRatio);
  const height = (canvas.height = canvas.clientHeight * devicePixelRatio);
  const context = canvas.getContext("2d");
  const middle = height / 2;
  const channels = [0, Math.min(1, recording.numberOfChannels - 1)].map((c) => recording.getChannelData(c));
  const perColumn = Math.max(1, Math.floor(recording.length / width));
  channels.forEach((samples, channel) => {
    context.fillStyle = channel === 0 ? "#1f8a4c" : "#2f5bea";
    for (let x = 0; x < width; x++) {
      let peak = 0;
      for (let i = x * perColumn; i < (x + 1) * perColumn && i < samples.length; i++) peak = Math.max(peak, Math.abs(samples[i]));
      const bar = Math.max(1, peak * middle);
      context.fillRect(x, channel === 0 ? middle - bar : middle, 1, bar);
    }
  });
  const turns = document.querySelectorAll("#transcript .turn[data-offset]");
  context.fillStyle = "#b7791f";
  for (const turn of turns) {
    context.fillRect((Number(turn.dataset.offset) / recording.duration) * width, 0, 2 * devicePixelRatio, height);
  }
  const playFrom = (secs) => {
    audio.currentTime = Math.min(secs, recording.duration);
    audio.play();
  };
  box.addEventListener("click", (event) => {
    playFrom((event.offsetX / box.clientWidth) * recording.duration);
  });
  for (const turn of turns) turn.addEventListener("click", () => playFrom(Number(turn.dataset.offset)));
  box.dataset.duration = recording.duration.toFixed(2);
}

function whenDrawn(root, drawing) {
  drawing.then(
    () => { root.dataset.state = "drawn"; },
    (error) => {
      root.dataset.state = "error";
      const message = document.createElement("p");
      message.className = "error";
      message.textContent = `The charts could not be drawn: ${error.message}`;
      root.prepend(message);
    },
  );
}

document.addEventListener("DOMContentLoaded", () => {
  const overview = document.getElementById("overview");
  if (overview) whenDrawn(overview, drawOverview(overview));
  const latency = document.getElementById("latency");
  if (latency) whenDrawn(latency, drawSession(latency));
  const waveform = document.getElementById("waveform");
  if (waveform) whenDrawn(waveform, drawWaveform(waveform, document.getElementById("recording")));
});
