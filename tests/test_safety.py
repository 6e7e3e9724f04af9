"""Never lose a user's file, never report a broken video as success (issue 13).

Each case checks the exit code, the one-line message, the files left in the output folder,
and that the inputs are unchanged (hash before and after)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from helpers import REPO, one_line_error, run_cli, sha256, tree

from lipbench import audio, video
from lipbench.plan import make_plan

pytestmark = pytest.mark.process  # every case runs the CLI

ENC = video.EncoderSettings(fps=25.0)


@pytest.fixture(scope="module")
def stereo48k(tmp_path_factory, speech_wav) -> Path:
    """The user's original: 48 kHz stereo, named audio.wav."""
    d = tmp_path_factory.mktemp("orig")
    mono = audio.read_wav(speech_wav)
    up = np.interp(np.arange(len(mono) * 3) / 3, np.arange(len(mono)), mono).astype(np.float32)
    path = d / "audio.wav"
    sf.write(path, np.stack([up, up * 0.5], axis=1), 48000, subtype="PCM_16")
    return path


def generate(config_file, *args) -> subprocess.CompletedProcess:
    return run_cli("generate", "--no-progress", *args, config=config_file, timeout=600)


def test_two_runs_in_one_folder_keep_each_other_and_the_input(config_file, stereo48k, tmp_path):
    """Cases 1–3: a second --out in the same folder never touches the first run's files;
    an input named like a side file (audio.wav) beside the outputs is never overwritten;
    the record names only files that exist."""
    d = stereo48k.parent
    before = sha256(stereo48k)
    first = generate(config_file, "--audio", stereo48k, "--out", d / "result.mp4")
    assert first.returncode == 0, first.stderr
    snapshot = tree(d)
    second = generate(config_file, "--audio", stereo48k, "--out", d / "video.mp4")
    assert second.returncode == 0, second.stderr
    after = tree(d)
    assert {k: v for k, v in after.items() if k in snapshot} == snapshot  # run 1 untouched
    assert sha256(stereo48k) == before  # the 48 kHz stereo original is intact
    assert sf.info(stereo48k).samplerate == 48000 and sf.info(stereo48k).channels == 2
    new = set(after) - set(snapshot)
    assert all(k.startswith(("video.mp4", "video.run.json", "video.files/")) for k in new), new
    for name in ("result", "video"):
        rec = json.loads((d / f"{name}.run.json").read_text())
        for key, path in rec["outputs"].items():
            assert path is None or Path(path).exists(), (name, key, path)
        assert rec["outputs"]["video"] == str(d / f"{name}.mp4")


def test_output_equal_to_an_input_is_refused(config_file, stereo48k, tmp_path):
    clip = tmp_path / "clip.mp4"
    shutil.copy(stereo48k, tmp_path / "in.wav")
    video.encode_frames([np.zeros((64, 64, 3), np.uint8)] * 5, clip, ENC)
    h = sha256(clip)
    line = one_line_error(generate(config_file, "--audio", clip, "--out", clip))
    assert "would overwrite the input" in line and sha256(clip) == h
    line = one_line_error(
        generate(config_file, "--audio", tmp_path / "in.wav", "--avatar", clip, "--out", clip)
    )
    assert "would overwrite the input" in line and sha256(clip) == h


