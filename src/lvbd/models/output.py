"""The one output type of every separation model (contracts: ``forward`` returns it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["SeparationOutput"]


@dataclass
class SeparationOutput:
    """Result of ``model(mixture, state=None)``.

    Attributes:
        estimates: separated waveforms (B, K, L), same L and scale as the input mixture.
        confidence: per-source confidence (B, K) in [0, 1], or None when the model has none.
        state: memory state to pass to the next chunk (``lvbd.models.memory.MemoryState``) or None.
        extras: named intermediate tensors (e.g. ``mu`` (B, K, D, T), ``logvar``, ``W`` (B, D, K, M), ``z``).
    """

    estimates: Tensor
    confidence: Tensor | None = None
    state: Any = None
    extras: dict[str, Tensor] = field(default_factory=dict)
