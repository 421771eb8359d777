// Charts drawn with the vendored Chart.js from the JSON API: the overview's from /v1/analytics,
// the session page's from /v1/sessions/{id}. Each chart is kept in window.switchboardCharts by
// its canvas id; a drawn section gets data-state="drawn" (or "error").
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
});
