"""Where FSA acts in SAM3's detector: the self-attention of the last DETR-encoder layer, of the last ``k`` layers, or
the encoder output itself (the tokens the DETR decoder, the pixel decoder and the mask head read).

A placement names the first encoder layer FSA runs again (``start``): the first pass stores each present prompt's
hidden state there, and the adapted pass runs from it. At the encoder layers, FSA replaces the self-attention
``A0 V`` with the adaptation ensemble ``(A_fb A0 + A0 A_fb + A_fb) V / 3`` (paper Eq. 8), computed with SDPA
(``fsa.ensemble_attend_sdpa``, ``A0`` never materialised). At the encoder output no attention follows (each
token reaches the heads on its own, ``A0 = I``), so Eq. 8 is ``(A_fb + A_fb + A_fb) X / 3 = A_fb X``: the same
reduction as MaskCLIP's identity attention in the CLIP path. Attention isolation with ``uniform`` runs the same
placement with uniform attention (every weight ``1 / N``): the token mean of the values, or of the encoder
output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor
from transformers import Sam3Model

from .. import fsa as fsa_core
from . import decode

PLACEMENTS = ("last_layer", "last_k", "encoder_output")


@dataclass(frozen=True)
class Placement:
    """``name`` in :data:`PLACEMENTS`; ``layers``: the encoder layers adapted (1 for ``last_layer``, ``k`` for
    ``last_k``, 0 for ``encoder_output``)."""

    name: str
    layers: int

    @classmethod
    def build(cls, name: str, fsa_layers: int, num_layers: Optional[int]) -> "Placement":
        """``num_layers``: the encoder's depth (``None``: not known yet, ``fsa_layers`` is only checked to be
        positive)."""
        if name not in PLACEMENTS:
            raise ValueError(f"fsa_placement must be one of {PLACEMENTS}, got '{name}'")
        if name == "last_k" and not 1 <= fsa_layers <= (fsa_layers if num_layers is None else num_layers):
            raise ValueError(f"fsa_layers must be in [1, {num_layers or 'the encoder depth'}] (the encoder's "
                             f"layers), got {fsa_layers}")
        layers = {"last_layer": 1, "last_k": int(fsa_layers), "encoder_output": 0}[name]
        return cls(name, layers)

    def start(self, num_layers: int) -> int:
        """Index of the first encoder layer FSA runs again (``num_layers``: none, the encoder output)."""
        return num_layers - self.layers

    def adapted(self, model: Sam3Model, state: decode.EncoderState, text: Tensor, a_fb: Tensor) -> Tensor:
        """The encoder output ``[B, N, D]`` with FSA, from the stored ``state`` at :meth:`start` and ``A_fb``
        ``[1, N, N]`` (shared by the prompts and the heads)."""
        num_layers = len(model.detr_encoder.layers)
        if self.layers == 0:
            return fsa_core.shared_rows_matmul(a_fb.to(state.hidden.dtype), state.hidden)
        scale = model.detr_encoder.layers[-1].self_attn.scaling  # head_dim ** -0.5, the same in every layer

        def ensemble(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return fsa_core.ensemble_attend_sdpa(a_fb, q, k, v, scale=scale)

        return decode.run_encoder_layers(model, state, text, range(self.start(num_layers), num_layers),
                                         ensemble).hidden

    def uniform(self, model: Sam3Model, state: decode.EncoderState, text: Tensor) -> Tensor:
        """The encoder output with uniform attention in place of the placement's attention (isolation)."""
        num_layers = len(model.detr_encoder.layers)
        if self.layers == 0:
            return state.hidden.mean(dim=1, keepdim=True).expand_as(state.hidden)
        return decode.run_encoder_layers(model, state, text, range(self.start(num_layers), num_layers),
                                         decode.uniform_attend_qkv).hidden
