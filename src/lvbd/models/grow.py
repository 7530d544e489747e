"""Deepen a trained TCN without changing what it computes (function-preserving growth).

A TCN of ``n_repeats`` × ``n_blocks`` blocks (dilations 1, 2, …, 2^(n_blocks−1) in each repeat)
sees 1 + n_repeats·(kernel_size − 1)·(2^n_blocks − 1) frames. :func:`grow_tcn` builds the same
model with more blocks per repeat (the new, longer dilations at the end of each repeat) and
copies every trained weight to the block of the same dilation in the same repeat. The new blocks
get zero residual and skip outputs (their inner layers keep their random start), and so does the
residual output of the old last block, which a TCN's last block lacks. So the grown model gives
the same output as the trained one (tested), and training goes on from there with a longer
receptive field: 0.25 s → 1.02 s at 6 → 8 blocks, 2 repeats, 1,000 frames/s, for 4/3 of the TCN's
compute (Net2Net-style growth: Chen, Goodfellow & Shlens, ICLR 2016).
"""
from __future__ import annotations

import copy
import re

import torch

from ..config import Config
from ..errors import LvbdError
from . import build_model

__all__ = ["grow_tcn"]

_BLOCK = re.compile(r"^(?P<prefix>.*)\.blocks\.(?P<index>\d+)\.(?P<rest>.+)$")
_OUTPUTS = ("res_out.", "skip_out.")


def grow_tcn(model: torch.nn.Module, cfg: Config, n_blocks: int) -> tuple[torch.nn.Module, Config]:
    """(model, cfg) with ``n_blocks`` TCN blocks per repeat → the grown (model, cfg), same output."""
    old = cfg.model.n_blocks
    if cfg.model.lifting != "tcn":
        raise LvbdError(f"grow_tcn: the model's lifting is {cfg.model.lifting!r}, not 'tcn'")
    if n_blocks <= old:
        raise LvbdError(f"grow_tcn: n_blocks must be more than the model's {old}, got {n_blocks}")
    grown_cfg = copy.deepcopy(cfg)
    grown_cfg.model.n_blocks = n_blocks
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the new blocks' inner layers: a reproducible random start
        grown = build_model(grown_cfg.model)
    trained = model.state_dict()
    state = grown.state_dict()
    for key in state:
        match = _BLOCK.match(key)
        if match is None:
            state[key] = trained[key]
            continue
        repeat, block = divmod(int(match["index"]), n_blocks)
        source = f"{match['prefix']}.blocks.{repeat * old + block}.{match['rest']}"
        if block < old and source in trained:
            state[key] = trained[source]
        elif match["rest"].startswith(_OUTPUTS):
            state[key] = torch.zeros_like(state[key])  # a new block, or the old last block's res_out
    grown.load_state_dict(state)
    return grown.train(model.training), grown_cfg
