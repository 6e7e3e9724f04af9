// /parallel_test: two panels (parallel | sequential) that call the lipbench API, time the
// request in the browser, and show the server's own stage timings, plan and video.
// Plain JS, no dependencies: the page must work offline.
"use strict";

const COMMON_LANGS = {
  en: "English", ru: "Русский", de: "Deutsch", fr: "Français", es: "Español",
  it: "Italiano", uk: "Українська", pl: "Polski", pt: "Português", tr: "Türkçe",
  nl: "Nederlands", cs: "Čeština", sv: "Svenska", fi: "Suomi", el: "Ελληνικά",
  ja: "日本語", cmn: "中文 (Mandarin)", ko: "한국어", ar: "العربية", hi: "हिन्दी",
};
const STAGES = ["tts", "convert", "detect", "split", "infer", "merge", "total"];

const results = { parallel: null, sequential: null };
let info = null;
let busy = false;

const $ = (sel, root = document) => root.querySelector(sel);
const panel = (strategy) => document.getElementById(`panel-${strategy}`);
const fmt = (s) => (s == null ? "–" : Number(s).toFixed(2));

function showPageError(message) {
  const el = $("#page-error");
  el.textContent = message;
  el.hidden = !message;
}

function fillLanguages(select, langs, preferred) {
  select.replaceChildren();
  const common = document.createElement("optgroup");
  common.label = "Common";
  const others = document.createElement("optgroup");
  others.label = "All offline voices";
  for (const tag of Object.keys(COMMON_LANGS)) {
    if (langs.includes(tag)) common.append(new Option(`${COMMON_LANGS[tag]} (${tag})`, tag));
  }
  for (const tag of langs) {
    if (!(tag in COMMON_LANGS)) others.append(new Option(tag, tag));
  }
  select.append(common, others);
  select.value = langs.includes(preferred) ? preferred : "en";
}

function weightsText(weights) {
  return Object.entries(weights || {})
    .map(([model, w]) => {
      if (!w) return `${model}: ?`;
      if (w.trained) return `${model}: ${w.name || w.path} (sha256 ${String(w.sha256).slice(0, 10)}…)`;
      return `${model}: seeded random (seed ${w.seed})`;
    })
    .join(" · ");
}

function applyInfo(data) {
  info = data;
  const badge = $("#weights-badge");
  badge.hidden = false;
  if (data.weights_trained) {
    badge.textContent = "trained checkpoints";
    badge.className = "badge";
  } else {
    badge.textContent = "⚠ untrained weights (seeded random)";
    badge.className = "badge warn";
    badge.title = "No checkpoint in weights/: the mouth comes from randomly initialised " +
      "networks, so this is not a real lip-sync. Timings are still real.";
  }
  const device = data.strategies.parallel.replicas[0]?.device;
  if (device) {
    const dev = $("#device-badge");
    dev.hidden = false;
    dev.textContent = `device: ${device}`;
  }
  for (const strategy of ["parallel", "sequential"]) {
    const p = panel(strategy);
    const s = data.strategies[strategy];
    const n = s.models.length;
    $(".models", p).textContent = `(${n} model${n === 1 ? "" : "s"}: ${s.models.join(" + ")})`;
    $(".models-ru", p).textContent = `(${n} ${n === 1 ? "модель" : n < 5 ? "модели" : "моделей"})`;
    fillLanguages($(".lang", p), data.languages, data.default_lang);
    $(".text", p).value = data.default_text;
    $(".text", p).maxLength = data.max_chars;
    const threads = s.replicas.map((r) => `${r.model}×${r.threads} thr`).join(", ");
    const w = {};
    for (const m of s.models) w[m] = data.weights[m];
    $(".weights", p).textContent = `replicas: ${threads} — weights: ${weightsText(w)}`;
  }
  const chunks = $("#panel-parallel .chunks");
  for (let k = 1; k <= data.max_chunks; k++) chunks.append(new Option(String(k), String(k)));
  updateQueue(data.queue);
  setBusy(false);
}

function updateQueue(q) {
  if (q) $("#queue-info").textContent = `queue: ${q.running}/${q.max_running} running, ` +
    `${q.waiting}/${q.max_waiting} waiting`;
}

function setBusy(value) {
  busy = value;
  for (const b of document.querySelectorAll("button.generate, #compare")) b.disabled = value || !info;
}

function startTimer(p) {
  const el = $(".timer", p);
  const t0 = performance.now();
  const tick = () => { el.textContent = `${((performance.now() - t0) / 1000).toFixed(1)} s`; };
  tick();
  const id = setInterval(tick, 100);
  return () => { clearInterval(id); tick(); return (performance.now() - t0) / 1000; };
}

function renderTimings(p, timings) {
  const body = $(".timings tbody", p);
  body.replaceChildren();
  for (const stage of STAGES) {
    if (!(stage in timings)) continue;
    const tr = document.createElement("tr");
    if (stage === "total") tr.className = "total";
    tr.innerHTML = `<td>${stage}</td><td class="num">${fmt(timings[stage])}</td>`;
    body.append(tr);
  }
}

