"""The Wav2Lip generator (96×96), written from the architecture facts in the spec.

Module and attribute names are chosen so that ``state_dict()`` reproduces the official
checkpoints' 352 keys exactly (see ``tests/fixtures/wav2lip_state_dict.txt``).

Besides ``forward`` the model exposes its three stages (``encode_face``, ``encode_audio``,
``decode``) so a static avatar's face features can be computed once per job and reused for
every frame. ``fold_batchnorm`` makes an inference-only copy with BatchNorm folded into the
convolutions.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import Tensor, nn

__all__ = [
    "FLOPS_PER_FRAME",
    "Conv2d",
    "Conv2dTranspose",
    "Wav2Lip",
    "count_conv_gflops",
    "fold_batchnorm",
]

# Per-frame cost from the spec, in GFLOP (1 multiply-accumulate = 2 FLOP; convolutions only).
# ``count_conv_gflops`` reproduces these numbers from the module itself.
FLOPS_PER_FRAME: dict[str, float] = {
    "face_encoder": 0.62,
    "audio_encoder": 0.19,
    "decoder": 7.12,  # face_decoder_blocks + output_block
    "total": 7.93,
}


class Conv2d(nn.Module):
    """Conv2d (with bias) → BatchNorm2d → (+ input if residual) → ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class Conv2dTranspose(nn.Module):
    """ConvTranspose2d (with bias) → BatchNorm2d → ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int,
        padding: int,
        output_padding: int = 0,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv_block(x))


def _res(c: int) -> Conv2d:
    return Conv2d(c, c, 3, 1, 1, residual=True)


class Wav2Lip(nn.Module):
    """Wav2Lip generator: mel window B×1×80×16 + face B×6×96×96 → B×3×96×96 in [0, 1].

    Face input channels 0–2 are the masked crop (lower half zero), 3–5 the reference crop,
    BGR, scaled to [0, 1].
    """

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(Conv2d(6, 16, 7, 1, 3)),  # 96
                nn.Sequential(Conv2d(16, 32, 3, 2, 1), _res(32), _res(32)),  # 48
                nn.Sequential(Conv2d(32, 64, 3, 2, 1), _res(64), _res(64), _res(64)),  # 24
                nn.Sequential(Conv2d(64, 128, 3, 2, 1), _res(128), _res(128)),  # 12
                nn.Sequential(Conv2d(128, 256, 3, 2, 1), _res(256), _res(256)),  # 6
                nn.Sequential(Conv2d(256, 512, 3, 2, 1), _res(512)),  # 3
                nn.Sequential(Conv2d(512, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0)),  # 1
            ]
        )
        self.audio_encoder = nn.Sequential(
            Conv2d(1, 32, 3, 1, 1),
            _res(32),
            _res(32),
            Conv2d(32, 64, 3, (3, 1), 1),
            _res(64),
            _res(64),
            Conv2d(64, 128, 3, 3, 1),
            _res(128),
            _res(128),
            Conv2d(128, 256, 3, (3, 2), 1),
            _res(256),
            Conv2d(256, 512, 3, 1, 0),
            Conv2d(512, 512, 1, 1, 0),
        )
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(Conv2d(512, 512, 1, 1, 0)),  # 1
                nn.Sequential(Conv2dTranspose(1024, 512, 3, 1, 0), _res(512)),  # 3
                nn.Sequential(Conv2dTranspose(1024, 512, 3, 2, 1, 1), _res(512), _res(512)),  # 6
                nn.Sequential(Conv2dTranspose(768, 384, 3, 2, 1, 1), _res(384), _res(384)),  # 12
                nn.Sequential(Conv2dTranspose(512, 256, 3, 2, 1, 1), _res(256), _res(256)),  # 24
                nn.Sequential(Conv2dTranspose(320, 128, 3, 2, 1, 1), _res(128), _res(128)),  # 48
                nn.Sequential(Conv2dTranspose(160, 64, 3, 2, 1, 1), _res(64), _res(64)),  # 96
            ]
        )
        self.output_block = nn.Sequential(
            Conv2d(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
            nn.Sigmoid(),
        )

    def encode_face(self, face: Tensor) -> list[Tensor]:
        """B×6×96×96 → the 7 encoder feature maps, shallowest (16×96×96) first."""
        feats: list[Tensor] = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        return feats

    def encode_audio(self, mel: Tensor) -> Tensor:
        """B×1×80×16 mel window → B×512×1×1 audio embedding."""
        return self.audio_encoder(mel)

    def decode(self, audio_emb: Tensor, feats: list[Tensor]) -> Tensor:
        """Audio embedding (batch B) + face features (batch B, or 1 for a static avatar) →
        B×3×96×96 in [0, 1].

        Feature maps with batch 1 are expanded (a view, no copy) to B before each
        concatenation, which is exactly equivalent to encoding the same face B times.
        """
        if len(feats) != len(self.face_decoder_blocks):
            raise ValueError(
                f"decode needs {len(self.face_decoder_blocks)} feature maps, got {len(feats)}"
            )
        batch = audio_emb.shape[0]
        x = audio_emb
        # decoder block i pairs with encoder feature 6 - i (deepest first)
        for block, feat in zip(self.face_decoder_blocks, reversed(feats), strict=True):
            x = block(x)
            if feat.shape[0] != batch:
                if feat.shape[0] != 1:
                    raise ValueError(
                        f"face features have batch {feat.shape[0]}, audio has {batch}: "
                        "they must match or the face batch must be 1"
                    )
                feat = feat.expand(batch, -1, -1, -1)
            x = torch.cat((x, feat), dim=1)
        return self.output_block(x)

    def forward(self, audio: Tensor, face: Tensor) -> Tensor:
        """audio B×1×80×16, face B×6×96×96 → B×3×96×96 in [0, 1]."""
        return self.decode(self.encode_audio(audio), self.encode_face(face))


# --------------------------------------------------------------------------- BN folding


@torch.no_grad()
def _fold_into(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (eval statistics) into ``conv`` in place: y = scale·(conv(x) − mean) + beta."""
    var = bn.running_var
    mean = bn.running_mean
    if var is None or mean is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    gamma = bn.weight if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)  # one factor per output channel
    w = conv.weight
    if isinstance(conv, nn.ConvTranspose2d):
        # ConvTranspose2d weight is (in, out/groups, kh, kw): output channels on dim 1
        if conv.groups != 1:
            raise ValueError("folding grouped ConvTranspose2d is not supported")
        w.mul_(scale.view(1, -1, 1, 1))
    else:
        # Conv2d weight is (out, in/groups, kh, kw): output channels on dim 0
        w.mul_(scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
    new_bias = (bias - mean) * scale + beta
    conv.bias = nn.Parameter(new_bias.to(w.dtype))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return a deep copy of ``model`` with every ``conv_block``'s BatchNorm folded into the
    preceding Conv2d/ConvTranspose2d and replaced by ``nn.Identity``. The input is untouched.

    The copy is in eval mode and for inference only: its state dict no longer matches the
    official checkpoint layout. Saves one elementwise pass per convolution.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        block = getattr(module, "conv_block", None)
        if not isinstance(block, nn.Sequential) or len(block) != 2:
            continue
        conv, bn = block[0], block[1]
        if isinstance(conv, nn.Conv2d | nn.ConvTranspose2d) and isinstance(bn, nn.BatchNorm2d):
            _fold_into(conv, bn)
            block[1] = nn.Identity()
    return folded


# --------------------------------------------------------------------------- cost counting


def count_conv_gflops(model: Wav2Lip, batch: int = 1) -> dict[str, float]:
    """Count convolution GFLOP per frame (2 × multiply-accumulates) for each stage, by
    running one forward pass on zeros with forward hooks. Keys as in ``FLOPS_PER_FRAME``.

    BatchNorm, ReLU, additions and the sigmoid are not counted (they are < 1 % of the total).
    """
    counts: dict[str, float] = {"face_encoder": 0.0, "audio_encoder": 0.0, "decoder": 0.0}
    stage_of: dict[nn.Module, str] = {}
    for stage, parents in (
        ("face_encoder", [model.face_encoder_blocks]),
        ("audio_encoder", [model.audio_encoder]),
        ("decoder", [model.face_decoder_blocks, model.output_block]),
    ):
        for parent in parents:
            for m in parent.modules():
                if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                    stage_of[m] = stage

    def hook(m: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        assert isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
        kh, kw = m.kernel_size
        per_position = kh * kw * (m.in_channels // m.groups)
        if isinstance(m, nn.ConvTranspose2d):
            # every input element scatters into out_channels/groups × kh × kw outputs
            macs = inputs[0].numel() * (m.out_channels // m.groups) * kh * kw
        else:
            macs = output.numel() * per_position
        counts[stage_of[m]] += 2 * macs / batch / 1e9

    handles = [m.register_forward_hook(hook) for m in stage_of]
    try:
        p = next(model.parameters())
        with torch.no_grad():
            model(
                torch.zeros(batch, 1, 80, 16, dtype=p.dtype, device=p.device),
                torch.zeros(batch, 6, 96, 96, dtype=p.dtype, device=p.device),
            )
    finally:
        for h in handles:
            h.remove()
    counts["total"] = sum(counts.values())
    return counts


@functools.cache
def state_dict_layout() -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """The generator's parameter and buffer names → (dtype, shape), without building it."""
    with torch.device("meta"):  # no memory, no init cost
        ref = Wav2Lip()
    return {k: (v.dtype, tuple(v.shape)) for k, v in ref.state_dict().items()}


def batchnorm_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
