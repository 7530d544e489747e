"""Regenerate tests/fixtures/reference_outputs.npz, the outputs that tests/test_reference.py
holds every later version of the code to (1e-6).

    PYTHONPATH=src python scripts/make_reference_outputs.py

Stored, on examples/mix.wav (and its references mix_s1.wav, mix_s2.wav):
  default.*   the shipped model (src/lvbd/pretrained/default.safetensors): ``Separator.separate``
              on the whole file and one ``forward`` on its first 2 s; with the sha256 of the
              weights they were made with. Replacing the shipped weights makes the test fail until
              this script is rerun (deliberately: a new model has new outputs).
  <name>.*    small models whose weights are stored here too (independent of the shipped file):
              LVBD (synth and mask decoders, memory chunks, every loss term) and ConvTasNet;
              eval-mode ``forward`` and train-mode ``loss_terms`` (RNG seeded) outputs.

Rerun it only when a change of outputs is intended, and say so in the commit.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "reference_outputs.npz"
WEIGHTS = ROOT / "src" / "lvbd" / "pretrained" / "default.safetensors"

# small models: (name, config overrides on configs/tiny.yaml)
SMALL = {
    "tiny": [],
    "tiny_mask": ["model.decoder=mask", "model.init=predicted", "model.memory_chunks=2",
                  "loss.vol=0.01", "loss.pit=hungarian"],
    "tiny_det": ["model.variational=false", "model.memory=false", "model.demixer=iss",
                 "loss.pit=upit", "model.mixture_consistency=false"],
    "convtasnet": ["model.arch=convtasnet", "loss.pit=upit"],
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def examples() -> tuple[np.ndarray, np.ndarray, int]:
    from lvbd import audio

    mix, rate = audio.load(ROOT / "examples" / "mix.wav")  # (1, L)
    refs = np.concatenate([audio.load(ROOT / "examples" / f"mix_s{k}.wav")[0] for k in (1, 2)])
    return mix[0], refs, rate  # (L,), (K, L)


def small_batch(refs: np.ndarray, rate: int) -> torch.Tensor:
    """Two 0.5 s items cut from the example references: (B=2, K=2, L)."""
    n = rate // 2
    items = [refs[:, rate + i * n: rate + (i + 1) * n] for i in range(2)]
    return torch.from_numpy(np.stack(items)).float()


def small_model(name: str):
    from lvbd.config import load_config
    from lvbd.models import build_model

    cfg = load_config(ROOT / "configs" / "tiny.yaml", SMALL[name])
    torch.manual_seed(1234)
    return build_model(cfg.model), cfg


def run_small(model, cfg, state: dict[str, torch.Tensor], mix: np.ndarray, refs: np.ndarray,
              rate: int) -> dict[str, np.ndarray]:
    """Outputs of one small model with the given weights (the test calls this too)."""
    model.load_state_dict(state)
    out: dict[str, np.ndarray] = {}
    model.eval()
    with torch.no_grad():
        y = model(torch.from_numpy(mix[None, : rate]).float())
    out["forward"] = y.estimates.numpy()
    if y.confidence is not None:
        out["confidence"] = y.confidence.numpy()
    model.train()
    batch = small_batch(refs, rate)
    torch.manual_seed(7)
    est, terms = _loss_terms(model, batch, cfg)
    out["train_estimates"] = est.detach().numpy()
    for key, value in terms.items():
        out[f"term_{key}"] = value.detach().numpy()
    return out


def _loss_terms(model, batch, cfg):
    """The training computation on one batch: (estimates, named terms), whatever the API."""
    try:
        from lvbd.objective import loss_terms
    except ImportError:  # before the objective moved out of the models
        return model.loss_terms(batch.sum(1), batch, cfg.loss, 3, 10)
    return loss_terms(model, batch.sum(1), batch, cfg.loss, 3, 10)


def default_outputs(mix: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    from lvbd.separate import Separator

    sep = Separator.load("default", device="cpu")
    out = {"separate": sep.separate(mix, rate).numpy()}  # (K, 1, L)
    with torch.no_grad():
        y = sep.model(torch.from_numpy(mix[None, : 2 * rate]).float())
    out["forward"] = y.estimates.numpy()
    out["confidence"] = y.confidence.numpy()
    return out


def main() -> int:
    torch.set_num_threads(1)
    mix, refs, rate = examples()
    arrays: dict[str, np.ndarray] = {"default.sha256": np.array(sha256(WEIGHTS))}
    for key, value in default_outputs(mix, rate).items():
        arrays[f"default.{key}"] = value
    for name in SMALL:
        model, cfg = small_model(name)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for key, value in state.items():
            arrays[f"{name}.state.{key}"] = value.numpy()
        for key, value in run_small(model, cfg, state, mix, refs, rate).items():
            arrays[f"{name}.{key}"] = value
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size / 1e3:.0f} kB, {len(arrays)} arrays)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
