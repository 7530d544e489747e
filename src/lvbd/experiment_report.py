"""The report of ``lvbd experiment``: statistics, verdict rules, Markdown sections and plots.

Reads what :mod:`lvbd.experiment` left in the run folders (per-utterance CSVs of the evaluations,
``metrics.jsonl``, long-form JSON, ``timing.json``) and writes one block per section into the
results file between ``<!-- experiment:GRID:SECTION -->`` and ``<!-- /experiment:GRID:SECTION -->``
(replacing an earlier block, appending a missing one, leaving the rest of the file as it was).

Statistics: a model with several seeds is scored per utterance by the mean over its seeds (the
per-seed means are shown beside it); means carry the t-based 95 % CI of
:func:`lvbd.evaluate.mean_ci` over utterances; two models are compared on the same utterances by
the two-sided paired Wilcoxon signed-rank test (:func:`wilcoxon_paired`, ``scipy.stats.wilcoxon``).
Each verdict rule is printed with its verdict.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import LvbdError
from .evaluate import mean_ci
from .fileio import atomic_write

if TYPE_CHECKING:
    from .experiment_grid import Plan, Run

TITLES = {"ood": "OOD robustness (issue 13 item 2)", "overfit": "Overfitting (issue 13 item 3)",
          "perm": "Permutation losses (issue 13 item 4)", "memory": "Memory (issue 13 item 5)",
          "oracle": "Oracle ceilings (issue 13 item 6)"}
HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"


# ------------------------------------------------------------------ statistics
def wilcoxon_paired(a, b) -> dict:
    """Two-sided paired Wilcoxon signed-rank test of ``a`` against ``b`` (pairs with a non-finite
    value dropped) → {n, median_diff (a − b), statistic, p}; p = 1 when every difference is 0,
    NaN without pairs."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size == 0:
        return {"n": 0, "median_diff": math.nan, "statistic": math.nan, "p": math.nan}
    diff = a - b
    if not np.any(diff):
        return {"n": int(a.size), "median_diff": 0.0, "statistic": 0.0, "p": 1.0}
    res = wilcoxon(a, b, alternative="two-sided")
    return {"n": int(a.size), "median_diff": float(np.median(diff)),
            "statistic": float(res.statistic), "p": float(res.pvalue)}


def read_scores(stamp: Path) -> dict[str, dict[str, float]] | None:
    """{utterance: {si_sdri, sdri}} of one cached evaluation, or None when it is missing."""
    try:
        csv_path = Path(json.loads(stamp.read_text())["csv"])
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, KeyError, json.JSONDecodeError):
        return None
    return {r["name"]: {k: float(r[k]) for k in ("si_sdri", "sdri") if r.get(k) not in (None, "")}
            for r in rows}


def model_scores(plan: Plan, runs: list[Run], set_name: str, n_sources: int,
                 folder=None) -> dict | None:
    """Seed-averaged per-utterance scores of one model on one set → {metric: {values: {utt: v},
    per_seed: [means], ci: mean_ci}}, or None when a seed's evaluation is missing."""
    folders = [folder] if folder is not None else [plan.folder(r) for r in runs]
    seeds = [read_scores(plan.eval_stamp(f, set_name, n_sources)) for f in folders]
    if not seeds or any(s is None for s in seeds):
        return None
    names = [n for n in seeds[0] if all(n in s for s in seeds)]
    out = {}
    for metric in ("si_sdri", "sdri"):
        values = {n: float(np.mean([s[n].get(metric, math.nan) for s in seeds])) for n in names}
        per_seed = [float(np.nanmean([s[n].get(metric, math.nan) for n in names])) if names
                    else math.nan for s in seeds]
        out[metric] = {"values": values, "per_seed": per_seed, "ci": mean_ci(list(values.values()))}
    return out


def compare(scores_a: dict, scores_b: dict, metric: str = "si_sdri") -> dict:
    """Paired Wilcoxon of model a against model b on their common utterances."""
    a, b = scores_a[metric]["values"], scores_b[metric]["values"]
    names = [n for n in a if n in b]
    return wilcoxon_paired([a[n] for n in names], [b[n] for n in names])


# ------------------------------------------------------------------ verdict rules
OOD_RULE = ("holds if, on a majority of the OOD sets with results, the reference model's Δ_OOD is "
            "smaller than every deterministic baseline's and its SI-SDRi there is higher than "
            "each baseline's (paired Wilcoxon, p < {alpha}); does not hold if some baseline has "
            "the smaller Δ_OOD and the higher SI-SDRi (p < {alpha}) on a majority of the OOD "
            "sets; inconclusive otherwise")