def test_killed_run_leaves_the_previous_result_whole(config_file, speech_wav, tmp_path):
    """Case 4: SIGKILL mid-render over an older result: the folder still holds the old
    result, record and side files, unchanged, and nothing of the new run is published."""
    long_wav = tmp_path / "long.wav"
    audio.write_wav16k(long_wav, np.tile(audio.read_wav(speech_wav), 8))
    out = tmp_path / "result.mp4"
    assert generate(config_file, "--audio", speech_wav, "--out", out).returncode == 0
    published = {k: v for k, v in tree(tmp_path).items() if not k.startswith(".")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lipbench.cli", "--config", str(config_file), "generate",
         "--audio", str(long_wav), "--out", str(out), "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until the new run is rendering
        staged = list(tmp_path.glob(".result.staging-*/result.files/chunks/.chunk_0.*"))
        if staged or proc.poll() is not None:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert {k: v for k, v in tree(tmp_path).items() if not k.startswith(".")} == published
    # the next run for this --out clears the dead run's staging folder
    assert generate(config_file, "--audio", speech_wav, "--out", out).returncode == 0
    assert not list(tmp_path.glob(".result.staging-*"))


@pytest.fixture(scope="module")
def fake_job(tmp_path_factory, speech_wav):
    """A plan and two video-only chunks of the right frame counts (no model needed)."""
    d = tmp_path_factory.mktemp("merge")
    samples = audio.read_wav(speech_wav)
    plan = make_plan(samples, 25, 2, ["gan", "nogan"])
    plan.save(d / "plan.json")
    wav = audio.convert_to_wav16k(speech_wav, d / "audio.wav")
    chunks = []
    for c in plan.chunks:
        frames = [np.full((96, 96, 3), 10 * (i % 20), np.uint8) for i in range(c.n_frames)]
        video.encode_frames(frames, d / f"{c.index}.mp4", ENC)
        chunks.append(d / f"{c.index}.mp4")
    return d, plan, wav, chunks


def test_merge_refuses_a_truncated_chunk(config_file, fake_job, tmp_path):
    """Case 5: a chunk with too few frames → a clear error and no result."""
    d, plan, wav, chunks = fake_job
    ok = tmp_path / "ok.mp4"
    args = ["merge", "--plan", d / "plan.json", "--audio", wav, "--out"]
    proc = run_cli(*args, ok, "--chunks", *chunks, config=config_file)
    assert proc.returncode == 0, proc.stderr
    assert video.count_frames(ok)[0] == plan.n_frames
    short = tmp_path / "short.mp4"
    n = plan.chunks[1].n_frames // 2
    video.encode_frames([np.zeros((96, 96, 3), np.uint8)] * n, short, ENC)
    bad = tmp_path / "bad.mp4"
    line = one_line_error(run_cli(*args, bad, "--chunks", chunks[0], short, config=config_file))
    # caught per chunk, before the merge: the short file is named with its frame count
    assert f"short.mp4) has {n} frames, the plan's chunk 1 has {plan.chunks[1].n_frames}" in line
    assert not bad.exists() and not list(tmp_path.glob(".bad*"))


def test_non_finite_audio_is_refused(config_file, tmp_path):
    """Case 6: NaN/±Inf samples → a clear error (they used to become −32768)."""
    for name, fill in (("nan", np.nan), ("inf", np.inf)):
        x = np.sin(np.arange(16000) / 7).astype(np.float32)
        x[::2] = fill
        src = tmp_path / f"{name}.wav"
        sf.write(src, x, 16000, subtype="FLOAT")
        out = tmp_path / name / "r.mp4"
        line = one_line_error(generate(config_file, "--audio", src, "--out", out))
        assert "non-finite samples" in line
        assert not out.parent.exists() or not any(out.parent.iterdir())


def test_truncated_mp3_is_refused(config_file, speech_wav, tmp_path):
    """Case 7: an MP3 cut short decodes to less than it declares → both figures named."""
    from lipbench.ffmpeg import run_ffmpeg

    mp3 = tmp_path / "s.mp3"
    run_ffmpeg(["-i", speech_wav, "-c:a", "libmp3lame", "-b:a", "64k", mp3], what="test mp3")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 3])
    line = one_line_error(run_cli("convert", cut, tmp_path / "o.wav"))
    assert "declares" in line and "decodes" in line
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--fps", "0"], "--fps must be > 0"),
        (["--fps", "1000"], "--fps must be > 0 and ≤ 120"),
        (["--chunks", "0"], "--chunks must be > 0"),
        (["--chunks", "-1"], "--chunks must be > 0"),
        (["--threads", "0"], "--threads must be > 0"),
        (["--threads", "-1"], "--threads must be > 0"),
        (["--strategy", "parallel", "--models", "gan,foo"], "'foo'"),
    ],
)
def test_bad_flags_are_named(config_file, speech_wav, tmp_path, args, needle):
    """Cases 8 and 10: every numeric flag checked, named, before any replica starts."""
    t0 = time.monotonic()
    line = one_line_error(
        generate(config_file, "--audio", speech_wav, "--out", tmp_path / "r.mp4", *args)
    )
    assert needle in line
    if args[0] != "--strategy":  # a flag's value: the fix names the flag, not a config file
        assert "config" not in line.split("—")[-1]
    assert time.monotonic() - t0 < 60  # refused up front, not after a model load
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_is_one_line_and_exit_130(config_file, speech_wav, tmp_path):
    """Case 9: SIGINT to the process group mid-render: one line, exit 130, no replica
    traceback, nothing published, no replica left."""
    long_wav = tmp_path / "long.wav"
    audio.write_wav16k(long_wav, np.tile(audio.read_wav(speech_wav), 8))
    out = tmp_path / "o" / "r.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lipbench.cli", "--config", str(config_file), "generate",
         "--audio", str(long_wav), "--out", str(out), "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.parent.glob(".r.staging-*/r.files/chunks/.chunk_0.*")):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert len([ln for ln in err.splitlines() if ln.startswith("error: ")]) == 1
    assert not out.exists() and not list(out.parent.glob(".r.staging-*"))
    deadline = time.monotonic() + 10  # a child may take a moment to see its parent gone
    while left := subprocess.run(
        ["pgrep", "-s", str(proc.pid)], capture_output=True, text=True
    ).stdout.strip():
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left == "", subprocess.run(
        ["ps", "-o", "pid,args", "-s", str(proc.pid)], capture_output=True, text=True
    ).stdout


