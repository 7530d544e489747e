"""Parameter count and per-step time of LVBD (configs/paper.yaml) beside a Conv-TasNet of similar
size (configs/convtasnet.yaml), measured in the same run on the same inputs.

    .venv/bin/python benchmarks/bench_model.py [--threads 2] [--batch 4] [--seconds 4] [--repeats 5]

Times are medians over ``--repeats``, the models measured round-robin within each repeat so that
load from other processes on a shared machine hits all of them alike. One training step is
``objective.loss_terms`` + ``total_loss`` + ``backward`` in train mode; inference is ``forward`` in eval mode
under ``torch.inference_mode``. Ratios are LVBD / Conv-TasNet.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from lvbd.config import load_config
from lvbd.losses import total_loss
from lvbd.models import build_model
from lvbd.objective import loss_terms

ROOT = Path(__file__).resolve().parents[1]


def _median_times(fns: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each callable, interleaved: repeat r runs every callable once."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _train_step(model, loss_cfg, mixture, references):
    def run():
        model.zero_grad(set_to_none=True)
        _, terms = loss_terms(model, mixture, references, loss_cfg, 100, 1000)
        total_loss(terms, loss_cfg, 10_000).backward()
    return run


def _inference(model, mixture):
    def run():
        with torch.inference_mode():
            model(mixture)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/paper.yaml"))
    parser.add_argument("--baseline", default=str(ROOT / "configs/convtasnet.yaml"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg, base_cfg = load_config(args.config), load_config(args.baseline)
    K = cfg.model.n_sources
    L = int(args.seconds * cfg.model.sample_rate)
    references = torch.randn(args.batch, K, L)
    mixture = references.sum(1)

    no_perm = copy.deepcopy(cfg.loss)
    no_perm.perm = 0.0
    models = {"lvbd": build_model(cfg.model), "convtasnet": build_model(base_cfg.model)}
    lvbd, ctn = models["lvbd"], models["convtasnet"]
    for model in models.values():
        model.train()
    train_fns = {"lvbd": _train_step(lvbd, cfg.loss, mixture, references),
                 "convtasnet": _train_step(ctn, base_cfg.loss, mixture, references)}
    if cfg.loss.perm > 0:
        train_fns["lvbd_no_perm"] = _train_step(lvbd, no_perm, mixture, references)
    train = _median_times(train_fns, args.repeats)
    train.setdefault("lvbd_no_perm", train["lvbd"])
    for model in models.values():
        model.eval()
    infer = _median_times({name: _inference(model, mixture) for name, model in models.items()}, args.repeats)
    rows = {name: (sum(p.numel() for p in model.parameters()), train[name],
                   train["lvbd_no_perm"] if name == "lvbd" else train[name], infer[name])
            for name, model in models.items()}

    print(f"{args.batch} x {args.seconds:g} s at {cfg.model.sample_rate} Hz, {args.threads} threads, "
          f"median of {args.repeats}")
    print(f"{'model':<12}{'params':>12}{'train step s':>14}{'(perm=0) s':>12}{'inference s':>13}")
    for name, (n, tr, trn, inf) in rows.items():
        print(f"{name:<12}{n:>12,}{tr:>14.3f}{trn:>12.3f}{inf:>13.3f}")
    a, b = rows["lvbd"], rows["convtasnet"]
    print(f"ratio lvbd/convtasnet: params {a[0] / b[0]:.2f}, train step {a[1] / b[1]:.2f} "
          f"(perm=0: {a[2] / b[1]:.2f}), inference {a[3] / b[3]:.2f}")


if __name__ == "__main__":
    main()
