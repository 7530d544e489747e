"""What a user hears: do the outputs add up to the input, at its level and polarity?

    .venv/bin/python benchmarks/level_polarity.py [--model default|PATH ...] [--set data/test/ood-real/2spk]
        [--n 50]

SI-SDR ignores sign and scale, so this script measures what it cannot see, through the same
``Separator`` that ``lvbd separate`` uses, on ``examples/mix.wav`` (against ``mix_s1/2.wav``) and
on the first ``--n`` mixtures of a test set:

- ``sum gain``: the least-squares gain g from Σ_k ŝ_k to the mixture x (1 = right level and polarity);
- ``sum corr``: the correlation of Σ_k ŝ_k with x;
- ``sum SNR``: 10 log10(‖x‖² / ‖x − Σ_k ŝ_k‖²) (≥ 40 dB: the outputs add up to the input);
- ``src gain``: per source, ⟨ŝ, s⟩ / ‖s‖² after the best assignment (1 = the reference's level);
- ``src corr > 0``: the share of sources positively correlated with their reference;
- ``SI-SDRi`` and ``SNRi`` (scale-dependent) of the assigned sources.

Each model listed is measured in the same run; the first is the peer for the printed ratios.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from lvbd.assignment import hungarian
from lvbd.audio import load
from lvbd.data.mixfolder import read_set
from lvbd.metrics import si_sdr
from lvbd.separate import Separator

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("level_polarity")


def snr(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference ** 2) / max(np.sum((reference - estimate) ** 2), 1e-20)))


def measure(sep: Separator, mixture: np.ndarray, refs: np.ndarray, sample_rate: int) -> dict:
    """mixture (L,), refs (K, L) -> figures of one utterance."""
    est = sep.separate(mixture, sample_rate).numpy()[:, 0]  # (K, L)
    total = est.sum(0)
    gain = float(total @ mixture / max(total @ total, 1e-20))
    corr = float(np.corrcoef(total, mixture)[0, 1])
    cost = np.array([[-si_sdr(e, r) for r in refs] for e in est])  # (K, K)
    est = est[np.argsort(hungarian(cost))]  # est[k] assigned to refs[k]
    src_gain = [float(e @ r / max(r @ r, 1e-20)) for e, r in zip(est, refs)]
    sisdri = np.mean([si_sdr(e, r) - si_sdr(mixture, r) for e, r in zip(est, refs)])
    snri = np.mean([snr(e, r) - snr(mixture, r) for e, r in zip(est, refs)])
    return {"sum_gain": gain, "sum_corr": corr, "sum_snr": snr(total, mixture), "src_gain": src_gain,
            "si_sdri": float(sisdri), "snri": float(snri)}


def summarise(rows: list[dict]) -> str:
    gains = np.array([g for r in rows for g in r["src_gain"]])
    return (f"sum gain {np.mean([r['sum_gain'] for r in rows]):+.3f}  "
            f"sum corr {np.mean([r['sum_corr'] for r in rows]):+.3f}  "
            f"sum SNR {np.min([r['sum_snr'] for r in rows]):6.1f} dB (min)  "
            f"src gain {np.median(gains):+.2f} (median)  src corr>0 {np.mean(gains > 0):.0%}  "
            f"SI-SDRi {np.mean([r['si_sdri'] for r in rows]):5.2f}  SNRi {np.mean([r['snri'] for r in rows]):5.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, help="default or a checkpoint (repeatable)")
    parser.add_argument("--set", type=Path, default=ROOT / "data" / "test" / "ood-real" / "2spk")
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    mix, sample_rate = load(ROOT / "examples" / "mix.wav")
    refs = np.stack([load(ROOT / "examples" / f"mix_s{k}.wav")[0][0] for k in (1, 2)])
    test_set = read_set(args.set) if args.set.exists() else None
    for spec in args.model or ["default"]:
        sep = Separator.load(spec, device="cpu")
        print(f"{spec}")
        print(f"  examples/mix.wav      {summarise([measure(sep, mix[0], refs, sample_rate)])}")
        if test_set is not None:
            rows = []
            for _, mix_path, src_paths in test_set.items[:args.n]:
                x, rate = load(mix_path)
                s = np.stack([load(p)[0][0] for p in src_paths])
                rows.append(measure(sep, x[0], s, rate))
            print(f"  {test_set.name:<20}  {summarise(rows)}  ({len(rows)} mixtures)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
