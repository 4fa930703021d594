// freshrec's dashboard: polls /dashboard/data every second, keeps the last ten minutes, draws them with
// uPlot. A chart appears once its first value arrives (e.g. Kafka lag only with a Kafka source).
"use strict";

const KEEP = 600;
const ENDPOINTS = ["/predict", "/recommend", "/events"];
const rate = (key) => (prev, cur) => prev && cur[key] != null && prev[key] != null
  ? Math.max(0, (cur[key] - prev[key]) / (cur.time - prev.time)) : null;
const value = (get) => (prev, cur) => { const v = get(cur); return v == null ? null : v; };
const perEndpoint = (endpoint) => (prev, cur) => prev
  ? ((cur.requests[endpoint] || 0) - (prev.requests[endpoint] || 0)) / (cur.time - prev.time) : null;
const latency = (endpoint) => (prev, cur) => {
  if (!prev) return null;
  const n = (cur.requests[endpoint] || 0) - (prev.requests[endpoint] || 0);
  const s = (cur.latency_sum[endpoint] || 0) - (prev.latency_sum[endpoint] || 0);
  return n > 0 ? 1000 * s / n : null;
};
const total = (map) => Object.values(map || {}).reduce((a, b) => a + b, 0);
const allLetters = (prev, cur) => prev ? Math.max(0, (total(cur.dead_letters) - total(prev.dead_letters))
  / (cur.time - prev.time)) : null;
const letters = (reason) => (prev, cur) => prev
  ? Math.max(0, ((cur.dead_letters || {})[reason] || 0) - ((prev.dead_letters || {})[reason] || 0))
    / (cur.time - prev.time) : null;
const armValue = (arm, key) => (prev, cur) => { const a = (cur.arms || {})[arm]; return a ? a[key] : null; };
const CHARTS = [
  {id: "events", title: "Events learned per second", series: [["events/s", rate("events_learned")]]},
  {id: "lag", title: "Kafka consumer lag (messages)", series: [["lag", value((d) => d.kafka_lag)]]},
  {id: "quality", title: "Prequential AUC and log loss (recent window)",
   series: [["AUC", value((d) => d.window_auc)], ["log loss", value((d) => d.window_logloss)]]},
  {id: "freshness", title: "Freshness: event in -> first prediction that learned it (s)",
   series: [["p50", value((d) => d.freshness.p50)], ["p99", value((d) => d.freshness.p99)]]},
  {id: "age", title: "Served model's age (s)", series: [["age", value((d) => d.age)]]},
  {id: "version", title: "Served version and swaps per second",
   series: [["version", value((d) => d.version)], ["swaps/s", rate("swaps")]]},
  {id: "requests", title: "Requests per second", series: ENDPOINTS.map((e) => [e, perEndpoint(e)])},
  {id: "latency", title: "Mean latency per endpoint (ms)", series: ENDPOINTS.map((e) => [e, latency(e)])},
  {id: "dead", title: "Dead letters per second, by reason", series: [["all", allLetters]],
   more: (cur) => Object.keys(cur.dead_letters || {}).map((reason) => [reason, letters(reason)])},
  {id: "rows", title: "Embedding rows", series: [["rows", value((d) => d.rows)]]},
  {id: "evictions", title: "Embedding rows evicted per second", series: [["evicted/s", rate("evicted")]]},
  {id: "fusion", title: "Fusion: the online model's weight", series: [["weight", value((d) => d.fusion_weight)]]},
  {id: "arm-ctr", title: "CTR per arm, with its 95% interval", series: [], group: 3,
   more: (cur) => Object.keys(cur.arms).flatMap((arm) => [[arm, armValue(arm, "ctr")],
     [arm + " low", armValue(arm, "ctr_low")], [arm + " high", armValue(arm, "ctr_high")]])},
  {id: "arm-latency", title: "p99 latency per arm (ms)", series: [],
   more: (cur) => Object.keys(cur.arms).map((arm) => [arm, armValue(arm, "p99_ms")])},
  {id: "arm-cost", title: "CPU per request per arm, following the registry included (ms)", series: [],
   more: (cur) => Object.keys(cur.arms).map((arm) => [arm, armValue(arm, "cpu_ms_per_request_with_sync")])},
];
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];
const state = CHARTS.map((chart) => ({chart, xs: [], ys: chart.series.map(() => []), plot: null}));
let previous = null;

function cards() {   // in CHARTS' order, hidden until their first value
  for (const s of state) {
    s.card = document.createElement("div");
    s.card.className = "card";
    s.card.id = "chart-" + s.chart.id;
    s.card.style.display = "none";
    s.card.innerHTML = "<h2></h2>";
    s.card.querySelector("h2").textContent = s.chart.title;
    document.getElementById("grid").appendChild(s.card);
  }
}

function style(chart, label, k) {   // a chart with `group` series per arm: one colour per arm, its bounds dashed
  const colour = COLOURS[Math.floor(k / (chart.group || 1)) % COLOURS.length];
  return / (low|high)$/.test(label) ? {label, stroke: colour, width: 1, dash: [4, 4]}
    : {label, stroke: colour, width: 1.5};
}

function draw(s) {
  const data = [s.xs, ...s.ys];
  if (s.plot) { s.plot.setData(data); return; }
  const card = s.card;
  card.style.display = "";
  const options = {width: Math.max(380, card.clientWidth - 12), height: 180,
    series: [{}, ...s.chart.series.map(([label], k) => style(s.chart, label, k))],
    axes: [{}, {size: 72}]};
  s.plot = new uPlot(options, data, card);
}

function grow(s, series) {   // series that appeared (e.g. a new dead-letter reason), empty before now
  for (const [label, read] of series) {
    if (s.chart.series.some(([known]) => known === label)) continue;
    s.chart.series.push([label, read]);
    s.ys.push(s.xs.map(() => null));
    if (s.plot) s.plot.addSeries(style(s.chart, label, s.chart.series.length - 1));
  }
}

function header(current) {
  document.getElementById("version").textContent = current.version == null ? "none yet" : current.version;
  document.getElementById("age").textContent = current.age == null ? "-" : current.age.toFixed(1) + " s";
  const alerts = document.getElementById("alerts");
  alerts.replaceChildren(...Object.entries(current.alerts).map(([name, firing]) => {
    const tag = document.createElement("span");
    tag.textContent = name;
    if (firing) tag.className = "firing";
    return tag;
  }));
}

async function poll() {
  try {
    const current = await (await fetch("/dashboard/data", {cache: "no-store"})).json();
    header(current);
    for (const s of state) {
      if (s.chart.more) grow(s, s.chart.more(current));
      const values = s.chart.series.map(([, read]) => read(previous, current));
      if (!s.plot && values.every((v) => v == null)) continue;   // nothing to draw yet
      s.xs.push(current.time);
      values.forEach((v, k) => s.ys[k].push(v));
      if (s.xs.length > KEEP) { s.xs.shift(); s.ys.forEach((y) => y.shift()); }
      draw(s);
    }
    previous = current;
    document.body.dataset.polls = Number(document.body.dataset.polls || 0) + 1;
    document.getElementById("status").textContent = "";
  } catch (error) {
    document.getElementById("status").textContent = "server unreachable";
  } finally {
    setTimeout(poll, 1000);
  }
}

cards();
poll();