OVERFIT_RULE = ("holds if the variational model's final train − valid gap is smaller than the "
                "deterministic model's by more than {noise} dB (seed noise, design §0) at the "
                "smallest fraction and not larger by more than {noise} dB at any fraction; does "
                "not hold if it is larger by more than {noise} dB at the smallest fraction; "
                "inconclusive otherwise")
PERM_RULE = ("holds if at every K a differentiable loss ({others}) reaches the SI-SDRi of "
             "{reference} within {tol} dB or better; does not hold if at some K every "
             "differentiable loss is more than {tol} dB below it with p < {alpha}; inconclusive "
             "otherwise")
MEMORY_RULE = ("holds if, for {model}, the swap rate of chunks with the memory is at most "
               "{max_swap} and below that of independent chunks, and the streamed SI-SDRi is within "
               "{tol} dB of whole-file separation; does not hold if the memory does not lower a "
               "non-zero swap rate of independent chunks, or streaming loses more than {tol} dB; "
               "inconclusive otherwise")


def ood_verdict(delta: dict, tests: dict, reference: str, baselines: list[str],
                ood_sets: list[str], alpha: float = 0.05) -> str:
    """``delta[model][set]`` = Δ_OOD; ``tests[model][set]`` = Wilcoxon of reference − model on
    that set ({median_diff, p}); see ``OOD_RULE``."""
    sets = [s for s in ood_sets if s in delta.get(reference, {})
            and all(s in delta.get(b, {}) and s in tests.get(b, {}) for b in baselines)]
    if not sets or not baselines:
        return UNSURE

    def better(s, b, sign):  # sign +1: reference better; -1: baseline better
        t = tests[b][s]
        return (sign * (delta[b][s] - delta[reference][s]) > 0 and sign * t["median_diff"] > 0
                and t["p"] < alpha)
    if sum(all(better(s, b, +1) for b in baselines) for s in sets) > len(sets) / 2:
        return HOLDS
    if any(sum(better(s, b, -1) for s in sets) > len(sets) / 2 for b in baselines):
        return FAILS
    return UNSURE


def overfit_verdict(gaps: dict, variational: str, deterministic: str, fractions: list[float],
                    noise_db: float) -> str:
    """``gaps[(model, fraction)]`` = final train − valid SI-SDRi (dB); see ``OVERFIT_RULE``."""
    done = [f for f in sorted(fractions) if (variational, f) in gaps and (deterministic, f) in gaps]
    if not done or done[0] != min(fractions):
        return UNSURE
    d = {f: gaps[(deterministic, f)] - gaps[(variational, f)] for f in done}
    if d[done[0]] > noise_db and all(v >= -noise_db for v in d.values()):
        return HOLDS
    if d[done[0]] < -noise_db:
        return FAILS
    return UNSURE


def perm_verdict(diffs: dict, reference: str, losses: list[str], n_sources: list[int],
                 tol: float, alpha: float = 0.05) -> str:
    """``diffs[(loss, K)]`` = {diff: SI-SDRi(loss) − SI-SDRi(reference), p}; see ``PERM_RULE``."""
    others = [loss for loss in losses if loss != reference]
    rows = {K: [diffs[(loss, K)] for loss in others if (loss, K) in diffs] for K in n_sources}
    if not others or any(len(r) < len(others) for r in rows.values()):
        return UNSURE
    if all(any(r["diff"] >= -tol for r in rows[K]) for K in n_sources):
        return HOLDS
    if any(all(r["diff"] < -tol and r["p"] < alpha for r in rows[K]) for K in n_sources):
        return FAILS
    return UNSURE


def memory_verdict(modes: dict, max_swap: float, tol: float) -> str:
    """``modes[mode]`` = {swap_rate, si_sdri} pooled over the reference model's seeds; see
    ``MEMORY_RULE``."""
    try:
        mem, ind = modes["memory"]["swap_rate"], modes["independent"]["swap_rate"]
        whole, stream = modes["whole"]["si_sdri"], modes["stream"]["si_sdri"]
    except KeyError:
        return UNSURE
    if None in (mem, ind, whole, stream):
        return UNSURE
    loss = whole - stream
    if mem <= max_swap and mem < ind and loss <= tol:
        return HOLDS
    if (ind > 0 and mem >= ind) or loss > tol:
        return FAILS
    return UNSURE


