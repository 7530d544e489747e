"""The one output type of every separation model (contract: ``forward`` returns it).

Models compute; the training objective (``lvbd.objective``) reads what it needs from here, so a
model never imports a loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["SeparationOutput"]


@dataclass
class SeparationOutput:
    """Result of ``model(mixture, state=None)``.

    Attributes:
        estimates: separated waveforms (B, K, L), same L and scale as the input mixture.
        confidence: per-source confidence (B, K) in [0, 1], or None when the model has none.
        state: memory state to pass to the next chunk (``lvbd.models.memory.MemoryState``) or None.
        scale: (B, 1, 1) the mixture's std; the model works on mixture / scale.
        normalised: (B, K, L) the estimates of mixture / scale (``estimates = normalised · scale``).
        latents: z (B, M, D, T_c) of each chunk, in chunk order (LVBD).
        demixing: W (B, D, K, M) of each chunk, in memory-slot order (LVBD).
        bounds: sample range (a, b) of each chunk of the mixture (LVBD).
        mu, logvar, prior_logvar: posterior mean, log-variance (None when deterministic) and the
            prior's log-variance, (B, K, D, T), chunks concatenated in slot order (LVBD).
        alignment: P (B, K_slot, K_out) applied to the last chunk (LVBD with memory).
        masks: (B, K, N, T) the masks of a masking model (Conv-TasNet).
    """

    estimates: Tensor
    confidence: Tensor | None = None
    state: Any = None
    scale: Tensor | None = None
    normalised: Tensor | None = None
    latents: tuple[Tensor, ...] = ()
    demixing: tuple[Tensor, ...] = ()
    bounds: tuple[tuple[int, int], ...] = ()
    mu: Tensor | None = None
    logvar: Tensor | None = None
    prior_logvar: Tensor | None = None
    alignment: Tensor | None = None
    masks: Tensor | None = None

    @property
    def z(self) -> Tensor | None:
        """All chunks' latents (B, M, D, T), or None."""
        return torch.cat(self.latents, dim=-1) if self.latents else None

    @property
    def W(self) -> Tensor | None:
        """The last chunk's demixer (B, D, K, M), or None."""
        return self.demixing[-1] if self.demixing else None