function renderGantt(p, res) {
  const box = $(".gantt", p);
  box.replaceChildren();
  const chunks = res.chunks || [];
  const end = Math.max(...chunks.map((c) => c.end_offset_s || 0), 1e-6);
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = `inference: ${chunks.length} chunk${chunks.length === 1 ? "" : "s"} ` +
    `over ${fmt(end)} s`;
  box.append(title);
  const lanes = new Map();
  for (const c of chunks) {
    if (!lanes.has(c.replica)) {
      const lane = document.createElement("div");
      lane.className = "lane";
      box.append(lane);
      lanes.set(c.replica, lane);
    }
    const bar = document.createElement("div");
    bar.className = `bar ${c.model}`;
    bar.style.left = `${(100 * c.start_offset_s) / end}%`;
    bar.style.width = `${Math.max(2, (100 * (c.end_offset_s - c.start_offset_s)) / end)}%`;
    bar.textContent = `${c.model} · ${c.frames} fr`;
    bar.title = `chunk ${c.chunk}: frames ${c.frame_start}–${c.frame_end} on replica ` +
      `${c.replica} (${c.model}), ${fmt(c.wall_s)} s, ${c.fps} fps`;
    lanes.get(c.replica).append(bar);
  }
}

function renderResult(p, res, browserS) {
  $(".result", p).hidden = false;
  renderTimings(p, res.timings);
  renderGantt(p, res);
  const plan = res.plan || {};
  const note = plan.n_chunks === 1 && res.strategy === "parallel"
    ? ` — audio shorter than ${info.min_parallel_s} s: the planner used one chunk (pick "Chunks" to force a split)`
    : "";
  $(".meta", p).textContent = `${fmt(res.audio_duration_s)} s of audio, ${res.frames} frames, ` +
    `${plan.n_chunks} chunk(s) on ${res.models.join(" + ")}; ${fmt(res.render_fps)} frames/s; ` +
    `browser wall ${fmt(browserS)} s (queue wait ${fmt(res.queue_wait_s)} s)${note}`;
  $(".state", p).textContent = `server total ${fmt(res.timings.total)} s`;
  p.dataset.total = String(res.timings.total);
  const video = $("video", p);
  video.src = res.video_url;
  video.load();
}

async function errorMessage(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  const detail = body?.detail || resp.statusText || "request failed";
  if (resp.status === 429) {
    const after = resp.headers.get("Retry-After");
    return `Server busy: ${detail}. Retry in ${after || "a few"} s.`;
  }
  return body?.fix ? `${detail} — ${body.fix}` : String(detail);
}

async function run(strategy) {
  const p = panel(strategy);
  const err = $(".error", p);
  err.hidden = true;
  p.classList.add("running");
  $(".state", p).textContent = "running…";
  results[strategy] = null;
  p.dataset.total = "";
  updateSpeedup();
  const body = { text: $(".text", p).value, lang: $(".lang", p).value };
  const chunks = $(".chunks", p)?.value;
  if (chunks) body.chunks = Number(chunks);
  const stop = startTimer(p);
  setTimeout(refreshQueue, 300); // show this job as running (or waiting) in the footer
  try {
    const resp = await fetch(p.dataset.endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    const res = await resp.json();
    res.request = body;
    results[strategy] = res;
    renderResult(p, res, stop());
    return res;
  } catch (e) {
    stop();
    $(".state", p).textContent = "failed";
    err.textContent = e.message;
    err.hidden = false;
    throw e;
  } finally {
    p.classList.remove("running");
    updateSpeedup();
    refreshQueue();
  }
}

function updateSpeedup() {
  const box = $("#speedup");
  const par = results.parallel;
  const seq = results.sequential;
  if (!par || !seq) {
    box.hidden = true;
    return;
  }
  const speedup = seq.timings.total / par.timings.total;
  box.hidden = false;
  box.classList.toggle("slower", speedup < 1);
  box.dataset.value = String(speedup);
  $("#speedup-value").textContent = `${speedup.toFixed(2)}×${speedup >= 1 ? " ⚡" : ""}`;
  const same = par.request.text === seq.request.text && par.request.lang === seq.request.lang;
  $("#speedup-detail").textContent =
    `sequential ${fmt(seq.timings.total)} s ÷ parallel ${fmt(par.timings.total)} s` +
    (speedup < 1 ? " — parallel was slower here" : "") +
    (same ? "" : " (different texts: not a fair comparison)");
}

async function refreshQueue() {
  try {
    const resp = await fetch("/api/health");
    if (resp.ok) updateQueue((await resp.json()).queue);
  } catch { /* the footer is informational */ }
}

async function generateOne(strategy) {
  setBusy(true);
  try { await run(strategy); } catch { /* shown in the panel */ } finally { setBusy(false); }
}

async function compare() {
  const left = panel("parallel");
  const right = panel("sequential");
  $(".text", right).value = $(".text", left).value;
  $(".lang", right).value = $(".lang", left).value;
  results.parallel = results.sequential = null;
  updateSpeedup();
  setBusy(true);
  try {
    // One after the other: each job has the machine to itself.
    await run("parallel");
    await run("sequential");
  } catch { /* shown in the panel */ } finally {
    setBusy(false);
  }
}

async function init() {
  for (const strategy of ["parallel", "sequential"]) {
    const p = panel(strategy);
    $(".generate", p).addEventListener("click", () => generateOne(strategy));
    $("video", p).addEventListener("loadeddata", () => {
      p.dataset.videoReady = "1";
    });
    $("video", p).addEventListener("emptied", () => { delete p.dataset.videoReady; });
    $("video", p).addEventListener("error", () => {
      const err = $(".error", p);
      err.textContent = "the browser could not play this video (H.264/AAC MP4)";
      err.hidden = !$("video", p).getAttribute("src");
    });
  }
  $("#compare").addEventListener("click", compare);
  try {
    const resp = await fetch("/api/info");
    if (!resp.ok) throw new Error(await errorMessage(resp));
    applyInfo(await resp.json());
  } catch (e) {
    showPageError(`Could not reach the lipbench server: ${e.message}`);
  }
}

document.addEventListener("DOMContentLoaded", init);
