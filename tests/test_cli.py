"""The `lipbench` command line: each step, and bad input → one clear line, non-zero exit,
no output file left behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import yaml
from helpers import one_line_error
from helpers import run_cli as run


@pytest.mark.parametrize("lang,text", [("ru", "Привет, мир"), ("en", "Hello, world")])
def test_tts_speaks(tmp_path, lang, text):
    out = tmp_path / f"{lang}.wav"
    proc = run("tts", "--text", text, "--lang", lang, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    samples, sr = sf.read(out)
    assert sr == info["sample_rate"] and len(samples) / sr > 0.5
    assert np.sqrt(np.mean(samples**2)) > 0.01  # real sound, not silence


def test_tts_list():
    proc = run("tts", "--list")
    assert proc.returncode == 0
    assert "piper" in proc.stdout and "espeak" in proc.stdout and "gtts" in proc.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--text", "   ", "--lang", "en"], "empty"),
        (["--text", "x" * 5001, "--lang", "en"], "5000"),
        (["--text", "hello", "--lang", "xx"], "xx"),
        (["--text", "привет", "--lang", "ru", "--engine", "piper"], "piper"),
    ],
)
def test_tts_bad_input(tmp_path, args, needle):
    out = tmp_path / "out.wav"
    line = one_line_error(run("tts", *args, "--out", str(out)))
    assert needle in line
    assert not list(tmp_path.iterdir())


def test_convert_plan_split(tmp_path, speech_wav):
    wav = tmp_path / "a.wav"
    proc = run("convert", str(speech_wav), str(wav))
    assert proc.returncode == 0, proc.stderr
    proc = run("plan", str(wav), "--chunks", "2", "--out", str(tmp_path / "plan.json"))
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["n_chunks"] == 2 and plan["chunks"][-1]["frame_end"] == plan["n_frames"]
    proc = run(
        "split",
        str(wav),
        "--plan",
        str(tmp_path / "plan.json"),
        "--out-dir",
        str(tmp_path / "chunks"),
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "chunks").iterdir()) == [
        "chunk_0.json",
        "chunk_0.wav",
        "chunk_1.json",
        "chunk_1.wav",
    ]


def test_plan_20_5_seconds(tmp_path):
    wav = tmp_path / "long.wav"
    sf.write(
        str(wav),
        np.random.default_rng(0).standard_normal(int(20.5 * 16000)).astype(np.float32) * 0.1,
        16000,
        subtype="PCM_16",
    )
    plan = json.loads(run("plan", str(wav)).stdout)
    assert plan["n_chunks"] == 2 and plan["n_frames"] == 512
    assert all(c["sample_start"] == round(c["frame_start"] * 640) for c in plan["chunks"])


def test_plan_tiny_file_is_one_chunk(tmp_path):
    wav = tmp_path / "tiny.wav"
    sf.write(str(wav), np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")
    plan = json.loads(run("plan", str(wav)).stdout)
    assert plan["n_chunks"] == 1


@pytest.mark.parametrize("content", [b"", b"definitely not audio" * 20])
def test_convert_bad_audio(tmp_path, content):
    src = tmp_path / "in.mp3"
    src.write_bytes(content)
    one_line_error(run("convert", str(src), str(tmp_path / "out.wav")))
    assert [p.name for p in tmp_path.iterdir()] == ["in.mp3"]


def test_generate_writes_video_and_record(tmp_path, config_file):
    out = tmp_path / "demo" / "result.mp4"
    proc = run(
        "generate",
        "--text",
        "Hi there.",
        "--lang",
        "en",
        "--out",
        str(out),
        "--no-progress",
        config=config_file,
    )
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(out.with_name("result.run.json").read_text())
    assert rec["weights_trained"] is False and "SEEDED RANDOM" in proc.stdout + proc.stderr
    assert rec["frames"] > 0 and out.stat().st_size > 0
    assert rec["outputs"]["video"] == str(out)


def test_generate_no_face_avatar(tmp_path, config_file):
    import cv2

    img = tmp_path / "wall.png"
    cv2.imwrite(str(img), np.full((256, 256, 3), 128, np.uint8))
    out = tmp_path / "x" / "result.mp4"
    line = one_line_error(
        run(
            "generate",
            "--text",
            "Hi.",
            "--avatar",
            str(img),
            "--out",
            str(out),
            "--no-progress",
            config=config_file,
        )
    )
    assert "face" in line.lower()
    assert not out.exists()


def test_generate_corrupt_checkpoint(tmp_path, config_file):
    cfg = yaml.safe_load(config_file.read_text())
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "wav2lip_gan.pth").write_bytes(b"<html>not a checkpoint</html>")
    cfg["weights"]["dir"] = str(wdir)
    bad = tmp_path / "config.yaml"
    bad.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    out = tmp_path / "y" / "result.mp4"
    line = one_line_error(
        run("generate", "--text", "Hi.", "--out", str(out), "--no-progress", config=bad)
    )
    assert "wav2lip_gan.pth" in line
    assert not out.exists()
