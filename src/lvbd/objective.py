"""The training objective: named loss terms from a model's ``SeparationOutput`` (design §5.2, §6).

Models compute (``lvbd.models``); this module trains them. ``loss_terms(model, mixture,
references, ...)`` runs the model once and returns the estimates and the *unweighted* terms;
``lvbd.losses.total_loss`` weights and sums them (design §5.3). Which terms exist depends on what
the output carries:

* a model without latents (Conv-TasNet): ``sep`` only, on the estimates at the input scale;
* LVBD: ``sep`` (permutation-invariant negative SI-SDR), ``mix`` (mixture consistency), ``kl`` (to
  the memory prior; 0 when deterministic), ``tc`` (block total correlation), ``perm`` (latent
  Amari-type term, only when ``loss_cfg.perm > 0``) and ``vol`` (only when ``loss_cfg.vol > 0``),
  all at the unit-std scale the model works at.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import ConfigError, LossConfig
from .losses import (amari_permutation_loss, block_tc, crosstalk_matrix, gaussian_kl, mixture_consistency,
                     pairwise_neg_si_sdr, pit_exact, pit_hungarian, sinkpit, sinkpit_beta, volume_loss)
from .models.blocks import check_inputs
from .models.output import SeparationOutput

__all__ = ["loss_terms", "separation_loss", "perm_term"]

SILENT_REF = 1e-6   # references with mean power below this (mixture at unit std) are silent


def separation_loss(estimates: Tensor, references: Tensor, loss_cfg: LossConfig, step: int,
                    total_steps: int) -> Tensor:
    """Permutation-invariant negative SI-SDR (design §6), averaged over the batch.

    ``loss_cfg.pit``: "upit" (exact min over K! permutations), "hungarian" (O(K³) assignment),
    "sinkpit" (entropy-regularised Sinkhorn, β annealed by ``sinkpit_beta``).
    """
    C = pairwise_neg_si_sdr(estimates, references)  # (B, K, K)
    if loss_cfg.pit == "upit":
        loss, _ = pit_exact(C)
    elif loss_cfg.pit == "hungarian":
        loss, _ = pit_hungarian(C)
    elif loss_cfg.pit == "sinkpit":
        loss, _ = sinkpit(C, sinkpit_beta(loss_cfg, step, total_steps), loss_cfg.sinkpit_iters)
    else:
        raise ConfigError(f"loss.pit must be upit, hungarian or sinkpit, got {loss_cfg.pit!r}")
    return loss.mean()


def loss_terms(model: nn.Module, mixture: Tensor, references: Tensor, loss_cfg: LossConfig, step: int,
               total_steps: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Run ``model`` on one batch: (estimates (B, K, L) at the input scale, unweighted terms).

    mixture (B, L), references (B, K, L); ValueError naming the shapes when they do not fit.
    """
    check_inputs(mixture, references, model.cfg.n_sources)
    out: SeparationOutput = model(mixture)
    if out.mu is None:
        return out.estimates, {"sep": separation_loss(out.estimates, references, loss_cfg, step, total_steps)}
    refs = references / out.scale  # (B, K, L), the scale the model works at
    x = mixture / out.scale[:, 0]  # (B, L)
    est, mu, logvar = out.normalised, out.mu, out.logvar
    zero = est.new_zeros(())
    terms = {
        "sep": separation_loss(est, refs, loss_cfg, step, total_steps),
        "mix": mixture_consistency(est.sum(dim=1), x).mean(),
        "kl": zero if logvar is None else gaussian_kl(mu, logvar, out.prior_logvar),
        "tc": block_tc(mu, logvar if logvar is not None else torch.full_like(mu, model.cfg.logvar_min)),
        "perm": perm_term(model, out, refs) if loss_cfg.perm > 0 else zero,
        "vol": (torch.stack([volume_loss(W, z) for W, z in zip(out.demixing, out.latents)]).mean()
                if loss_cfg.vol > 0 else zero),
    }
    return out.estimates, terms


def perm_term(model: nn.Module, out: SeparationOutput, refs: Tensor) -> Tensor:
    """Amari-type loss on G_kj = share of reference j's latent energy in output k (design §6.3).

    Each reference is lifted alone (E, H without gradient: the lifted references are treated as
    constants) and demixed with the mixture's W of the same chunk, which is *not* detached, so the
    term trains the demixer and, through W = IVA(H(E(x))), the lifting and the front end.
    Back-propagating through the K reference lifts as well doubled the cost of a training step
    (docs/design.md "Loss terms"); this keeps it at +K forward passes of H. Chunks are
    concatenated in slot order, so one G per utterance also rewards a consistent order across
    chunks. Examples with a silent reference are skipped (H(0) ≠ 0 because of biases, so their G
    is meaningless). refs (B, K_ref, L) at the model's scale -> scalar.
    """
    B, K_ref, _ = refs.shape
    parts = []
    for (a, b), W in zip(out.bounds, out.demixing):
        with torch.no_grad():
            z_ref = model.lift(model.encode(refs[..., a:b].reshape(B * K_ref, b - a)))  # (B·K, M, D, T)
        z_ref = z_ref.view(B, K_ref, *z_ref.shape[1:])  # (B, K_ref, M, D, T)
        parts.append(torch.einsum("bdkm,bjmdt->bkjdt", W, z_ref))  # (B, K_out, K_ref, D, T)
    G = crosstalk_matrix(torch.cat(parts, dim=-1))  # (B, K, K)
    loss = amari_permutation_loss(G)  # (B,)
    valid = (refs.pow(2).mean(dim=-1) > SILENT_REF).all(dim=-1)  # (B,)
    if not bool(valid.any()):
        return loss.sum() * 0.0
    return loss[valid].mean()
