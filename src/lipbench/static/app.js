// /parallel_test: two panels (parallel | sequential) that call the lipbench API, time the
// request in the browser, and show the server's own stage timings, plan and video.
// Compare synthesises once and renders that one WAV with both strategies (audio_id), in
// pairs of alternating order; its speed-up is render-only (WAV → MP4), TTS shown apart, and
// it says when the pairs disagree (within the noise). With Stream on, each job runs as a stream
// job (stream.js) and its video plays while it renders; the panels show the time to the first
// playable frame and the stall time beside the total.
// Plain JS; the one library (hls.js, for Stream) is vendored: the page must work offline.
"use strict";

const COMMON_LANGS = {
  en: "English", ru: "Русский", de: "Deutsch", fr: "Français", es: "Español",
  it: "Italiano", uk: "Українська", pl: "Polski", pt: "Português", tr: "Türkçe",
  nl: "Nederlands", cs: "Čeština", sv: "Svenska", fi: "Suomi", el: "Ελληνικά",
  ja: "日本語", cmn: "中文 (Mandarin)", ko: "한국어", ar: "العربية", hi: "हिन्दी",
};
const STAGES = ["tts", "convert", "detect", "split", "infer", "merge", "total"];
const LATENCY_ROWS = [
  ["first_playable_s", "first-playable", "first playable frame",
    "from the request: a stream's first segment, or the finished MP4 without Stream"],
  ["stall_s", "stall", "stall", "how long playback at the video's fps waited for frames"],
];

let comparison = null; // { pairs: [{par, seq}], first } while / after Compare
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
    const w = {};
    for (const m of s.models) w[m] = data.weights[m];
    $(".weights", p).textContent = `replicas: ${threadsText(s.replicas)} — weights: ${weightsText(w)}`;
  }
  const chunks = $("#panel-parallel .chunks");
  for (let k = 1; k <= data.max_chunks; k++) chunks.append(new Option(String(k), String(k)));
  updateQueue(data.queue);
  setBusy(false);
}

// "gan×2 thr, nogan×1 thr": each replica (or chunk row) once, with its threads.
function threadsText(rows) {
  const seen = new Map();
  for (const r of rows) seen.set(`${r.replica}/${r.model}/${r.threads}`, `${r.model}×${r.threads} thr`);
  return [...seen.values()].join(", ");
}

// Why a parallel job rendered one chunk: asked for, short audio, or the planner's choice.
function oneChunkNote(res) {
  if (res.strategy !== "parallel" || (res.plan || {}).n_chunks !== 1) return "";
  if (res.request?.chunks === 1) return " — one chunk, as asked (Chunks: 1)";
  if (res.audio_duration_s < info.min_parallel_s) {
    return ` — audio shorter than ${info.min_parallel_s} s: the planner used one chunk ` +
      '(pick "Chunks" to force a split)';
  }
  return ' — the planner used one chunk (pick "Chunks" to force a split)';
}

function updateQueue(q) {
  if (q) $("#queue-info").textContent = `queue: ${q.running}/${q.max_running} running, ` +
    `${q.waiting}/${q.max_waiting} waiting`;
}

function setBusy(value) {
  busy = value;
  for (const b of document.querySelectorAll("button.generate, #compare, #pairs, #stream")) {
    b.disabled = value || !info;
  }
}

function startTimer(p) {
  const el = $(".timer", p);
  const t0 = performance.now();
  const tick = () => { el.textContent = `${((performance.now() - t0) / 1000).toFixed(1)} s`; };
  tick();
  const id = setInterval(tick, 100);
  return () => { clearInterval(id); tick(); return (performance.now() - t0) / 1000; };
}

