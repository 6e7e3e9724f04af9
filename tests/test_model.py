"""The Wav2Lip generator: state-dict parity with the official layout, shapes, the
encode-face-once path, BatchNorm folding and the FLOP count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lipbench.model import (
    FLOPS_PER_FRAME,
    Conv2d,
    Conv2dTranspose,
    Wav2Lip,
    count_conv_gflops,
    fold_batchnorm,
)

FIXTURE = Path(__file__).parent / "fixtures" / "wav2lip_state_dict.txt"


def read_layout() -> list[tuple[str, str, tuple[int, ...]]]:
    rows = []
    for line in FIXTURE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, dtype, shape = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        rows.append((key, dtype, dims))
    return rows


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
    return model


def inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 1, 80, 16, generator=g) * 8 - 4
    face = torch.rand(batch, 6, 96, 96, generator=g)
    face[:, :3, 48:] = 0
    return mel, face


@pytest.fixture(scope="module")
def model() -> Wav2Lip:
    torch.manual_seed(0)
    return randomize_bn(Wav2Lip()).eval()


def test_state_dict_matches_official_layout_exactly(model: Wav2Lip) -> None:
    expected = read_layout()
    assert len(expected) == 352
    got = [
        (k, str(v.dtype).removeprefix("torch."), tuple(v.shape))
        for k, v in model.state_dict().items()
    ]
    assert {k for k, _, _ in got} == {k for k, _, _ in expected}
    assert got == expected  # same order, dtypes and shapes too


def test_parameter_count(model: Wav2Lip) -> None:
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 1e6 - 36.3) < 0.05


@torch.no_grad()
def test_output_shape_and_range(model: Wav2Lip) -> None:
    mel, face = inputs(2)
    out = model(mel, face)
    assert out.shape == (2, 3, 96, 96)
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    feats = model.encode_face(face)
    assert [tuple(f.shape[1:]) for f in feats] == [
        (16, 96, 96),
        (32, 48, 48),
        (64, 24, 24),
        (128, 12, 12),
        (256, 6, 6),
        (512, 3, 3),
        (512, 1, 1),
    ]
    assert model.encode_audio(mel).shape == (2, 512, 1, 1)


@torch.no_grad()
def test_forward_is_deterministic(model: Wav2Lip) -> None:
    mel, face = inputs(2)
    assert torch.equal(model(mel, face), model(mel, face))


@torch.no_grad()
def test_encode_face_once_equals_forward(model: Wav2Lip) -> None:
    batch = 3
    mel, face = inputs(batch)
    one_face = face[:1]
    feats = model.encode_face(one_face)  # batch 1, broadcast inside decode
    fast = model.decode(model.encode_audio(mel), feats)
    ref = model(mel, one_face.repeat(batch, 1, 1, 1))
    assert fast.shape == ref.shape == (batch, 3, 96, 96)
    assert float((fast - ref).abs().max()) < 1e-5


@torch.no_grad()
def test_decode_rejects_mismatched_batches(model: Wav2Lip) -> None:
    mel, face = inputs(3)
    feats = model.encode_face(face[:2])
    with pytest.raises(ValueError, match="batch"):
        model.decode(model.encode_audio(mel), feats)


@torch.no_grad()
def test_fold_conv_transpose_layout() -> None:
    # in != out channels so a scale applied on the wrong weight axis cannot pass
    torch.manual_seed(1)
    block = randomize_bn(Conv2dTranspose(5, 7, 3, 2, 1, 1), seed=1).eval()
    conv = randomize_bn(Conv2d(7, 4, 3, 1, 1), seed=2).eval()
    x = torch.randn(2, 5, 6, 6)
    for m, inp in ((block, x), (conv, torch.randn(2, 7, 6, 6))):
        folded = fold_batchnorm(m)
        assert isinstance(folded.conv_block[1], nn.Identity)
        assert float((folded(inp) - m(inp)).abs().max()) < 1e-5


@torch.no_grad()
def test_fold_batchnorm_matches(model: Wav2Lip) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not folded.training
    # the original is untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    mel, face = inputs(2, seed=5)
    ref = model(mel, face)
    out = folded(mel, face)
    assert float(ref.std()) > 1e-3  # a non-degenerate comparison
    assert float((out - ref).abs().max()) < 1e-4
    frames_ref = (ref * 255).to(torch.uint8).int()
    frames_out = (out * 255).to(torch.uint8).int()
    assert int((frames_ref - frames_out).abs().max()) <= 1

    # the encode-face-once path works on the folded model too
    fast = folded.decode(folded.encode_audio(mel), folded.encode_face(face[:1]))
    assert float((fast - folded(mel, face[:1].repeat(2, 1, 1, 1))).abs().max()) < 1e-5


def test_flop_count_matches_spec(model: Wav2Lip) -> None:
    assert FLOPS_PER_FRAME["total"] == pytest.approx(
        FLOPS_PER_FRAME["face_encoder"]
        + FLOPS_PER_FRAME["audio_encoder"]
        + FLOPS_PER_FRAME["decoder"]
    )
    counted = count_conv_gflops(model)
    assert counted["total"] == pytest.approx(FLOPS_PER_FRAME["total"], rel=0.02)
    for stage, gflop in FLOPS_PER_FRAME.items():
        # the spec rounds each stage to 0.01 GFLOP
        assert counted[stage] == pytest.approx(gflop, abs=0.006), stage
    # hooks are removed afterwards
    assert all(not m._forward_hooks for m in model.modules())
