"""Checkpoint registry and loading: seeded-random fallback for missing files, strict loading
of official-format files, and a clear WeightsError for every kind of bad file."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lipbench.errors import WeightsError
from lipbench.model import Wav2Lip
from lipbench.weights import (
    WeightsInfo,
    checkpoint_path,
    load_generator,
    load_state_dict_file,
    save_official_checkpoint,
    seeded_random_generator,
    sha256_file,
)


def inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 1, 80, 16, generator=g) * 8 - 4
    face = torch.rand(batch, 6, 96, 96, generator=g)
    face[:, :3, 48:] = 0
    return mel, face


@torch.no_grad()
def run(model: nn.Module, batch: int = 2) -> torch.Tensor:
    return model(*inputs(batch))


def state_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def source_model() -> Wav2Lip:
    return seeded_random_generator(seed=3)


@pytest.fixture(scope="module")
def official_file(source_model: Wav2Lip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "wav2lip_gan.pth"
    save_official_checkpoint(source_model, path)
    return path


@pytest.fixture(scope="module")
def official_sd(source_model: Wav2Lip) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in source_model.state_dict().items()}


def expect_error(path: Path, *phrases: str) -> WeightsError:
    with pytest.raises(WeightsError) as exc:
        load_generator("gan", weights_dir=path.parent, files={"gan": path.name})
    msg = str(exc.value)
    assert str(path) in msg
    for phrase in phrases:
        assert phrase.lower() in msg.lower(), msg
    assert exc.value.fix  # always says how to fix it
    return exc.value


# --------------------------------------------------------------------------- registry


def test_checkpoint_path_defaults_and_overrides(tmp_path: Path) -> None:
    assert checkpoint_path("gan") == Path("weights/wav2lip_gan.pth")
    assert checkpoint_path("nogan") == Path("weights/wav2lip.pth")
    assert checkpoint_path("gan", tmp_path) == tmp_path / "wav2lip_gan.pth"
    assert checkpoint_path("gan", tmp_path, {"gan": "x.pth"}) == tmp_path / "x.pth"
    assert checkpoint_path("mine", tmp_path, {"mine": "m.pth"}) == tmp_path / "m.pth"
    with pytest.raises(WeightsError, match="unknown checkpoint name"):
        checkpoint_path("nope")


# --------------------------------------------------------------------------- seeded random


def test_missing_file_gives_seeded_random_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lipbench.weights"):
        model, info = load_generator("gan", weights_dir=tmp_path, seed=7)
    assert info == WeightsInfo("gan", None, "seeded-random", None, 7, False)
    assert not model.training
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and warnings[0].name == "lipbench.weights"
    text = warnings[0].getMessage()
    assert "untrained" in text.lower()
    assert str(tmp_path / "wav2lip_gan.pth") in text


@pytest.mark.slow
def test_seeded_random_is_deterministic_and_not_degenerate(tmp_path: Path) -> None:
    a, _ = load_generator("nogan", weights_dir=tmp_path, seed=1)
    b, _ = load_generator("nogan", weights_dir=tmp_path, seed=1)
    c, _ = load_generator("nogan", weights_dir=tmp_path, seed=2)
    assert state_hash(a) == state_hash(b) != state_hash(c)
    out_a = run(a)
    assert torch.equal(out_a, run(b))
    assert out_a.shape == (2, 3, 96, 96)
    assert float(out_a.min()) >= 0 and float(out_a.max()) <= 1

    # the output must depend on the audio, not just the face (default init alone would not)
    mel, face = inputs(4)
    with torch.no_grad():
        out = a(mel, face[:1].expand(4, -1, -1, -1))
    assert float(out.std(dim=0).mean()) > 1e-2


def test_seeded_random_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    seeded_random_generator(seed=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.process
def test_seeded_random_identical_across_processes() -> None:
    # a different thread count changes summation order; the weights must not change
    code = (
        "import torch, hashlib; torch.set_num_threads(1)\n"
        "from lipbench.weights import seeded_random_generator\n"
        "m = seeded_random_generator(seed=5)\n"
        "h = hashlib.sha256()\n"
        "for k, v in m.state_dict().items():\n"
        "    h.update(k.encode()); h.update(v.contiguous().numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert res.stdout.strip() == state_hash(seeded_random_generator(seed=5))


# --------------------------------------------------------------------------- good files


@pytest.mark.slow
def test_official_format_round_trip(
    official_file: Path, source_model: Wav2Lip, caplog: pytest.LogCaptureFixture
) -> None:
    raw = torch.load(official_file, weights_only=True)
    assert all(k.startswith("module.") for k in raw["state_dict"])
    assert {"global_step", "global_epoch", "optimizer"} <= raw.keys()

    with caplog.at_level(logging.WARNING, logger="lipbench.weights"):
        model, info = load_generator("gan", weights_dir=official_file.parent)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert info.source == "file" and info.trained and info.seed is None
    assert info.path == str(official_file)
    assert info.sha256 == sha256_file(official_file)
    assert info.sha256 == hashlib.sha256(official_file.read_bytes()).hexdigest()
    assert not model.training
    assert next(model.parameters()).device.type == "cpu"
    assert state_hash(model) == state_hash(source_model)
    assert torch.equal(run(model), run(source_model))


def test_bare_state_dict_without_prefix(
    tmp_path: Path, official_sd: dict[str, torch.Tensor], source_model: Wav2Lip
) -> None:
    path = tmp_path / "bare.pth"
    torch.save(official_sd, path)
    model, _ = load_generator("gan", weights_dir=tmp_path, files={"gan": "bare.pth"})
    assert torch.equal(run(model), run(source_model))


def test_extra_top_level_keys_ignored(
    tmp_path: Path, official_sd: dict[str, torch.Tensor], source_model: Wav2Lip
) -> None:
    path = tmp_path / "extra.pth"
    ckpt = {
        "state_dict": official_sd,  # no prefix this time
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4}]},
        "global_step": 250000,
        "global_epoch": 42,
    }
    torch.save(ckpt, path)
    sd = load_state_dict_file(path)
    assert sd.keys() == official_sd.keys()
    model, _ = load_generator("gan", weights_dir=tmp_path, files={"gan": "extra.pth"})
    assert torch.equal(run(model), run(source_model))


def test_checkpoint_without_num_batches_tracked_loads(
    tmp_path: Path, official_sd: dict[str, torch.Tensor], source_model: Wav2Lip
) -> None:
    # BatchNorm checkpoints from before PyTorch 0.4.1 lack this buffer
    sd = {k: v for k, v in official_sd.items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": sd}, tmp_path / "old.pth")
    model, _ = load_generator("gan", weights_dir=tmp_path, files={"gan": "old.pth"})
    assert torch.equal(run(model), run(source_model))


# --------------------------------------------------------------------------- bad files


def test_not_a_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "wav2lip_gan.pth"
    path.write_text("this is not a checkpoint\n" * 20)
    err = expect_error(path, "cannot be read")
    assert err.__cause__ is not None


@pytest.mark.parametrize(
    ("content", "hint"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>Not found</body></html>", "html"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n", "lfs"),
    ],
)
def test_common_non_checkpoints_are_named(tmp_path: Path, content: bytes, hint: str) -> None:
    path = tmp_path / "wav2lip_gan.pth"
    path.write_bytes(content)
    expect_error(path, hint)


def test_truncated_file(tmp_path: Path, official_file: Path) -> None:
    data = official_file.read_bytes()
    path = tmp_path / "wav2lip_gan.pth"
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "truncated")


def test_wrong_shapes(tmp_path: Path, official_sd: dict[str, torch.Tensor]) -> None:
    sd = dict(official_sd)
    key = "face_decoder_blocks.3.0.conv_block.0.weight"
    sd[key] = torch.zeros(768, 383, 3, 3)
    path = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": sd}, path)
    expect_error(path, key, "(768, 383, 3, 3)", "(768, 384, 3, 3)")


def test_missing_and_unexpected_keys(tmp_path: Path, official_sd: dict[str, torch.Tensor]) -> None:
    sd = {k: v for k, v in official_sd.items() if not k.startswith("output_block.")}
    sd["extra_head.weight"] = torch.zeros(2)
    path = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    expect_error(path, "missing keys", "output_block.", "unexpected keys", "extra_head.weight")


def test_nan_weights(tmp_path: Path, official_sd: dict[str, torch.Tensor]) -> None:
    sd = dict(official_sd)
    w = sd["audio_encoder.0.conv_block.0.weight"].clone()
    w[0, 0, 0, 0] = float("nan")
    sd["audio_encoder.0.conv_block.0.weight"] = w
    path = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": sd}, path)
    expect_error(path, "nan", "audio_encoder.0.conv_block.0.weight")


def _tiny_block(prefix: str, cin: int, cout: int) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.conv_block.0.weight": torch.zeros(cout, cin, 3, 3),
        f"{prefix}.conv_block.0.bias": torch.zeros(cout),
        f"{prefix}.conv_block.1.weight": torch.ones(cout),
        f"{prefix}.conv_block.1.bias": torch.zeros(cout),
        f"{prefix}.conv_block.1.running_mean": torch.zeros(cout),
        f"{prefix}.conv_block.1.running_var": torch.ones(cout),
        f"{prefix}.conv_block.1.num_batches_tracked": torch.tensor(0),
    }


def test_syncnet_checkpoint(tmp_path: Path) -> None:
    # SyncNet: face_encoder / audio_encoder are plain Sequential stacks (no *_blocks)
    sd = {**_tiny_block("face_encoder.0", 15, 32), **_tiny_block("audio_encoder.0", 1, 32)}
    path = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "global_step": 1}, path)
    expect_error(path, "syncnet", "not the wav2lip generator")


def test_discriminator_checkpoint(tmp_path: Path) -> None:
    sd = {
        **_tiny_block("face_encoder_blocks.0.0", 3, 32),
        "binary_pred.0.weight": torch.zeros(1, 512, 1, 1),
        "binary_pred.0.bias": torch.zeros(1),
    }
    path = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": sd}, path)
    expect_error(path, "discriminator", "binary_pred")


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wav2lip_gan.pth"
    torch.save(nn.Linear(2, 2), path)
    expect_error(path, "pickled python objects")


@pytest.mark.parametrize(
    "obj",
    [
        [torch.zeros(1)],
        {"global_step": 3},
        {"state_dict": [1, 2]},
        {"state_dict": {"a": 1}},
    ],
)
def test_wrong_structure(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "wav2lip_gan.pth"
    torch.save(obj, path)
    expect_error(path)


def test_load_state_dict_file_raises_too(tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    path.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="x.pth"):
        load_state_dict_file(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "wav2lip_gan.pth").mkdir()
    expect_error(tmp_path / "wav2lip_gan.pth", "not a regular file")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_on_cuda(official_file: Path, source_model: Wav2Lip) -> None:
    model, _ = load_generator("gan", weights_dir=official_file.parent, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    mel, face = inputs(2)
    with torch.no_grad():
        out = model(mel.cuda(), face.cuda()).cpu()
    assert float((out - run(source_model)).abs().max()) < 1e-3
    rnd, _ = load_generator("gan", weights_dir=official_file.parent / "none", device="cuda")
    assert next(rnd.parameters()).device.type == "cuda"


def test_a_random_bytes_checkpoint_is_one_line_without_torchs_cut_text(tmp_path: Path) -> None:
    """A file that is no PyTorch file is said so; torch's own (long) text is not quoted,
    cut mid-word (it was: '… Re-running `torch.]')."""
    path = tmp_path / "wav2lip_gan.pth"
    path.write_bytes(bytes(range(256)) * 16)  # no PyTorch header
    with pytest.raises(WeightsError) as err:
        load_generator("gan", tmp_path)
    text = str(err.value)
    assert "does not look like a PyTorch file" in text and "[" not in text and "\n" not in text
    from lipbench.errors import first_sentence

    assert (
        first_sentence("Weights only load failed. In PyTorch 2.6, we changed")
        == "Weights only load failed."
    )
    assert first_sentence("word " * 60, limit=22) == "word word word word …"
