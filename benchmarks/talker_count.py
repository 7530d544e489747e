"""Can the model tell a mixture of more than K talkers? (issue 11: a warning for such input).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/talker_count.py --model default --items 150

Scores fixed K- and (K+1)-talker mixtures of 4 s from the validation split (every engine;
``DynamicMixDataset`` seed 123) with two model signals and prints, per signal, the medians and
the area under the ROC curve (AUC, 0.5 = chance) of telling K+1 from K talkers:

- ``latent_tail``: the latent energy beyond K, Σ_d (λ_{K+1} + … + λ_M) / Σ_d Σ λ, of the per-bin
  latent covariance z_d z_dᵀ / T (eigenvalues λ descending; the over-determined latent space
  holds K sources, a further talker should raise the rest);
- ``reseparation``: each output separated again; the energy balance min/max of its K parts,
  maximum over outputs (one talker should split unevenly).
"""
from __future__ import annotations

import argparse

import numpy as np


def latent_tail(model, mixture, n_sources: int) -> float:
    import torch

    z = model(mixture[None]).latents[0][0]  # (M, D, T)
    R = torch.einsum("mdt,ndt->dmn", z, z) / z.shape[-1]  # (D, M, M)
    lam = torch.linalg.eigvalsh(R).flip(-1).clamp_min(0)  # (D, M) descending
    return float(lam[:, n_sources:].sum() / lam.sum())


def reseparation(model, mixture, n_sources: int) -> float:
    est = model(mixture[None]).estimates[0]  # (K, L)
    energy = model(est).estimates.pow(2).mean(-1)  # (K, K)
    return float((energy.min(-1).values / energy.max(-1).values.clamp_min(1e-12)).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--root", default="data")
    parser.add_argument("--items", type=int, default=150)
    args = parser.parse_args(argv)

    import torch
    from scipy.stats import mannwhitneyu

    from lvbd.checkpoint import load_model
    from lvbd.data.datasets import DynamicMixDataset
    from lvbd.separate import pretrained_path

    torch.set_num_threads(1)
    path = pretrained_path("default") if args.model == "default" else args.model
    model, cfg, _ = load_model(path)
    K = cfg.model.n_sources
    signals = {"latent_tail": latent_tail, "reseparation": reseparation}
    scores = {name: {} for name in signals}
    with torch.inference_mode():
        for k in (K, K + 1):
            data = DynamicMixDataset(args.root, "valid", k, 4.0, cfg.model.sample_rate, seed=123,
                                     length=args.items, engines=None)
            mixtures = [data[i].sum(0) for i in range(len(data))]
            for name, fn in signals.items():
                scores[name][k] = np.array([fn(model, x, K) for x in mixtures])
    print(f"{args.model}: {args.items} mixtures of {K} and of {K + 1} talkers (valid split, 4 s)")
    print(f"{'signal':<14} {'median K':>9} {'median K+1':>11} {'AUC':>6}")
    for name, by_k in scores.items():
        auc = mannwhitneyu(by_k[K + 1], by_k[K]).statistic / (len(by_k[K]) * len(by_k[K + 1]))
        print(f"{name:<14} {np.median(by_k[K]):9.3f} {np.median(by_k[K + 1]):11.3f} {auc:6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