function renderTimings(p, res) {
  const timings = res.timings;
  const body = $(".timings tbody", p);
  body.replaceChildren();
  for (const stage of STAGES) {
    if (!(stage in timings)) continue;
    const tr = document.createElement("tr");
    if (stage === "total") tr.className = "total";
    tr.innerHTML = `<td>${stage}</td><td class="num">${fmt(timings[stage])}</td>`;
    body.append(tr);
  }
  for (const [key, cls, label, title] of LATENCY_ROWS) {
    if (!(key in timings)) continue;
    const tr = document.createElement("tr");
    tr.className = cls;
    tr.title = title;
    tr.innerHTML = `<td>${label}</td><td class="num">${fmt(timings[key])}</td>`;
    body.append(tr);
  }
  const tr = document.createElement("tr");
  tr.className = "render";
  tr.title = "total − tts − convert: what Compare compares";
  tr.innerHTML = `<td>render (WAV → MP4)</td><td class="num">${fmt(res.render_s)}</td>`;
  body.append(tr);
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
  renderTimings(p, res);
  renderGantt(p, res);
  const plan = res.plan || {};
  const note = oneChunkNote(res);
  const ran = (res.chunks || []).filter((c) => c.threads != null);
  if (ran.length) { // the threads the chunks really ran on (a one-chunk job: the full replica)
    $(".weights", p).textContent = `this job ran on: ${threadsText(ran)} — weights: ` +
      weightsText(res.weights);
  }
  const source = res.audio_from
    ? `the WAV of job ${res.audio_from.slice(0, 8)}… (no TTS)`
    : "speech synthesised here";
  $(".meta", p).textContent = `${fmt(res.audio_duration_s)} s of audio (${source}; sha256 ` +
    `${res.audio_sha256.slice(0, 10)}…), ${res.frames} frames, ` +
    `${plan.n_chunks} chunk(s) on ${res.models.join(" + ")}; ${fmt(res.render_fps)} frames/s; ` +
    `render ${fmt(res.render_s)} s; browser wall ${fmt(browserS)} s ` +
    `(queue wait ${fmt(res.queue_wait_s)} s)${note}`;
  $(".state", p).textContent = `server total ${fmt(res.timings.total)} s`;
  p.dataset.total = String(res.timings.total);
  showServerLatency(p, res);
  const link = $(".download", p);
  link.hidden = !res.streamed;
  $("a.mp4", p).href = res.video_url;
  if (res.streamed) return; // it plays on from its playlist
  detachStream(p);
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

function panelBody(strategy) {
  const p = panel(strategy);
  const body = { text: $(".text", p).value, lang: $(".lang", p).value };
  const chunks = $(".chunks", p)?.value;
  if (chunks) body.chunks = Number(chunks);
  return body;
}

async function postJob(p, body) {
  const resp = await fetch(p.dataset.endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!resp.ok) throw new Error(await errorMessage(resp));
  return resp.json();
}

async function run(strategy, body) {
  const p = panel(strategy);
  const err = $(".error", p);
  const streamed = $("#stream").checked;
  err.hidden = true;
  p.classList.add("running");
  $(".state", p).textContent = "running…";
  p.dataset.total = "";
  delete p.dataset.playing;
  $(".latency", p).hidden = !streamed;
  $(".latency", p).classList.toggle("pending", streamed); // until the record's figures come
  $(".latency .server", p).textContent = streamed ? "waiting for the first playable frame…" : "";
  $(".latency .browser", p).textContent = "";
  $(".download", p).hidden = true;
  if (streamed) detachStream(p); // the new job's stream replaces the last video
  const t0 = performance.now();
  const stop = startTimer(p);
  setTimeout(refreshQueue, 300); // show this job as running (or waiting) in the footer
  try {
    const res = streamed
      ? await runStreamJob(p, body, t0, (text) => { $(".state", p).textContent = text; })
      : await postJob(p, body);
    res.request = body;
    res.streamed = streamed;
    renderResult(p, res, stop());
    return res;
  } catch (e) {
    stop();
    $(".latency", p).classList.remove("pending");
    $(".latency", p).hidden = true;
    $(".state", p).textContent = "failed";
    err.textContent = e.message;
    err.hidden = false;
    throw e;
  } finally {
    p.classList.remove("running");
    refreshQueue();
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// The verdict on a set of paired ratios (sequential render ÷ parallel render).
function noiseVerdict(ratios) {
  const lo = Math.min(...ratios);
  const hi = Math.max(...ratios);
  const range = `${lo.toFixed(2)}–${hi.toFixed(2)}×`;
  if (ratios.length === 1) {
    return { noisy: true, text: "One pair only: a single comparison cannot tell a real " +
      "difference from machine noise — run 3 or more pairs." };
  }
  if (lo <= 1 && hi >= 1) {
    return { noisy: true, text: `Within the noise: the ${ratios.length} pairs disagree on ` +
      `which strategy is faster (range ${range}).` };
  }
  const who = lo > 1 ? "parallel faster" : "parallel slower";
  return { noisy: false, text: `All ${ratios.length} pairs agree: ${who} (range ${range}).` };
}

// One job at a time keeps up to `cores` threads busy, so a 1-minute load well above the core
// count means other work shared the CPU during these timings (it favours neither side
// predictably: a stalled thread hurts one 2-thread replica more than two 1-thread ones).
function busyNote(jobs) {
  const load = Math.max(...jobs.map((j) => j.load_1m));
  const cores = jobs[0].cores;
  if (load <= cores + 1) return "";
  return ` The machine was busy (1-minute load up to ${load.toFixed(1)} on ${cores} cores): ` +
    "other work ran during these timings — treat the result as noise.";
}

function updateSpeedup() {
  const box = $("#speedup");
  const pairs = comparison?.pairs || [];
  if (!pairs.length) {
    box.hidden = true;
    return;
  }
  const ratios = pairs.map((x) => x.seq.render_s / x.par.render_s);
  const speedup = median(ratios);
  const verdict = noiseVerdict(ratios);
  const busy = busyNote(pairs.flatMap((x) => [x.seq, x.par]));
  if (busy) verdict.noisy = true;
  box.hidden = false;
  box.classList.toggle("slower", speedup < 1);
  box.classList.toggle("noisy", verdict.noisy);
  box.dataset.value = String(speedup);
  box.dataset.ratios = JSON.stringify(ratios);
  $("#speedup-value").textContent = `${speedup.toFixed(2)}×${speedup >= 1 && !verdict.noisy ? " ⚡" : ""}`;
  const seqMed = median(pairs.map((x) => x.seq.render_s));
  const parMed = median(pairs.map((x) => x.par.render_s));
  $("#speedup-detail").textContent = `render only (WAV → MP4), ` +
    (pairs.length === 1 ? "one pair" : `median of ${pairs.length} pairs`) +
    `: sequential ${fmt(seqMed)} s ÷ parallel ${fmt(parMed)} s` +
    (speedup < 1 ? " — parallel was slower here" : "");
  $("#speedup-noise").textContent = verdict.text + busy;
  const first = comparison.first;
  const hashes = new Set(pairs.flatMap((x) => [x.seq.audio_sha256, x.par.audio_sha256]));
  showLatencySummary(pairs);
  $("#speedup-tts").textContent = `Speech synthesis ran once, not in the speed-up: ` +
    `tts ${fmt(first.timings.tts)} s + convert ${fmt(first.timings.convert)} s ` +
    `(${first.tts?.engine || "?"}, ${fmt(first.audio_duration_s)} s of audio). ` +
    (hashes.size === 1
      ? `Every render used that same WAV (sha256 ${first.audio_sha256.slice(0, 12)}…).`
      : "The WAVs differ between renders: not a fair comparison.");
  const list = $("#pairs-list");
  list.replaceChildren();
  pairs.forEach((x, i) => {
    const li = document.createElement("li");
    li.textContent = `${ratios[i].toFixed(2)}× — sequential ${fmt(x.seq.render_s)} s, ` +
      `parallel ${fmt(x.par.render_s)} s (${x.order})`;
    list.append(li);
  });
}

async function refreshQueue() {
  try {
    const resp = await fetch("/api/health");
    if (resp.ok) updateQueue((await resp.json()).queue);
  } catch { /* the footer is informational */ }
}

async function generateOne(strategy) {
  comparison = null; // a single run is not a comparison
  updateSpeedup();
  setBusy(true);
  try { await run(strategy, panelBody(strategy)); } catch { /* shown in the panel */ } finally {
    setBusy(false);
  }
}

function showProgress(text) {
  const el = $("#compare-progress");
  el.textContent = text;
  el.hidden = !text;
}

async function compare() {
  const left = panel("parallel");
  const right = panel("sequential");
  $(".text", right).value = $(".text", left).value;
  $(".lang", right).value = $(".lang", left).value;
  const n = Number($("#pairs").value) || 1;
  const withChunks = (body) => {
    const chunks = $(".chunks", left).value;
    return chunks ? { ...body, chunks: Number(chunks) } : body;
  };
  comparison = { pairs: [], first: null };
  updateSpeedup();
  setBusy(true);
  try {
    // One job at a time, so neither timing includes the other's work. The first job
    // synthesises the speech; every later one renders its WAV (same audio on both sides).
    showProgress(`pair 1 of ${n}: parallel (synthesising the speech once)…`);
    const first = await run("parallel", withChunks(panelBody("parallel")));
    comparison.first = first;
    const audio = { audio_id: first.audio_id };
    showProgress(`pair 1 of ${n}: sequential…`);
    const seq1 = await run("sequential", audio);
    comparison.pairs.push({ par: first, seq: seq1, order: "parallel first" });
    updateSpeedup();
    for (let i = 1; i < n; i++) {
      // Alternate the order: a drift in machine load then does not favour one side.
      const seqFirst = i % 2 === 1;
      const order = seqFirst ? ["sequential", "parallel"] : ["parallel", "sequential"];
      const got = {};
      for (const strategy of order) {
        showProgress(`pair ${i + 1} of ${n}: ${strategy}…`);
        got[strategy] = await run(strategy, strategy === "parallel" ? withChunks(audio) : audio);
      }
      comparison.pairs.push({ par: got.parallel, seq: got.sequential, order: `${order[0]} first` });
      updateSpeedup();
    }
  } catch { /* shown in the panel */ } finally {
    showProgress("");
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
