"""Experiment grids (``lvbd experiment``, issue 13): the grid file, and what it means for a budget.

A grid file (``configs/experiments/claims.yaml``) holds:

- ``name``, ``data_root`` (the ``data.root`` of every run, relative to the working folder like
  that key) and ``test_root`` (default ``<data_root>/test``: sets ``<set>/<K>spk``);
- ``budgets``: per budget (``small``, ``full``) the training ``steps`` (the same for every run, so
  the models of a section train equally long), ``set`` (overrides for every run), ``jobs``,
  ``threads`` (``train.threads`` of each run), ``eval_items`` (first N mixtures per set, 0 = all),
  ``long_mixtures`` and ``timing_steps``;
- ``runs``: per name a ``config`` (relative to the grid file), ``set`` (``lvbd train --set``
  overrides) and ``seeds`` (a list, or one per budget);
- ``sections`` (keys and defaults in ``SECTION_KEYS``): ``ood``, ``overfit`` (derives runs
  ``<run>-f<fraction>`` with ``data.speaker_fraction``), ``perm`` (derives ``<loss>-k<K>`` from its
  ``base`` run with each loss's overrides and ``model.n_sources``), ``memory`` and ``oracle``.

:func:`make_plan` resolves every run's config; two runs with the same resolved config and seed
are one run (trained once, in the folder of the first name), e.g. ``sinkpit-k2`` and ``lvbd``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import Config, ConfigError, load_config
from .errors import LvbdError

SECTIONS = ("ood", "overfit", "perm", "memory", "oracle")
BUDGETS = ("small", "full")
REQUIRED = object()
ORACLES = ["oracle-irm", "oracle-ibm", "oracle-psm", "mixture"]
# key: (kind, default); kinds are checked by _value
BUDGET_KEYS = {"steps": ("int", REQUIRED), "set": ("overrides", []), "jobs": ("int", 2),
               "threads": ("int", 1), "eval_items": ("int", 0), "long_mixtures": ("int", 4),
               "timing_steps": ("int", 3)}
RUN_KEYS = {"config": ("str", REQUIRED), "set": ("overrides", []), "seeds": ("seeds", [0])}
SECTION_KEYS = {
    "ood": {"runs": ("strs", REQUIRED), "reference": ("str", REQUIRED),
            "baselines": ("strs", REQUIRED), "sets": ("strs", REQUIRED),
            "param_tolerance": ("float", 0.2), "alpha": ("float", 0.05)},
    "overfit": {"variational": ("str", REQUIRED), "deterministic": ("str", REQUIRED),
                "fractions": ("floats", REQUIRED), "seeds": ("ints", [0]),
                "noise_db": ("float", 0.7)},
    "perm": {"base": ("str", REQUIRED), "losses": ("losses", REQUIRED),
             "reference": ("str", REQUIRED), "n_sources": ("ints", [2, 3]),
             "timing_sources": ("ints", [2, 3, 4]), "seeds": ("ints", [0]), "set": ("str", "id"),
             "tolerance_db": ("float", 0.3), "alpha": ("float", 0.05)},
    "memory": {"runs": ("strs", REQUIRED), "set": ("str", "id"), "seconds": ("float", 30.0),
               "chunk": ("float", 2.0), "overlap": ("float", 0.25),
               "max_swap_rate": ("float", 0.05), "tolerance_db": ("float", 1.0)},
    "oracle": {"models": ("strs", ORACLES), "sets": ("strs", []), "n_sources": ("ints", [2, 3])},
}


class GridError(LvbdError):
    """A grid file is missing or malformed, or names an unknown run, key or section."""


# ------------------------------------------------------------------ the grid file
def _value(value, kind: str, where: str):
    def bad(expected):
        return GridError(f"{where} expects {expected}, got {value!r}")

    number = (int, float)
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad("an integer")
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, number):
            raise bad("a number")
        return float(value)
    if kind == "str" and not isinstance(value, str):
        raise bad("a string")
    checks = {"strs": (str, "a list of strings"), "ints": (int, "a list of integers"),
              "floats": (number, "a list of numbers"), "overrides": (str, "a list of key=value")}
    if kind in checks:
        item, expected = checks[kind]
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, item)
                                              for v in value):
            raise bad(expected)
        return [float(v) for v in value] if kind == "floats" else list(value)
    if kind == "seeds":  # a list, or {budget: list}
        if isinstance(value, dict):
            return {b: _value(v, "ints", f"{where}.{b}") for b, v in value.items()}
        return _value(value, "ints", where)
    if kind == "losses":
        if not isinstance(value, dict) or not value:
            raise bad("a mapping of loss name -> list of key=value")
        return {str(k): _value(v or [], "overrides", f"{where}.{k}") for k, v in value.items()}
    return value


def _fill(values, spec: dict, where: str) -> dict:
    if not isinstance(values, dict):
        raise GridError(f"{where} must be a mapping, got {values!r}")
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise GridError(f"unknown key {where}.{unknown[0]} (known: {', '.join(spec)})")
    out = {}
    for key, (kind, default) in spec.items():
        if key in values:
            out[key] = _value(values[key], kind, f"{where}.{key}")
        elif default is REQUIRED:
            raise GridError(f"{where} needs '{key}'")
        else:
            out[key] = list(default) if isinstance(default, list) else default
    return out


@dataclass(frozen=True)
class Run:
    """One training run: ``name`` names its folder ``<out>/<name>/seed<seed>``."""

    name: str
    config: Path
    overrides: tuple[str, ...]
    seed: int

    @property
    def label(self) -> str:
        return f"{self.name}/seed{self.seed}"


@dataclass
class Grid:
    name: str
    path: Path
    data_root: str
    test_root: Path
    budgets: dict[str, dict]
    runs: dict[str, dict]
    sections: dict[str, dict]


def read_grid(path: str | Path) -> Grid:
    """Parse and check a grid file (config paths are relative to its folder)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as err:
        raise GridError(f"cannot read grid {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise GridError(f"grid {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    top = _fill(values, {"name": ("str", path.stem), "data_root": ("str", "data"),
                         "test_root": ("str", ""), "budgets": ("any", REQUIRED),
                         "runs": ("any", REQUIRED), "sections": ("any", REQUIRED)}, path.name)
    budgets = {b: _fill(v, BUDGET_KEYS, f"budgets.{b}") for b, v in _mapping(top, "budgets").items()}
    runs = {}
    for name, spec in _mapping(top, "runs").items():
        runs[name] = _fill(spec, RUN_KEYS, f"runs.{name}")
        runs[name]["config"] = (path.parent / runs[name]["config"]).resolve()
    sections = {}
    for name, spec in _mapping(top, "sections").items():
        if name not in SECTION_KEYS:
            raise GridError(f"unknown section '{name}' (known: {', '.join(SECTIONS)})")
        sections[name] = _fill(spec, SECTION_KEYS[name], f"sections.{name}")
    grid = Grid(top["name"], path, top["data_root"],
                Path(top["test_root"] or Path(top["data_root"]) / "test"), budgets, runs, sections)
    _check_names(grid)
    return grid


def _mapping(top: dict, key: str) -> dict:
    if not isinstance(top[key], dict) or not top[key]:
        raise GridError(f"'{key}' must be a non-empty mapping")
    return top[key]


def _check_names(grid: Grid) -> None:
    s = grid.sections
    named = [(f"sections.ood.{k}", v) for k in ("runs", "baselines")
             for v in s.get("ood", {}).get(k, [])]
    named += [("sections.ood.reference", s["ood"]["reference"])] if "ood" in s else []
    named += [(f"sections.overfit.{k}", s["overfit"][k]) for k in ("variational", "deterministic")
              if "overfit" in s]
    named += [("sections.perm.base", s["perm"]["base"])] if "perm" in s else []
    named += [("sections.memory.runs", v) for v in s.get("memory", {}).get("runs", [])]
    for where, name in named:
        if name not in grid.runs:
            raise GridError(f"{where} names run '{name}', which 'runs' does not define")
    if "ood" in s and not {s["ood"]["reference"], *s["ood"]["baselines"]} <= set(s["ood"]["runs"]):
        raise GridError("sections.ood: 'reference' and 'baselines' must be among its 'runs'")
    if "ood" in s and "id" not in s["ood"]["sets"]:
        raise GridError("sections.ood.sets must include id (Δ_OOD = SI-SDRi(id) − SI-SDRi(set))")
    if "perm" in s and s["perm"]["reference"] not in s["perm"]["losses"]:
        raise GridError("sections.perm.reference must be one of its 'losses'")
    if any(not 0 < f <= 1 for f in s.get("overfit", {}).get("fractions", [])):
        raise GridError("sections.overfit.fractions must lie in (0, 1]")


# ------------------------------------------------------------------ the plan: runs, configs, folders
@dataclass
class Plan:
    """What a grid means for one budget: the (deduplicated) runs of each section and their configs.

    ``members[section]`` maps a row key (a model name; ``(model, fraction)`` for overfit;
    ``(loss, K)`` for perm) to its runs, one per seed.
    """

    grid: Grid
    budget: str
    out: Path
    settings: dict
    configs: dict[Run, Config] = field(default_factory=dict)
    members: dict[str, dict] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)

    def overrides(self, run: Run) -> list[str]:
        """The ``--set`` list that makes ``run``'s config: data root, the budget's overrides, the
        run's own, its seed, the budget's steps and threads (later ones win)."""
        return [f"data.root={self.grid.data_root}", *self.settings["set"], *run.overrides,
                f"train.seed={run.seed}", f"train.steps={self.settings['steps']}",
                f"train.threads={self.settings['threads']}"]

    def folder(self, run: Run) -> Path:
        return self.out / run.name / f"seed{run.seed}"

    def set_dir(self, name: str, n_sources: int) -> Path:
        return self.grid.test_root / name / f"{n_sources}spk"

    def eval_stamp(self, folder: Path, set_name: str, n_sources: int) -> Path:
        return folder / "eval" / f"{set_name}-{n_sources}spk.stamp.json"

    def longform_path(self, run: Run, set_name: str, n_sources: int) -> Path:
        return self.folder(run) / f"longform-{set_name}-{n_sources}spk.json"

    @property
    def runs(self) -> list[Run]:
        return list(self.configs)


def _seeds(spec: dict, budget: str) -> list[int]:
    seeds = spec["seeds"]
    return seeds.get(budget, seeds.get("default", [0])) if isinstance(seeds, dict) else seeds


def make_plan(grid: Grid, budget: str, out: str | Path) -> Plan:
    """Resolve every run's config for ``budget`` (runs with equal configs and seeds are one run)."""
    if budget not in grid.budgets:
        raise GridError(f"grid {grid.path} has no budget '{budget}' (it has "
                        f"{', '.join(grid.budgets)})")
    settings = grid.budgets[budget]
    plan = Plan(grid, budget, Path(out), settings)
    known: dict[tuple[str, int], Run] = {}

    def add(name: str, spec: dict, extra: list[str], seed: int) -> Run:
        run = Run(name, spec["config"], tuple(spec["set"]) + tuple(extra), seed)
        try:
            cfg = load_config(run.config, plan.overrides(run))
        except ConfigError as err:
            raise GridError(f"run {run.label}: {err}") from None
        key = (cfg.to_json(), seed)
        if key not in known:
            known[key] = run
            plan.configs[run] = cfg
        return known[key]

    for name, spec in grid.runs.items():  # declared runs first: they name the shared folders
        for seed in _seeds(spec, budget):
            add(name, spec, [], seed)
    s = grid.sections
    if "ood" in s:
        plan.members["ood"] = {m: [add(m, grid.runs[m], [], k) for k in _seeds(grid.runs[m], budget)]
                               for m in s["ood"]["runs"]}
    if "memory" in s:
        plan.members["memory"] = {m: [add(m, grid.runs[m], [], k)
                                      for k in _seeds(grid.runs[m], budget)]
                                  for m in s["memory"]["runs"]}
    if "overfit" in s:
        sec = s["overfit"]
        plan.members["overfit"] = {
            (m, f): [add(m if f == 1 else f"{m}-f{f:g}", grid.runs[m],
                         [] if f == 1 else [f"data.speaker_fraction={f}"], k) for k in sec["seeds"]]
            for m in (sec["variational"], sec["deterministic"]) for f in sec["fractions"]}
    if "perm" in s:
        sec = s["perm"]
        plan.members["perm"] = {
            (loss, K): [add(f"{loss}-k{K}", grid.runs[sec["base"]], [*extra, f"model.n_sources={K}"], k)
                        for k in sec["seeds"]]
            for K in sec["n_sources"] for loss, extra in sec["losses"].items()}
    return plan


def needed_runs(plan: Plan, sections: list[str]) -> list[Run]:
    """The runs the chosen sections use, in plan order."""
    used = {r for name in sections for runs in plan.members.get(name, {}).values() for r in runs}
    return [r for r in plan.runs if r in used]


def count_parameters(cfg: Config) -> int:
    from .models import build_model

    return sum(p.numel() for p in build_model(cfg.model).parameters())


def check_parameters(plan: Plan) -> None:
    """Parameter counts of the ``ood`` models within ``param_tolerance`` of the reference's."""
    sec = plan.grid.sections["ood"]
    for model, runs in plan.members["ood"].items():
        plan.params[model] = count_parameters(plan.configs[runs[0]])
    ref = plan.params[sec["reference"]]
    for model, n in plan.params.items():
        if abs(n / ref - 1) > sec["param_tolerance"]:
            raise GridError(f"sections.ood: {model} has {n:,} parameters, {100 * (n / ref - 1):+.1f} % "
                            f"against {sec['reference']}'s {ref:,}; the grid allows "
                            f"±{100 * sec['param_tolerance']:g} % (param_tolerance)")
