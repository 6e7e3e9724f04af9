"""Issue 26, the command line: a live stream played to its end after the run, step commands
that never overwrite their own input, merge that checks chunk order and publishes all or
nothing, SIGTERM handled like Ctrl-C, replicas that end with their parent.

Each test failed before its fix (see the commits)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, one_line_error, run_cli, sha256

from lipbench import audio, video
from lipbench.ffmpeg import ffmpeg_exe
from lipbench.plan import Chunk, Plan

ENC = video.EncoderSettings(fps=25.0)


def _cli(config_file: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "lipbench.cli", "--config", str(config_file), *map(str, args)]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["sequential", "parallel"])
def test_the_printed_live_playlist_plays_to_its_end(config_file, speech_wav, tmp_path, strategy):
    """A player that is behind (it plays in real time, `-re`) reads every frame through the
    printed path, although the run publishes its files and ends long before it does."""
    out = tmp_path / "live" / "r.mp4"
    chunks = ["--chunks", "2"] if strategy == "parallel" else []
    proc = subprocess.Popen(
        _cli(config_file, "generate", "--audio", speech_wav, "--out", out, "--no-progress",
             "--stream", "--strategy", strategy, *chunks),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    playlist = None
    for line in proc.stdout:
        if line.startswith("streaming: "):
            playlist = line.split()[1]
            break
    assert playlist, proc.stderr.read() if proc.stderr else ""
    player = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-re", "-live_start_index", "0", "-i", playlist,
         "-map", "0:v", "-f", "null", "-"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    frames = int(re.findall(r"frame=\s*(\d+)", player.stderr)[-1])
    expected = video.count_frames(out)[0]
    assert frames == expected, player.stderr[-2000:]
    assert "Failed to reload playlist" not in player.stderr
    assert (
        Path(playlist).read_text() == (out.parent / "r.files" / "stream" / "index.m3u8").read_text()
    )


def test_step_commands_refuse_to_overwrite_their_input(tmp_path, speech_wav):
    wav = tmp_path / "s.wav"
    wav.write_bytes(Path(speech_wav).read_bytes())
    os.link(wav, tmp_path / "alias.wav")
    before = sha256(wav)
    for args in (["convert", wav, wav], ["convert", wav, tmp_path / "alias.wav"],
                 ["plan", wav, "--out", wav]):  # fmt: skip
        line = one_line_error(run_cli(*args))
        assert "is the input" in line and "write the result to another file" in line
    # split: an input named like one of its outputs, in the output folder
    named = tmp_path / "chunk_0.wav"
    named.write_bytes(wav.read_bytes())
    line = one_line_error(run_cli("split", named, "--out-dir", tmp_path, "--chunks", "2"))
    assert "is the input" in line
    assert sha256(wav) == before and sha256(named) == before


def _plan_of(sizes: list[int]) -> Plan:
    chunks, start = [], 0
    for k, n in enumerate(sizes):
        chunks.append(Chunk(k, start, start + n, start * 640, (start + n) * 640, "gan"))
        start += n
    return Plan(start / 25, 25.0, start, start * 640, 16000, "fixed", chunks)


def test_merge_refuses_chunks_out_of_order_and_publishes_all_or_nothing(config_file, tmp_path):
    plan = _plan_of([20, 30])
    plan.save(tmp_path / "plan.json")
    wav = audio.write_wav16k(tmp_path / "a.wav", np.zeros(plan.n_samples, np.float32))
    files = []
    for c in plan.chunks:
        frames = [np.full((64, 64, 3), 40, np.uint8)] * c.n_frames
        video.encode_frames(frames, tmp_path / f"{c.index}.mp4", ENC)
        files.append(tmp_path / f"{c.index}.mp4")
    base = ["merge", "--plan", tmp_path / "plan.json", "--audio", wav]
    line = one_line_error(run_cli(*base, "--out", tmp_path / "x.mp4", "--chunks", *files[::-1], config=config_file))  # fmt: skip
    assert "chunk file 0" in line and "plan's order" in line
    assert not (tmp_path / "x.mp4").exists()
    # --record needs each chunk's stats: a failure leaves no video behind
    proc = run_cli(*base, "--out", tmp_path / "y.mp4", "--record", tmp_path / "y.json",
                   "--chunks", *files, config=config_file)  # fmt: skip
    assert proc.returncode != 0 and not (tmp_path / "y.mp4").exists()
    assert not list(tmp_path.glob(".y.*"))
    assert run_cli(*base, "--out", tmp_path / "z.mp4", "--chunks", *files, config=config_file).returncode == 0  # fmt: skip


def test_an_out_that_is_a_folder_is_refused_before_any_work(config_file, speech_wav, tmp_path):
    (tmp_path / "d.mp4").mkdir()
    t0 = time.monotonic()
    line = one_line_error(run_cli("generate", "--audio", speech_wav, "--out", tmp_path / "d.mp4", config=config_file))  # fmt: skip
    assert "existing folder" in line and time.monotonic() - t0 < 60
    assert list((tmp_path / "d.mp4").iterdir()) == []


@pytest.mark.slow
def test_sigterm_is_like_ctrl_c(config_file, speech_wav, tmp_path):
    """kill / timeout / docker stop / Slurm send SIGTERM: one line, exit 143, nothing left."""
    long_wav = tmp_path / "long.wav"
    audio.write_wav16k(long_wav, np.tile(audio.read_wav(speech_wav), 6))
    out = tmp_path / "o" / "r.mp4"
    proc = subprocess.Popen(_cli(config_file, "generate", "--audio", long_wav, "--out", out, "--no-progress"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.parent.glob(".r.staging-*/r.files/chunks/.chunk_0.*")):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("error: ")] == [
        "error: terminated (SIGTERM) — nothing was published; run the command again"
    ]
    assert not out.exists() and not list(out.parent.glob(".r.staging-*"))


@pytest.mark.slow
def test_replicas_end_with_their_parent_however_it_dies(cfg, tmp_path):
    """A parent killed with SIGKILL (no cleanup at all) takes its replica processes and the
    resource tracker along."""
    script = (
        "import json, sys, time\n"
        "from lipbench.pools import Pools\n"
        "from lipbench.request import Settings\n"
        "cfg = json.loads(sys.argv[1])\n"
        "pool = Pools(Settings.from_config(cfg)).get(['gan', 'gan'], 1)\n"
        "print(json.dumps(pool.pids()), flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(cfg)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    timer = threading.Timer(240, proc.kill)
    timer.start()
    try:
        pids = json.loads(proc.stdout.readline())
    finally:
        timer.cancel()
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    import psutil

    # every process it started: the replicas, multiprocessing's resource tracker
    pids = sorted({*pids, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))})
    assert len(pids) >= 3
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


def test_messages_say_what_they_measure(tmp_path, config_file):
    """tts reports the speech's length apart from the time it took; --list --all shows every
    language; generate --help explains each flag; --device cuda is named as the flag."""
    proc = run_cli(
        "tts",
        "--text",
        "Hello there, this is a test.",
        "--engine",
        "espeak",
        "--out",
        tmp_path / "s.wav",
    )
    info = json.loads(proc.stdout)
    assert info["speech_s"] == pytest.approx(audio.duration_s(tmp_path / "s.wav"), abs=1e-3)
    assert info["synthesis_s"] > 0 and "seconds" not in info
    listed = run_cli("tts", "--list", "--all").stdout
    espeak = next(ln for ln in listed.splitlines() if ln.startswith("espeak"))
    assert " ru," in espeak and "…" not in espeak
    assert "--all lists every one" in run_cli("tts", "--list").stdout
    from lipbench.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["generate"]
    assert [a.option_strings[0] for a in sub._actions if not a.help] == []
    helptext = " ".join(run_cli("generate", "--help").stdout.split())
    assert "(default: sequential)" in helptext and "(default: results/demo/result.mp4)" in helptext
    import torch

    if not torch.cuda.is_available():
        line = one_line_error(run_cli("generate", "--device", "cuda", "--out", tmp_path / "x.mp4", config=config_file))  # fmt: skip
        assert "--device cuda" in line and "--device auto" in line


def test_a_first_run_measures_the_rest_after_its_video(cfg, monkeypatch, capsys):
    """A first run on a host takes a quick provisional calibration (its first frame comes
    within seconds); the CLI measures the rest after publishing, once, and says so."""
    from types import SimpleNamespace

    from lipbench import cli, tuning
    from lipbench.request import Settings

    calls = []
    monkeypatch.setattr(tuning, "refine_replica", lambda spec: calls.append(spec) or {"backend": "openvino", "precision": "fp32", "batch_size": 16})  # fmt: skip

    def record(calibration):
        render = SimpleNamespace(calibration=calibration, threads=2)
        return SimpleNamespace(replicas=[SimpleNamespace(model="gan", device="cpu", render=render)])

    settings = Settings.from_config(cfg)
    cli._refine_after_first_video(settings, record({"provisional": False}))
    cli._refine_after_first_video(settings, record(None))
    assert calls == []
    cli._refine_after_first_video(settings, record({"provisional": True}))
    assert [(s.model, s.threads) for s in calls] == [("gan", 2)]
    assert "once per machine" in capsys.readouterr().out
