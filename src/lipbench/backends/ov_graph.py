"""Wav2Lip as OpenVINO graphs, built op by op from the torch module (BatchNorm folded into
each convolution's constants on the way).

Building the graph directly takes well under a second, where ``openvino.convert_model``
traces the module through TorchScript (≈ 40 s on a loaded 2-core host): a replica that
starts OpenVINO must not pay that on every start. The translation covers exactly the
layers ``lipbench.model.Wav2Lip`` uses (Conv2d/ConvTranspose2d + folded BN, residual add,
ReLU, concatenation, the output 1×1 conv and sigmoid); anything else raises.

Three graphs, each with a dynamic batch, holding each weight once between them (so the
engine can run the cheap encoders in fp32 and only the decoder in bf16; ``openvino_cpu``
says why):

- ``face``:   face B×6×96×96 → the 7 encoder feature maps (shallowest first)
- ``audio``:  mel B×1×80×16 → the audio embedding B×512×1×1
- ``decode``: the embedding + the 7 feature maps, of batch B or of batch 1 (one face shared
  by all B: a static avatar's per-frame work) → B×3×96×96; batch-1 features are broadcast
  to B inside the graph, batch-B features pass through unchanged
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..model import Conv2d, Conv2dTranspose, Wav2Lip

# shapes of the 7 face-encoder feature maps for a 96×96 face (channels, side)
FEATURE_SHAPES = ((16, 96), (32, 48), (64, 24), (128, 12), (256, 6), (512, 3), (512, 1))
EMBEDDING = 512  # channels of the audio embedding (1×1)


def _ops() -> Any:
    from openvino import opset13

    return opset13


def _pair(v: int | tuple[int, ...]) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _const(t: torch.Tensor) -> Any:
    return _ops().constant(t.detach().cpu().float().numpy())


def _folded(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """The conv's (weight, bias) with ``bn`` (eval statistics) folded in, computed from the
    tensors without copying the model: the same operations as ``model.fold_batchnorm``
    (so the same bits), minus its deep copy of every module (≈ 2 s of a replica's start on
    a loaded 2-core host)."""
    if isinstance(bn, nn.Identity):
        return conv.weight, conv.bias
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None or bn.running_mean is None:
        raise ValueError(f"cannot fold {bn} into the OpenVINO graph's convolution")
    var, mean = bn.running_var, bn.running_mean
    gamma = bn.weight if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)  # one factor per output channel
    transposed = isinstance(conv, nn.ConvTranspose2d)  # its weight is (in, out, kh, kw)
    w = (
        conv.weight * scale.view(1, -1, 1, 1)
        if transposed
        else conv.weight * scale.view(-1, 1, 1, 1)
    )
    bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
    return w, ((bias - mean) * scale + beta).to(w.dtype)


def _conv(x: Any, conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.Module | None = None) -> Any:
    ops = _ops()
    if conv.groups != 1 or _pair(conv.dilation) != [1, 1]:
        raise ValueError(f"unsupported convolution for the OpenVINO graph: {conv}")
    weight, bias = _folded(conv, bn if bn is not None else nn.Identity())
    pads = _pair(conv.padding)
    if isinstance(conv, nn.ConvTranspose2d):
        # torch's (in, out, kh, kw) weight is OpenVINO's [C_IN, C_OUT, kH, kW] filter layout
        y = ops.convolution_backprop_data(
            x, _const(weight), _pair(conv.stride), pads_begin=pads, pads_end=pads,
            dilations=[1, 1], output_padding=_pair(conv.output_padding),
        )  # fmt: skip
    else:
        y = ops.convolution(x, _const(weight), _pair(conv.stride), pads, pads, [1, 1])
    if bias is not None:
        y = ops.add(y, _const(bias.reshape(1, -1, 1, 1)))
    return y


def _block(x: Any, m: nn.Module) -> Any:
    """One layer of the model (a lipbench.model block, its BatchNorm folded on the way, or
    a plain torch layer)."""
    ops = _ops()
    if isinstance(m, Conv2d | Conv2dTranspose):
        y = _conv(x, m.conv_block[0], m.conv_block[1])
        if getattr(m, "residual", False):
            y = ops.add(y, x)
        return ops.relu(y)
    if isinstance(m, nn.Sequential):
        for sub in m:
            x = _block(x, sub)
        return x
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        return _conv(x, m)
    if isinstance(m, nn.Sigmoid):
        return ops.sigmoid(x)
    raise ValueError(f"layer {type(m).__name__} has no OpenVINO translation")


def _face_features(model: Wav2Lip, face: Any) -> list[Any]:
    feats, x = [], face
    for block in model.face_encoder_blocks:
        x = _block(x, block)
        feats.append(x)
    return feats


def _decode(model: Wav2Lip, emb: Any, feats: list[Any]) -> Any:
    ops = _ops()
    x = emb
    for block, feat in zip(model.face_decoder_blocks, reversed(feats), strict=True):
        x = _block(x, block)
        # features of batch 1 → the audio's batch (torch's expand); batch B: unchanged
        batch = ops.gather(ops.shape_of(x), ops.constant(np.array([0], np.int64)), 0)
        rest = ops.gather(ops.shape_of(feat), ops.constant(np.array([1, 2, 3], np.int64)), 0)
        x = ops.concat([x, ops.broadcast(feat, ops.concat([batch, rest], 0))], 1)
    return _block(x, model.output_block)


def build_graphs(model: Wav2Lip) -> dict[str, Any]:
    """The ``face``, ``audio`` and ``decode`` ``openvino.Model``s of ``model`` (fp32, eval
    statistics; BatchNorm folded into the graph's convolutions; ``model`` itself is untouched)."""
    import openvino as ov

    m = model
    if next(m.parameters()).dtype != torch.float32 or next(m.parameters()).device.type != "cpu":
        raise ValueError("the OpenVINO graph is built from the fp32 model on the CPU")
    ops = _ops()
    with torch.no_grad():
        face = ops.parameter([-1, 6, 96, 96], np.float32, name="face")
        feats = _face_features(m, face)
        mel = ops.parameter([-1, 1, 80, 16], np.float32, name="mel")
        emb = _block(mel, m.audio_encoder)
        emb_in = ops.parameter([-1, EMBEDDING, 1, 1], np.float32, name="emb")
        fparams = [
            ops.parameter([-1, c, s, s], np.float32, name=f"feat{i}")
            for i, (c, s) in enumerate(FEATURE_SHAPES)
        ]
        out = _decode(m, emb_in, fparams)
    return {
        "face": ov.Model(feats, [face], "wav2lip_face_encoder"),
        "audio": ov.Model([emb], [mel], "wav2lip_audio_encoder"),
        "decode": ov.Model([out], [emb_in, *fparams], "wav2lip_decode"),
    }