# ------------------------------------------------------------------ formatting
def _num(value, digits: int = 2, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _cell(score: dict | None) -> str:
    if score is None or score["ci"]["mean"] is None:
        return "-"
    text = _num(score["ci"]["mean"])
    if score["ci"]["ci95_half"] is not None:
        text += f" ± {_num(score['ci']['ci95_half'])}"
    if len(score["per_seed"]) > 1:
        text += " [" + ", ".join(_num(v) for v in score["per_seed"]) + "]"
    return text


def _test_cell(t: dict | None) -> str:
    if t is None or t["n"] == 0:
        return "-"
    return f"{_num(t['median_diff'], sign=True)} (p {t['p']:.2g})"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _runs_info(plan: Plan, runs: list[Run]) -> str:
    """Steps, CPU time and hardware of the runs, from their metrics and launch records."""
    machines, cpu, wall, steps = set(), 0.0, 0.0, []
    for run in runs:
        folder = plan.folder(run)
        for line in _lines(folder / "launches.jsonl"):
            wall += float(line.get("wall_seconds", 0.0))
            if "hardware" not in line:
                continue
            hw = line["hardware"]
            machines.add(f"{hw.get('cpu', '?')} ({hw.get('cores', '?')} cores"
                         f"{', GPU ' + hw['gpu'] if hw.get('gpu') else ''}; "
                         f"{line.get('threads')} thread(s) per run, {line.get('jobs')} run(s) "
                         f"side by side)")
        rows = _lines(folder / "metrics.jsonl")
        if rows:
            cpu += float(rows[-1].get("cpu_minutes", 0.0))
            steps.append(int(rows[-1].get("step", 0)))
    if not steps:
        return "Not run yet"
    at = f"{min(steps)}" if min(steps) == max(steps) else f"{min(steps)}–{max(steps)}"
    return (f"{len(steps)} run(s) at step {at}: {cpu / 60:.2f} CPU-hours and {wall / 3600:.2f} "
            f"wall-hours of training summed over runs; hardware: "
            f"{'; '.join(sorted(machines)) or 'not recorded'}")


def _lines(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _header(plan: Plan, section: str, command: str, runs: list[Run]) -> list[str]:
    st = plan.settings
    items = f"the first {st['eval_items']}" if st["eval_items"] else "all"
    text = f"Budget `{plan.budget}`: scores on {items} mixtures of each test set."
    if runs:
        cfg = plan.configs[runs[0]]
        text = (f"Budget `{plan.budget}`: {st['steps']} training steps per run (batch "
                f"{cfg.data.batch_size} × {cfg.data.segment_seconds:g} s; the same data, "
                f"augmentation and lifting network for every model; training voices: "
                f"{', '.join(cfg.data.engines)}); test scores on {items} mixtures of each set, "
                f"with each run's checkpoint of best validation SI-SDRi. {_runs_info(plan, runs)}.")
    return [f"### {TITLES[section]}", "", "```", f"{command} --only {section}", "```", "", text,
            ""]


# ------------------------------------------------------------------ sections
def section_ood(plan: Plan, command: str, plots: Path) -> tuple[str, list[Path]]:
    sec, members = plan.grid.sections["ood"], plan.members["ood"]
    ref, sets = sec["reference"], sec["sets"]
    ood_sets = [s for s in sets if s != "id"]
    scores = {m: {s: model_scores(plan, runs, s, plan.configs[runs[0]].model.n_sources)
                  for s in sets} for m, runs in members.items()}
    lines = _header(plan, "ood", command, [r for runs in members.values() for r in runs])
    counts = ", ".join(f"{m} {n:,} ({100 * (n / plan.params[ref] - 1):+.1f} %)"
                       for m, n in plan.params.items())
    lines += [f"Parameters: {counts}; seeds: " + ", ".join(
        f"{m} {'/'.join(str(r.seed) for r in runs)}" for m, runs in members.items()) + ".", ""]
    for metric, label in (("si_sdri", "SI-SDRi"), ("sdri", "SDRi")):
        lines += [f"{label} (dB), mean ± 95 % CI over utterances [per-seed means]:", "",
                  _table(["model"] + sets, [[m] + [_cell(scores[m][s] and scores[m][s][metric])
                                                   for s in sets] for m in members]), ""]
    delta, tests = {}, {}
    for m in members:
        mean = {s: v["si_sdri"]["ci"]["mean"] for s, v in scores[m].items() if v}
        delta[m] = {s: mean["id"] - mean[s] for s in ood_sets
                    if mean.get("id") is not None and mean.get(s) is not None}
        if m != ref:
            tests[m] = {s: compare(scores[ref][s], scores[m][s]) for s in sets
                        if scores[ref][s] and scores[m][s]}
    lines += ["Δ_OOD = SI-SDRi(id) − SI-SDRi(set) (dB; smaller is more robust):", "",
              _table(["model"] + ood_sets + ["mean"],
                     [[m] + [_num(delta[m].get(s)) for s in ood_sets]
                      + [_num(np.mean(list(delta[m].values())) if delta[m] else None)]
                      for m in members]), "",
              f"Paired Wilcoxon signed-rank tests over utterances, {ref} − model on each set: "
              "median SI-SDRi difference (dB) and two-sided p:", "",
              _table(["model"] + sets, [[m] + [_test_cell(tests[m].get(s)) for s in sets]
                                        for m in members if m != ref]), ""]
    verdict = ood_verdict(delta, tests, ref, sec["baselines"], ood_sets, sec["alpha"])
    lines += [f"**Claim: {ref} is more robust out of distribution than the deterministic "
              f"baselines ({', '.join(sec['baselines'])}) — {verdict}.** Rule: "
              + OOD_RULE.format(alpha=sec["alpha"]) + ".", ""]
    series = {m: [((scores[m][s] or {}).get("si_sdri", {}).get("ci", {}).get("mean"),
                   (scores[m][s] or {}).get("si_sdri", {}).get("ci", {}).get("ci95_half"))
                  for s in sets] for m in members}
    if all(v[0] is None for values in series.values() for v in values):
        return "\n".join(lines), []
    from .plot import bar_chart

    png = bar_chart(plots / f"{plan.grid.name}-ood.png", sets, series, "SI-SDRi (dB)",
                    f"SI-SDRi by test set, 95 % CI ({plan.budget} budget)")
    lines += [f"![SI-SDRi by test set]({plots.name}/{png.name})"]
    return "\n".join(lines), [png]


def _curve(plan: Plan, run: Run) -> dict:
    rows = [r for r in _lines(plan.folder(run) / "metrics.jsonl") if "valid_si_sdri" in r]
    if not rows:
        return {}
    best = max(rows, key=lambda r: r["valid_si_sdri"])
    last = rows[-1]
    train = last.get("train_eval_si_sdri")
    return {"steps": [r["step"] for r in rows], "valid": [r["valid_si_sdri"] for r in rows],
            "train": [r.get("train_eval_si_sdri", math.nan) for r in rows],
            "final_valid": last["valid_si_sdri"], "final_train": train,
            "gap": None if train is None else train - last["valid_si_sdri"],
            "best_step": best["step"], "best_valid": best["valid_si_sdri"]}


def _speakers(plan: Plan, fraction: float) -> str:
    from .data.corpus import read_manifest
    from .data.datasets import speaker_subset

    cfg = next(iter(plan.configs.values()))
    try:
        names = {r["speaker"] for r in read_manifest(plan.grid.data_root)
                 if r["split"] == cfg.data.splits_train and r["engine"] in cfg.data.engines}
    except LvbdError:
        return "-"
    return str(len(speaker_subset(names, fraction)))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def section_overfit(plan: Plan, command: str, plots: Path) -> tuple[str, list[Path]]:
    sec, members = plan.grid.sections["overfit"], plan.members["overfit"]
    curves = {key: [_curve(plan, r) for r in runs] for key, runs in members.items()}
    lines = _header(plan, "overfit", command, [r for runs in members.values() for r in runs])
    rows, gaps = [], {}
    for (model, fraction), cs in curves.items():
        cs = [c for c in cs if c]
        gap = _mean([c["gap"] for c in cs])
        if gap is not None:
            gaps[(model, fraction)] = gap
        rows.append([model, f"{fraction:g}", _speakers(plan, fraction),
                     "/".join(str(r.seed) for r in members[(model, fraction)]),
                     _num(_mean([c["final_train"] for c in cs])),
                     _num(_mean([c["final_valid"] for c in cs])), _num(gap),
                     _num(_mean([c["best_valid"] for c in cs])),
                     "/".join(str(c["best_step"]) for c in cs) or "-"])
    lines += ["SI-SDRi (dB) at the last validation on fixed training mixtures (train, "
              "`train_eval_si_sdri`) and on the validation mixtures (valid), the gap between them, "
              "and the best validation score with its step (mean over seeds):", "",
              _table(["model", "fraction", "speakers", "seeds", "train", "valid", "gap",
                      "best valid", "best step"], rows), ""]
    verdict = overfit_verdict(gaps, sec["variational"], sec["deterministic"], sec["fractions"],
                              sec["noise_db"])
    lines += [f"**Claim: the variational model ({sec['variational']}) overfits less than the "
              f"deterministic one ({sec['deterministic']}) — {verdict}.** Rule: "
              + OVERFIT_RULE.format(noise=sec["noise_db"]) + ".", ""]
    panels = {}
    for (model, fraction), cs in curves.items():
        if cs and cs[0]:
            panel = panels.setdefault(f"{fraction:g} of the speakers", {})
            panel[f"{model} train"] = (cs[0]["steps"], cs[0]["train"], "--")
            panel[f"{model} valid"] = (cs[0]["steps"], cs[0]["valid"], "o-")
    if not panels:
        return "\n".join(lines), []
    from .plot import curve_panels

    png = curve_panels(plots / f"{plan.grid.name}-overfit.png", panels, "step", "SI-SDRi (dB)")
    lines += [f"![train and validation SI-SDRi over training (first seed)]({plots.name}/{png.name})"]
    return "\n".join(lines), [png]


def section_perm(plan: Plan, command: str, plots: Path) -> tuple[str, list[Path]]:
    sec, members = plan.grid.sections["perm"], plan.members["perm"]
    ref, name = sec["reference"], sec["set"]
    scores = {key: model_scores(plan, runs, name, key[1]) for key, runs in members.items()}
    lines = _header(plan, "perm", command, [r for runs in members.values() for r in runs])
    rows, diffs = [], {}
    for (loss, K), score in scores.items():
        base = scores.get((ref, K))
        test, diff = None, None
        if score and base and loss != ref:
            test = compare(score, base)
            diff = score["si_sdri"]["ci"]["mean"] - base["si_sdri"]["ci"]["mean"]
            diffs[(loss, K)] = {"diff": diff, "p": test["p"]}
        rows.append([loss, str(K), _cell(score and score["si_sdri"]), _num(diff, sign=True),
                     _test_cell(test)])
    lines += [f"SI-SDRi (dB) on `{name}` and the difference to {ref} (mean; paired Wilcoxon "
              "median difference and p):", "",
              _table(["loss", "K", "SI-SDRi", f"− {ref}", "Wilcoxon"], rows), ""]
    timing = {}
    try:
        timing = json.loads((plan.out / "timing.json").read_text())
    except (OSError, json.JSONDecodeError):
        pass
    Ks = sec["timing_sources"]
    trows = []
    for loss in sec["losses"]:
        med = [float(np.median(timing[f"{loss}-k{K}"]["seconds"])) if f"{loss}-k{K}" in timing
               else None for K in Ks]
        trows.append([loss] + [_num(v, 3) for v in med]
                     + [_num(med[-1] / med[0]) if med[0] and med[-1] else "-"])
    machines = {f"{v['hardware'].get('cpu')} ({v['hardware'].get('gpu') or 'CPU'})"
                for v in timing.values() if "hardware" in v}
    lines += [f"Seconds per training step (median of {plan.settings['timing_steps']} timed steps "
              f"after one untimed, in process, {plan.settings['threads'] or 'all'} thread(s); "
              f"{', '.join(sorted(machines)) or 'not measured'}):", "",
              _table(["loss"] + [f"K = {K}" for K in Ks] + [f"K = {Ks[-1]} / K = {Ks[0]}"],
                     trows), ""]
    verdict = perm_verdict(diffs, ref, list(sec["losses"]), sec["n_sources"], sec["tolerance_db"],
                           sec["alpha"])
    others = ", ".join(loss for loss in sec["losses"] if loss != ref)
    lines += [f"**Claim: the differentiable permutation losses work as well as {ref} — {verdict}.** "
              "Rule: " + PERM_RULE.format(others=others, reference=ref, tol=sec["tolerance_db"],
                                          alpha=sec["alpha"]) + "."]
    return "\n".join(lines), []


def section_memory(plan: Plan, command: str, plots: Path) -> tuple[str, list[Path]]:
    sec, members = plan.grid.sections["memory"], plan.members["memory"]
    lines = _header(plan, "memory", command, [r for runs in members.values() for r in runs])
    lines += [f"{plan.settings['long_mixtures']} mixtures of {sec['seconds']:g} s per model built "
              f"from the `{sec['set']}` utterances (`lvbd.longform`), {sec['chunk']:g} s chunks "
              f"(stream: overlap {sec['overlap']:g}). Swap rate = chunk boundaries where the best "
              "assignment to the references changes / boundaries; SI-SDRi of the whole output "
              "under one assignment. Modes: `whole` one segment; `stream` Separator.stream "
              "(memory + overlap reordering); `memory` back-to-back chunks, memory carried; "
              "`independent` each chunk alone.", ""]
    rows, pooled = [], {}
    for model, runs in members.items():
        results = []
        for run in runs:
            try:
                results.append(json.loads(plan.longform_path(
                    run, sec["set"], plan.configs[run].model.n_sources).read_text()))
            except (OSError, json.JSONDecodeError):
                pass
        for mode in ("whole", "stream", "memory", "independent"):
            got = [r["modes"][mode] for r in results if mode in r.get("modes", {})]
            swaps, bounds = sum(g["swaps"] for g in got), sum(g["boundaries"] for g in got)
            rate = swaps / bounds if bounds else None
            si = _mean([g["si_sdri"] for g in got])
            pooled.setdefault(model, {})[mode] = {"swap_rate": rate, "si_sdri": si}
            whole = pooled[model].get("whole", {}).get("si_sdri")
            rows.append([model, mode, "/".join(str(r.seed) for r in runs),
                         f"{_num(rate)} ({swaps}/{bounds})" if bounds else "-", _num(si),
                         _num(si - whole, sign=True) if si is not None and whole is not None
                         else "-"])
    lines += [_table(["model", "mode", "seeds", "swap rate", "SI-SDRi", "− whole"], rows), ""]
    reference = sec["runs"][0]
    verdict = memory_verdict(pooled.get(reference, {}), sec["max_swap_rate"], sec["tolerance_db"])
    lines += [f"**Claim: the memory keeps each source on its output across chunks — {verdict}.** "
              "Rule: " + MEMORY_RULE.format(model=reference, max_swap=sec["max_swap_rate"],
                                            tol=sec["tolerance_db"]) + "."]
    return "\n".join(lines), []


def section_oracle(plan: Plan, command: str, plots: Path) -> tuple[str, list[Path]]:
    sec = plan.grid.sections["oracle"]
    sets = sec["sets"] or plan.grid.sections.get("ood", {}).get("sets", [])
    lines = _header(plan, "oracle", command, [])
    rows = []
    for K in sec["n_sources"]:
        for name in sets:
            cells = []
            for model in sec["models"]:
                s = model_scores(plan, [], name, K, folder=plan.out / "oracles" / model)
                cells.append("-" if s is None else f"{_cell(s['si_sdri'])} / {_cell(s['sdri'])}")
            rows.append([f"{name}/{K}spk"] + cells)
    lines += ["SI-SDRi / SDRi (dB) of the oracle masks and of the unprocessed mixture "
              "(mean ± 95 % CI over utterances):", "", _table(["set"] + sec["models"], rows)]
    return "\n".join(lines), []


SECTION_WRITERS = {"ood": section_ood, "overfit": section_overfit, "perm": section_perm,
                   "memory": section_memory, "oracle": section_oracle}


# ------------------------------------------------------------------ the results file
def markers(grid: str, section: str) -> tuple[str, str]:
    return f"<!-- experiment:{grid}:{section} -->", f"<!-- /experiment:{grid}:{section} -->"


def write_sections(path: Path, grid: str, blocks: dict[str, str]) -> Path:
    """Replace (or append) the marked block of every section in ``path``; the rest is kept."""
    text = path.read_text() if path.exists() else "# Measured results\n"
    for section, body in blocks.items():
        start, end = markers(grid, section)
        block = f"{start}\n{body.rstrip()}\n{end}"
        i, j = text.find(start), text.find(end)
        if 0 <= i < j:
            text = text[:i] + block + text[j + len(end):]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return path


def write_report(plan: Plan, sections: list[str], results: Path, command: str) -> list[Path]:
    """Write the chosen sections into ``results`` and their plots into ``results``'s plots/."""
    plots = results.parent / "plots"
    blocks, written = {}, []
    for section in sections:
        blocks[section], pngs = SECTION_WRITERS[section](plan, command, plots)
        written += pngs
    return [write_sections(results, plan.grid.name, blocks)] + written
