"""Separation models. ``build_model(cfg)`` maps ``cfg.arch`` to a model:
"lvbd" -> :class:`LVBD`, "convtasnet" -> :class:`ConvTasNet`.

Every model: ``forward(mixture (B, L), state=None) -> SeparationOutput``, and the attributes
``cfg`` (its ModelConfig), ``sample_rate`` and ``segment_seconds`` (the default inference segment).
Models import no loss: the training objective is ``lvbd.objective.loss_terms(model, ...)``.
"""
from __future__ import annotations

from torch import nn

from ..config import ConfigError, ModelConfig
from .baselines.conv_tasnet import ConvTasNet
from .lvbd import LVBD
from .memory import MemoryState
from .output import SeparationOutput

__all__ = ["build_model", "LVBD", "ConvTasNet", "MemoryState", "SeparationOutput"]


def build_model(cfg: ModelConfig) -> nn.Module:
    """Model for ``cfg.arch``; raises ConfigError for an unknown architecture or invalid settings."""
    if cfg.arch == "lvbd":
        return LVBD(cfg)
    if cfg.arch == "convtasnet":
        return ConvTasNet(cfg)
    raise ConfigError(f"model.arch must be 'lvbd' or 'convtasnet', got {cfg.arch!r}")
