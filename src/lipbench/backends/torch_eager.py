"""The torch eager backend: today's path (channels_last, BatchNorm folded), CPU or CUDA.

``bf16`` runs the decoder (audio embedding + face features → face: 7.1 of a frame's 7.9
GFLOP) in bfloat16 and keeps the face and audio encoders in fp32: rounding the encoders'
weights to bf16 costs more fidelity than the rest together. Measured on a 2-core AMD EPYC
with AVX-512-BF16 (seeded weights, static path, batch 16): the whole network in bf16 39.2 dB
/ max 21 levels at 50 frames/s; encoders fp32 49.0 dB / max 6 levels at 48.5 frames/s; all
fp32 23 frames/s. The OpenVINO backend splits the same way."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..model import Wav2Lip, fold_batchnorm

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class TorchFeatures:
    """One face's encoder features (batch 1) and their copies expanded to each batch size."""

    maps: list[torch.Tensor]
    expanded: dict[int, list[torch.Tensor]] = field(default_factory=dict)


class TorchNetwork:
    backend = "torch"

    def __init__(
        self,
        model: Wav2Lip,
        device: str,
        precision: str,
        threads: int,
        channels_last: bool = True,
        fold: bool = True,
    ) -> None:
        self.device = str(device)
        self.precision = self.effective_precision = precision
        self.threads = threads
        self.channels_last = channels_last
        self.fold = fold
        self.dtype = _DTYPES[precision]
        m = model.eval().to(self.device)
        if fold:
            m = fold_batchnorm(m)  # a copy: the caller's model is untouched
        elif precision != "fp32" or channels_last:
            m = copy.deepcopy(m)  # .to() works in place: keep the caller's model as it was
        if precision != "fp32":  # the decoder only: see the module's docstring
            for part in (m.face_decoder_blocks, m.output_block):
                part.to(self.dtype)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        self.model = m
        self._fmt = torch.channels_last if channels_last else torch.contiguous_format
        layout = ("channels_last" if channels_last else "NCHW") + ("+folded-BN" if fold else "")
        self.key = f"torch|{precision}|{layout}"

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """An input for the encoders (fp32, in the layout the network uses)."""
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)
        return t.contiguous(memory_format=self._fmt)

    def _decode(self, emb: torch.Tensor, feats: list[torch.Tensor]) -> np.ndarray:
        """The decoder in the network's precision (features cast by the caller)."""
        return self._out(self.model.decode(emb.to(self.dtype), feats))

    def _out(self, t: torch.Tensor) -> np.ndarray:
        return t.float().cpu().numpy()

    @torch.inference_mode()
    def encode_face(self, face: np.ndarray) -> TorchFeatures:
        maps = self.model.encode_face(self._tensor(face))
        return TorchFeatures([f.to(self.dtype) for f in maps])

    @torch.inference_mode()
    def decode_static(self, mel: np.ndarray, feats: TorchFeatures) -> np.ndarray:
        n = len(mel)
        if n not in feats.expanded:
            # materialised once per batch size: the decoder's concatenations run ~10 % faster
            # on contiguous tensors than on expand() views (measured by the speed suite)
            feats.expanded[n] = [
                f.expand(n, -1, -1, -1).contiguous(memory_format=self._fmt) for f in feats.maps
            ]
        return self._decode(self.model.encode_audio(self._tensor(mel)), feats.expanded[n])

    @torch.inference_mode()
    def forward(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        m = self.model
        feats = [f.to(self.dtype) for f in m.encode_face(self._tensor(face))]
        return self._decode(m.encode_audio(self._tensor(mel)), feats)

    def info(self) -> dict[str, Any]:
        return {
            "engine": f"torch {torch.__version__} eager",
            "device": self.device,
            "layout": "channels_last" if self.channels_last else "NCHW",
            "folded_batchnorm": self.fold,
            "encoders": "fp32",
            "decoder": self.precision,
        }
