"""``lvbd evaluate``: score a model or a baseline on Libri2Mix-style test sets.

A set is a Libri2Mix/WHAM!-style folder: ``mix/`` (or ``mix_clean/``) and ``s1/`` … ``sK/``
matched by file name, optionally with a ``metadata.csv`` (columns ``mixture_ID, mixture_path,
source_1_path, …, source_K_path``; see :mod:`lvbd.data.mixfolder`). For each set
this writes ``<out>/<model>/<set>_<K>spk.csv`` (one row per mixture) and ``….json`` (means with
95 % confidence intervals, counts, definitions and policies), and prints a table. Metrics and
policies are those of :mod:`lvbd.metrics`; means over utterances use each utterance's mean
over its non-silent sources.

The 95 % CI is t-based: mean ± t(0.975, n−1)·sd/√n over per-utterance values (deterministic,
and the per-utterance means are close to normal at the set sizes used, n ≥ 30).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__, audio
from .data.mixfolder import TestSet, find_sets, read_set  # noqa: F401 (re-exported)
from .errors import LvbdError
from .fileio import atomic_write
from .progress import show_progress
from .metrics import (DEFAULT_METRICS, DEFINITIONS, METRICS, SILENT_POLICY, compute_metrics)

log = logging.getLogger(__name__)

MODEL_CHOICES = ("default", "oracle-irm", "oracle-ibm", "oracle-psm", "mixture")
CI_METHOD = "t-based 95% CI over per-utterance means: mean +- t(0.975, n-1) * sd / sqrt(n)"
TABLE_COLUMNS = (("si_sdri", "SI-SDRi"), ("sdri", "SDRi"), ("pesq", "PESQ"), ("stoi", "STOI"),
                 ("estoi", "ESTOI"))


# --------------------------------------------------------------------------- reading sets
def _load_mono(path: Path) -> tuple[np.ndarray, int]:
    wav, sample_rate = audio.load(path)
    if wav.shape[0] > 1:
        wav = audio.convert_channels(wav, 1)
    return wav[0].astype(np.float64), sample_rate


def load_item(item: tuple[str, Path, list[Path]]) -> tuple[np.ndarray, np.ndarray, int]:
    """→ mixture (L,), references (K, L) float64, sample_rate."""
    name, mix_path, source_paths = item
    mixture, sample_rate = _load_mono(mix_path)
    refs = []
    for path in source_paths:
        ref, rate = _load_mono(path)
        if rate != sample_rate or ref.shape != mixture.shape:
            raise LvbdError(f"{path}: {ref.shape[0]} samples at {rate} Hz, but its mixture "
                            f"{mix_path} has {mixture.shape[0]} at {sample_rate} Hz")
        refs.append(ref)
    return mixture, np.stack(refs), sample_rate  # (L,), (K, L)


# --------------------------------------------------------------------------- separators
class ModelSeparator:
    """Adapts ``lvbd.separate.Separator`` to the baseline interface (plus confidence)."""

    needs_references = False

    def __init__(self, separator, name: str = "model"):
        self.separator = separator
        self.name = name
        self.n_sources = int(separator.n_sources)

    def separate_with_confidence(self, mixture: np.ndarray,
                                 sample_rate: int) -> tuple[np.ndarray, np.ndarray | None]:
        """mixture (L,) → estimates (K, L) float64, confidence (K,) or None."""
        est, conf = self.separator.separate(mixture[None].astype(np.float32), sample_rate,
                                            return_confidence=True)
        est = est.detach().cpu().numpy() if hasattr(est, "detach") else np.asarray(est)
        if est.ndim == 3:
            est = est[:, 0]  # (K, L): the set is mono
        conf = None if conf is None else np.asarray(conf, dtype=np.float64).reshape(-1)
        return est.astype(np.float64), conf

    def separate(self, mixture, sample_rate: int, references=None) -> np.ndarray:
        return self.separate_with_confidence(np.asarray(mixture), sample_rate)[0]


def _check_model_spec(spec: str) -> None:
    if spec not in MODEL_CHOICES and not Path(spec).exists():
        raise LvbdError(f"--model {spec!r} is neither one of {', '.join(MODEL_CHOICES)} nor an "
                        f"existing checkpoint")


def load_separator(spec: str, n_sources: int = 2, flip: bool = False):
    """``oracle-irm|oracle-ibm|oracle-psm|mixture|default|PATH`` → separator object; ``flip``:
    a model also separates the negated input and averages (its name gets ``+flip``)."""
    from .models.baselines.oracle import BASELINES, get_baseline

    if spec in BASELINES:
        return get_baseline(spec, n_sources)
    _check_model_spec(spec)
    from .separate import Separator

    name = "default" if spec == "default" else Path(spec).stem
    return ModelSeparator(Separator.load(spec, flip=flip), name=name + ("+flip" if flip else ""))


def _as_separator(separator, n_sources: int):
    if isinstance(separator, str):
        return load_separator(separator, n_sources)
    if not hasattr(separator, "needs_references"):  # a lvbd.separate.Separator
        return ModelSeparator(separator, name=getattr(separator, "name", "model"))
    return separator


# --------------------------------------------------------------------------- evaluation
def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{float(value):.4f}"
    return str(value)


def _row(name: str, result: dict, metric_keys: list[str], per_source: list[str],
         confidence: np.ndarray | None) -> dict:
    K = len(result["permutation"])
    row = {"name": name, "n_silent": result["n_silent"],
           "permutation": " ".join(str(int(p)) for p in result["permutation"]),
           "max_abs_offset": int(np.max(np.abs(result["offset"]))) if K else 0}
    row.update({key: result["mean"][key] for key in metric_keys})
    for key in per_source:
        row.update({f"{key}_{k + 1}": float(result[key][k]) for k in range(K)})
    if confidence is not None:  # confidence of the output matched to reference k
        row.update({f"confidence_{k + 1}": float(confidence[result["permutation"][k]])
                    for k in range(K)})
    return row


def mean_ci(values) -> dict:
    """Mean and t-based 95 % CI of the finite ``values`` (``CI_METHOD``) → {mean, ci95,
    ci95_half, sd, n}; None where undefined (no value; one value: no interval)."""
    from scipy.stats import t as student_t

    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    n = int(values.size)
    if n == 0:
        return {"mean": None, "ci95": [None, None], "ci95_half": None, "sd": None, "n": 0}
    mean = float(values.mean())
    if n == 1:
        return {"mean": mean, "ci95": [None, None], "ci95_half": None, "sd": None, "n": 1}
    sd = float(values.std(ddof=1))
    half = float(student_t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return {"mean": mean, "ci95": [mean - half, mean + half], "ci95_half": half, "sd": sd, "n": n}


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _csv_text(rows: list[dict]) -> str:
    import io

    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _fmt(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def evaluate_set(separator, set_dir: str | Path, out_dir: str | Path | None = None,
                 metrics=DEFAULT_METRICS, max_items: int | None = None,
                 progress: bool = False) -> dict:
    """Separate and score every mixture of one set → summary dict (also written when out_dir).

    ``separator``: a baseline object (``separate(mixture, sample_rate, references=None)``), a
    ``lvbd.separate.Separator``, or a spec string (see :func:`load_separator`). Writes
    ``<out_dir>/<set>_<K>spk.csv`` and ``.json``; the summary's ``"rows"`` key is not written
    to the JSON.
    """
    metrics = tuple(metrics)
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise LvbdError(f"unknown metrics {sorted(unknown)}; choose from {', '.join(METRICS)}")
    if "si_sdr" not in metrics:
        metrics = ("si_sdr",) + metrics
    test_set = read_set(set_dir)
    K = test_set.n_sources
    separator = _as_separator(separator, K)
    model_name = getattr(separator, "name", type(separator).__name__)
    if getattr(separator, "n_sources", None) not in (None, K):
        raise LvbdError(f"model {model_name} separates {separator.n_sources} sources but set "
                        f"{test_set.name} has {K}")
    items = test_set.items[:max_items] if max_items else test_set.items
    metric_keys = [k for m in metrics for k in ((m, f"input_{m}", f"{m}i") +
                                                (("sir", "sar") if m == "sdr" else ()))]
    per_source = list(metrics)
    rows, sample_rates, n_silent, offsets, conf_pairs = [], set(), 0, [], []
    iterator = items
    if progress:
        from tqdm import tqdm

        iterator = tqdm(items, desc=test_set.name, unit="mix", file=sys.stderr)
    start = time.perf_counter()
    metric_seconds = 0.0
    for item in iterator:
        mixture, references, sample_rate = load_item(item)
        sample_rates.add(sample_rate)
        confidence = None
        if hasattr(separator, "separate_with_confidence"):
            estimates, confidence = separator.separate_with_confidence(mixture, sample_rate)
        else:
            estimates = separator.separate(
                mixture, sample_rate, references if separator.needs_references else None)
        estimates = np.asarray(estimates, dtype=np.float64)
        if estimates.shape != references.shape:
            raise LvbdError(f"{model_name} returned estimates of shape {estimates.shape} for "
                            f"{item[0]}, expected {references.shape}")
        if not np.isfinite(estimates).all():
            raise LvbdError(f"{model_name} returned NaN or Inf samples for {item[0]}")
        tick = time.perf_counter()
        result = compute_metrics(mixture, references, estimates, sample_rate, metrics)
        metric_seconds += time.perf_counter() - tick
        n_silent += result["n_silent"]
        offsets += [int(o) for o, s in zip(result["offset"], result["silent"]) if not s]
        if confidence is not None:
            conf_pairs += [(confidence[p], v) for p, v in zip(result["permutation"],
                                                              result["si_sdr"]) if np.isfinite(v)]
        rows.append(_row(item[0], result, metric_keys, per_source, confidence))
    elapsed = time.perf_counter() - start
    offsets_arr = np.abs(np.asarray(offsets, dtype=np.int64))
    n_offset = int((offsets_arr > 0).sum())
    if offsets and np.median(offsets_arr) > 0:
        log.warning("%s on %s: most estimates are shifted against their references (median "
                    "|offset| %d samples); SI-SDR is unreliable, check the model's latency or "
                    "padding", model_name, test_set.name, int(np.median(offsets_arr)))
    summary = {
        "model": model_name, "set": test_set.name, "set_dir": str(test_set.root),
        "n_sources": K, "sample_rates": sorted(sample_rates),
        "n": len(rows), "n_refs": len(rows) * K, "n_silent_refs": n_silent,
        "metrics": {key: mean_ci([row[key] for row in rows]) for key in metric_keys},
        "ci_method": CI_METHOD,
        "time_offset": {"n_sources_offset": n_offset,
                        "median_abs_offset_samples": float(np.median(offsets_arr))
                        if offsets else None},
        "definitions": DEFINITIONS, "silent_policy": SILENT_POLICY,
        "seconds": {"total": elapsed, "metrics_per_utterance": metric_seconds / max(len(rows), 1)},
        "lvbd_version": __version__,
    }
    if len(conf_pairs) >= 3:
        from scipy.stats import spearmanr

        conf, score = np.asarray(conf_pairs).T
        rho = spearmanr(conf, score).statistic if np.ptp(conf) > 0 else float("nan")
        summary["confidence"] = {"spearman_vs_si_sdr": float(rho), "n": len(conf_pairs)}
    if out_dir is not None:
        out_dir = Path(out_dir)
        tag = test_set.name.replace("/", "_")
        _write(out_dir / f"{tag}.csv", _csv_text(rows))
        _write(out_dir / f"{tag}.json",
                      json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n")
        summary["files"] = [str(out_dir / f"{tag}.csv"), str(out_dir / f"{tag}.json")]
    summary["rows"] = rows
    return summary


def format_table(summary: dict | list[dict]) -> str:
    """Mean ± 95 % CI of SI-SDRi, SDRi, PESQ, STOI (those present), one line per set.

    With an ``id/<K>spk`` set among several, a ΔOOD column gives SI-SDRi(id) − SI-SDRi(set).
    """
    summaries = [summary] if isinstance(summary, dict) else list(summary)
    if not summaries:
        return "(no results)"
    present = [(k, label) for k, label in TABLE_COLUMNS
               if any(k in s["metrics"] for s in summaries)]
    models = {s["model"] for s in summaries}
    id_score = {s["n_sources"]: s["metrics"]["si_sdri"]["mean"] for s in summaries
                if s["set"].split("/")[0] == "id" and "si_sdri" in s["metrics"]}
    header = (["model"] if len(models) > 1 else []) + ["set", "n"] + [lab for _, lab in present]
    if id_score and len(summaries) > 1:
        header.append("ΔOOD")
    lines = []
    for s in summaries:
        cells = ([s["model"]] if len(models) > 1 else []) + [s["set"], str(s["n"])]
        for key, _ in present:
            m = s["metrics"].get(key)
            digits = 2 if key in ("si_sdri", "sdri", "pesq") else 3
            if m is None or m["mean"] is None:
                cells.append("-")
            elif m["ci95_half"] is None:
                cells.append(f"{m['mean']:.{digits}f}")
            else:
                cells.append(f"{m['mean']:.{digits}f} ± {m['ci95_half']:.{digits}f}")
        if "ΔOOD" in header:
            ref, own = id_score.get(s["n_sources"]), s["metrics"].get("si_sdri", {}).get("mean")
            cells.append("-" if ref is None or own is None or s["set"].startswith("id/")
                         else f"{ref - own:+.2f}")
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(header)]
    text = ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
            for cells in [header] + lines]
    silent = sum(s["n_silent_refs"] for s in summaries)
    title = f"model: {summaries[0]['model']}" if len(models) == 1 else "models"
    notes = [f"{title} — mean ± 95% CI (t-based, over utterances); SI-SDR zero-mean; "
             f"SDR = BSS-Eval v3 'sources' (512 taps); PIT by Hungarian on SI-SDR",
             f"silent references excluded: {silent} (policy: energy <= -80 dB re mixture)"]
    offset = sum(s["time_offset"]["n_sources_offset"] for s in summaries)
    if offset:
        notes.append(f"warning: {offset} estimates peak at a non-zero lag against their "
                     f"reference (time offset check)")
    return "\n".join(notes[:1] + text + notes[1:])


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--name", "--model", dest="model", default="default",
                        metavar="NAME|PATH",
                        help=f"one of {', '.join(MODEL_CHOICES)} or a checkpoint path "
                             f"(default: %(default)s)")
    parser.add_argument("--set", dest="sets", action="append", required=True, metavar="DIR",
                        help="a set folder (mix/ or mix_clean/ and s1/.. sK/, matched by file "
                             "name; metadata.csv optional), or a parent folder: every */Kspk "
                             "set below it is evaluated; repeatable")
    parser.add_argument("--out", default="results", metavar="DIR",
                        help="results go to DIR/<model>/ (default: %(default)s)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help=f"comma-separated, from {','.join(METRICS)} (default: %(default)s)")
    parser.add_argument("--max-items", type=int, default=None, metavar="N",
                        help="score only the first N mixtures of each set")
    parser.add_argument("--flip", action="store_true",
                        help="a model also separates the negated mixture and averages the two "
                             "(exactly odd in the input; twice the compute); results go to "
                             "DIR/<model>+flip/")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="show only warnings and errors; no progress bar")


def _expand_sets(values: list[str]) -> list[tuple[Path, bool]]:
    """→ [(set dir, given explicitly)] in order, without duplicates."""
    found: list[tuple[Path, bool]] = []
    for value in values:
        sets = find_sets(value)
        explicit = len(sets) == 1 and sets[0] == Path(value)
        found += [(s, explicit) for s in sets if s not in [f for f, _ in found]]
    return found


def run(args: argparse.Namespace) -> int:
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise LvbdError(f"unknown --metrics {','.join(unknown) or '(none)'}; choose from "
                        f"{','.join(METRICS)}")
    if args.max_items is not None and args.max_items < 1:
        raise LvbdError(f"--max-items must be >= 1, got {args.max_items}")
    _check_model_spec(args.model)
    sets = _expand_sets(args.sets)
    from .models.baselines.oracle import BASELINES

    flip = getattr(args, "flip", False)
    if flip and args.model in BASELINES:
        raise LvbdError(f"--flip: applies to a model, not to the baseline {args.model!r}")
    model = None if args.model in BASELINES else load_separator(args.model, flip=flip)
    label = args.model if model is None else model.name
    out_dir = Path(args.out) / label
    progress = show_progress(args.quiet)
    summaries = []
    for set_dir, explicit in sets:
        test_set_k = read_set(set_dir).n_sources
        if model is not None and model.n_sources != test_set_k:
            if explicit:
                raise LvbdError(f"model {label} separates {model.n_sources} sources but "
                                f"{set_dir} has {test_set_k}")
            log.warning("skipping %s: %d sources, the model separates %d", set_dir, test_set_k,
                        model.n_sources)
            continue
        separator = model if model is not None else load_separator(args.model, test_set_k)
        summary = evaluate_set(separator, set_dir, out_dir, metrics, args.max_items, progress)
        summary.pop("rows")
        summaries.append(summary)
    if not summaries:
        raise LvbdError(f"no test set matches the model's {model.n_sources} sources")
    table = format_table(summaries)
    _write(out_dir / "summary.json",
                  json.dumps(_json_safe(summaries), indent=2, allow_nan=False) + "\n")
    _write(out_dir / "table.txt", table + "\n")
    sys.stdout.write(table + "\n")
    log.info("wrote %s", out_dir)
    return 0


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
