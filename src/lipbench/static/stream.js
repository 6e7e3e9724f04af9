// Stream mode of /parallel_test: start a stream job, poll its status, and play its HLS
// playlist while it renders (hls.js, vendored under /static/vendor/, over Media Source
// Extensions; a browser with native HLS plays it directly). The browser also measures when
// playback started and how long it waited for frames. Jobs this page started and has not
// seen end are cancelled (DELETE) when the page is left; the server cancels them anyway
// once nobody polls them. Also the panels' latency line (first playable frame, stall, total)
// and Compare's latency summary.
"use strict";

const STREAM_POLL_MS = 250;
const activeStreams = new Set(); // status URLs of this page's queued or running stream jobs
const players = new Map(); // panel id → { hls, ctl, t0, firstPlayS, waitS, waitingSince }

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function detachStream(p) {
  const pl = players.get(p.id);
  if (!pl) return;
  pl.ctl.abort(); // its event listeners
  if (pl.hls) pl.hls.destroy();
  players.delete(p.id);
  const video = p.querySelector("video");
  video.pause();
  video.removeAttribute("src");
  video.load();
}

// What this browser saw: when the first frame played (from the click) and how long playback
// then waited for frames.
function browserLatency(p) {
  const pl = players.get(p.id);
  if (!pl || pl.firstPlayS == null) return "";
  const waiting = pl.waitingSince == null ? 0 : (performance.now() - pl.waitingSince) / 1000;
  return `this browser: playing ${pl.firstPlayS.toFixed(2)} s after the click, ` +
    `waited ${(pl.waitS + waiting).toFixed(2)} s for frames`;
}

function showBrowserLatency(p) {
  const el = p.querySelector(".latency .browser");
  el.textContent = browserLatency(p);
}

function attachStream(p, url, t0) {
  detachStream(p);
  const video = p.querySelector("video");
  const ctl = new AbortController();
  const pl = { hls: null, ctl, t0, firstPlayS: null, waitS: 0, waitingSince: null };
  players.set(p.id, pl);
  const on = (event, fn) => video.addEventListener(event, fn, { signal: ctl.signal });
  on("playing", () => {
    const now = performance.now();
    if (pl.firstPlayS == null) pl.firstPlayS = (now - t0) / 1000;
    else if (pl.waitingSince != null) pl.waitS += (now - pl.waitingSince) / 1000;
    pl.waitingSince = null;
    p.dataset.playing = "1";
    showBrowserLatency(p);
  });
  on("waiting", () => {
    if (pl.firstPlayS != null && pl.waitingSince == null) pl.waitingSince = performance.now();
    showBrowserLatency(p);
  });
  // Autoplay with sound needs a user gesture (the click that started the job counts); a
  // browser that still refuses gets the video muted rather than not playing.
  const play = () => video.play().catch(() => {
    video.muted = true;
    return video.play().catch(() => {});
  });
  if (window.Hls && Hls.isSupported()) {
    // From the first segment (not the live edge); a playlist that grows is reloaded each
    // segment, and playback waits at its end for the next one.
    const hls = new Hls({ startPosition: 0, enableWorker: true });
    pl.hls = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, play);
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError();
        return;
      }
      const err = p.querySelector(".error");
      err.textContent = `stream playback failed (${data.details}); the finished MP4 is ` +
        "linked below the video once the job ends";
      err.hidden = false;
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url; // native HLS
    play();
  } else {
    throw new Error("this browser cannot play HLS (no Media Source Extensions): turn Stream off");
  }
}

function streamStateText(s, attached) {
  if (s.state === "queued") return "queued (another job is running)…";
  if (s.state === "running" && !attached) return "rendering; waiting for the first segment…";
  if (s.state === "running") return "playing while rendering…";
  return s.state;
}

// Start a stream job and follow it to its end; its video plays from its first segment on.
// Resolves with the job's result (what /api/generate answers); rejects with its error.
async function runStreamJob(p, body, t0, onStatus) {
  const resp = await fetch(p.dataset.streamEndpoint, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!resp.ok) throw new Error(await errorMessage(resp));
  const job = await resp.json();
  p.dataset.streamJob = job.id;
  activeStreams.add(job.status_url);
  let attached = false;
  let ended = false; // the server says the job is over: nothing to cancel
  try {
    for (;;) {
      const r = await fetch(job.status_url);
      if (!r.ok) throw new Error(await errorMessage(r));
      const s = await r.json();
      ended = ["done", "failed", "cancelled"].includes(s.state);
      if (!attached && (s.playable || s.state === "done")) {
        attachStream(p, job.playlist_url, t0);
        attached = true;
      }
      onStatus(streamStateText(s, attached));
      showBrowserLatency(p);
      if (s.state === "done") return s.result;
      if (s.state === "failed" || s.state === "cancelled") {
        throw new Error(s.error ? `${s.error.detail} — ${s.error.fix}` : `job ${s.state}`);
      }
      await sleep(STREAM_POLL_MS);
    }
  } finally {
    activeStreams.delete(job.status_url);
    // Given up on a job still going (a failed poll, a page error): cancel it rather than
    // leave it rendering until the server's idle cancel.
    if (!ended) fetch(job.status_url, { method: "DELETE" }).catch(() => {});
  }
}

// Time to the first playable frame beside total and stall time (the server's record).
function showServerLatency(p, res) {
  const t = res.timings;
  const box = $(".latency", p);
  box.hidden = false;
  box.classList.remove("pending");
  const speech = (t.tts || 0) + (t.convert || 0);
  $(".latency .server", p).textContent = `first playable frame ${fmt(t.first_playable_s)} s` +
    (speech > 0.005 && t.first_playable_s != null ? ` (${fmt(t.first_playable_s - speech)} s after the speech)` : "") +
    ` · stall ${fmt(t.stall_s)} s · total ${fmt(t.total)} s` +
    (res.streamed ? "" : " (without Stream the video plays once it is finished).");
}

// Stream: the medians of the time to the first playable frame (after the speech: the first
// job also synthesised it) and of the stall time, per strategy.
function showLatencySummary(pairs) {
  const el = $("#speedup-latency");
  const jobs = pairs.flatMap((x) => [x.par, x.seq]);
  el.hidden = !jobs.every((j) => j.streamed);
  if (el.hidden) return;
  const afterSpeech = (j) => j.timings.first_playable_s - j.timings.tts - j.timings.convert;
  const med = (key, f) => fmt(median(pairs.map((x) => f(x[key]))));
  el.textContent = "Stream — first playable frame after the speech (median): " +
    `parallel ${med("par", afterSpeech)} s, sequential ${med("seq", afterSpeech)} s; ` +
    `stall: parallel ${med("par", (j) => j.timings.stall_s)} s, ` +
    `sequential ${med("seq", (j) => j.timings.stall_s)} s.`;
}

// Leaving the page: cancel its running stream jobs (keepalive lets the request outlive it).
window.addEventListener("pagehide", () => {
  for (const url of activeStreams) {
    fetch(url, { method: "DELETE", keepalive: true }).catch(() => {});
  }
});