def test_clear_lines_for_bad_files_and_configs(config_file, tmp_path):
    """Case 10: a PNG named .wav, an unwritable folder, invalid YAML."""
    import cv2

    png = tmp_path / "img.wav"
    ok, buf = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))
    png.write_bytes(buf.tobytes())
    assert "has no audio stream" in one_line_error(run_cli("convert", png, tmp_path / "o.wav"))

    if os.geteuid() != 0:  # root writes anywhere; the read-only case needs a normal user
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert "permission" in one_line_error(run_cli("convert", png, ro / "o.wav")).lower()
    full = tmp_path / "not_a_dir"
    full.write_text("x")
    assert "not_a_dir" in one_line_error(
        run_cli("tts", "--text", "Hi.", "--engine", "espeak", "--out", full / "s.wav")
    )

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("fps: [25\nseed: {")
    line = one_line_error(run_cli("plan", png, config=bad_yaml))
    assert "not valid YAML" in line

    cfg = yaml.safe_load(config_file.read_text())
    cfg["fps"] = 1000
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump(cfg))
    line = one_line_error(run_cli("plan", png, config=big))
    assert "fps" in line and str(big) in line  # a config value: the fix names that file


def test_large_avatar_is_downscaled_end_to_end(config_file, speech_wav, tmp_path):
    """Case 11: a 4000×4000 avatar → frames within face.max_side (1920), one log line."""
    import cv2
    from helpers import astronaut_bgr

    big = tmp_path / "big.png"
    canvas = np.full((4000, 4000, 3), 128, np.uint8)
    canvas[1000:3000, 1000:3000] = cv2.resize(
        astronaut_bgr(), (2000, 2000), interpolation=cv2.INTER_AREA
    )
    cv2.imwrite(str(big), canvas)
    out = tmp_path / "o" / "big.mp4"
    proc = generate(config_file, "--audio", speech_wav, "--avatar", big, "--out", out)
    assert proc.returncode == 0, proc.stderr
    info = video.probe(out)
    assert (info.width, info.height) == (1920, 1920)
    assert len([ln for ln in proc.stderr.splitlines() if "downscaled" in ln]) == 1
