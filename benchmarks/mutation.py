"""Mutation testing: are the tests able to see a bug in the code that decides what a user gets?

Two modes, both on a scratch copy of the work tree (the tree itself is never touched):

    # the hand-written spot-check of issue 12 (each bug must make its tests fail)
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/mutation.py spot [--only NAME ...]
        [--tests-from REV]

    # a mutation tool (mutmut, in the dev extra) on whole modules, score per module
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/mutation.py tool losses [metrics ...]
        [--max-children 1] [--keep /tmp/lvbd_mutation]

``spot`` applies one named bug at a time (``MUTATIONS``: module, text replaced, the tests that
must catch it), runs those tests with the copy's ``src`` first on ``PYTHONPATH``, and prints a
table: caught = the tests failed. ``--tests-from REV`` takes the test files from a git revision
(e.g. the commit before new tests) to show what the old tests caught (test files newer than
REV are removed from the copy; a bug whose tests are not in REV is ``n/a``). A bug whose text is
no longer in the module is reported as ``n/a`` (the code moved: update ``MUTATIONS``).

``tool`` runs ``mutmut run`` on each named module (``MODULES``: module → its test files) in its
own copy and prints killed / survived / timeout / no-tests per module and the score
killed / (all − skipped). ``mutmut results`` / ``mutmut show NAME`` in the kept copy
(``--keep``) list and show the surviving mutants. docs/testing.md records the figures.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str           # module file, relative to the repository root
    old: str            # exact text replaced (must occur exactly once)
    new: str
    tests: tuple[str, ...]


# Issue 12's spot-check bugs (all eleven of its table, plus gaussian_kl), each with the tests
# that must catch it; the separation/model ones by the shipped-model tests (issue 12 item 1).
MUTATIONS = (
    Mutation("losses.si_sdr: reference not made zero-mean", "src/lvbd/losses.py",
             "    reference = reference - reference.mean(dim=-1, keepdim=True)\n", "",
             ("tests/test_losses.py",)),
    Mutation("losses.block_tc: E[diag sigma^2] term dropped", "src/lvbd/losses.py",
             "    cov = cov + torch.diag(var)\n", "", ("tests/test_losses.py",)),
    Mutation("losses.gaussian_kl: sum instead of mean", "src/lvbd/losses.py",
             "    return kl.mean()\n", "    return kl.sum()\n", ("tests/test_losses.py",)),
    Mutation("metrics.pesq: reference and estimate swapped", "src/lvbd/metrics.py",
             "pesq_score(rate, ref, est, mode)", "pesq_score(rate, est, ref, mode)",
             ("tests/test_metrics.py",)),
    Mutation("metrics.pesq: always narrow-band", "src/lvbd/metrics.py",
             'mode = "wb" if rate == 16000 else "nb"', 'mode = "nb"', ("tests/test_metrics.py",)),
    Mutation("metrics.si_sdr: estimate not made zero-mean", "src/lvbd/metrics.py",
             "    est = est - est.mean(axis=-1, keepdims=True)\n", "", ("tests/test_metrics.py",)),
    Mutation("StreamWriter.finish: always normalises to peak 1", "src/lvbd/audio.py",
             'self.clip_mode == "rescale" and self.peak > 1.0 else 1.0',
             'self.clip_mode == "rescale" and self.peak > 0.0 else 1.0', ("tests/test_audio.py",)),
    Mutation("demixing._block_weights: Laplace weights replaced by Gauss",
             "src/lvbd/models/demixing.py",
             '    if source_model == "laplace":\n        return torch.rsqrt(r2)\n',
             '    if source_model == "laplace":\n        return D / r2\n',
             ("tests/models/test_demixing.py",)),
    Mutation("auxiva_demix: background rows never updated", "src/lvbd/models/demixing.py",
             "            if U is not None:\n"
             "                U = _background(torch.stack(rows, dim=2), C)\n", "",
             ("tests/models/test_demixing.py", "tests/test_reference.py", "tests/test_shipped_model.py")),
    Mutation("Separator.separate_to_files: writes -0.2 x the block", "src/lvbd/separate.py",
             "writer.write(block[k])", "writer.write(-0.2 * block[k])",
             ("tests/test_shipped_model.py",)),
    Mutation("LVBD.forward: output x -0.2", "src/lvbd/models/lvbd.py",
             "            normalised * scale, confidence, state,",
             "            -0.2 * normalised * scale, confidence, state,",
             ("tests/test_shipped_model.py",)),
    Mutation("objective.loss_terms: mixture-consistency term against -x", "src/lvbd/objective.py",
             "mixture_consistency(est.sum(dim=1), x)", "mixture_consistency(est.sum(dim=1), -x)",
             ("tests/test_shipped_model.py",)),
)

# Modules that decide results → the test files that exercise them (for ``tool``).
MODULES = {
    "losses": ("src/lvbd/losses.py", ("tests/test_losses.py",)),
    "metrics": ("src/lvbd/metrics.py", ("tests/test_metrics.py",)),
    "audio": ("src/lvbd/audio.py", ("tests/test_audio.py", "tests/test_robustness.py")),
    "demixing": ("src/lvbd/models/demixing.py", (
        "tests/models/test_demixing.py",
        # small_solve is only called under torch.export tracing; its own tests (not the slow
        # ONNX round trips of the same file)
        "tests/test_export_onnx.py::test_small_solve_equals_linalg_solve",
        "tests/test_export_onnx.py::test_small_solve_pivots",
        "tests/test_export_onnx.py::test_demixing_solve_uses_small_solve_only_under_export",
        "tests/test_export_onnx.py::test_small_solve_follows_lhs_dtype_and_device")),
    "separate": ("src/lvbd/separate.py", ("tests/test_separate.py", "tests/test_robustness.py",
                                          "tests/test_shipped_model.py")),
    "cli_separate": ("src/lvbd/cli_separate.py", ("tests/test_cli_separate.py",
                                                  "tests/test_cli.py",
                                                  "tests/test_shipped_model.py")),
}


def scratch_copy(dest: Path, tests_from: str | None = None) -> Path:
    """Copy the work tree's tracked and untracked-not-ignored files (not data/, runs/, .venv)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = ROOT / name
        if not src.is_file():  # deleted in the work tree
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)
    if tests_from:
        old = subprocess.run(["git", "ls-tree", "-r", "--name-only", tests_from, "tests"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        for path in (dest / "tests").rglob("*"):  # tests newer than REV do not take part
            if path.is_file() and str(path.relative_to(dest)) not in old:
                path.unlink()
        for name in old:
            blob = subprocess.run(["git", "show", f"{tests_from}:{name}"], cwd=ROOT,
                                  capture_output=True, check=True).stdout
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(blob)
    return dest


def env_for(copy: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(copy / "src"), OMP_NUM_THREADS="1",
                PYTHONDONTWRITEBYTECODE="1")


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    """(pytest exit code, last summary line) of ``tests`` in ``copy``; -9 on timeout."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env_for(copy), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return -9, f"timeout after {timeout:.0f} s"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, lines[-1] if lines else proc.stderr.strip()[-200:]


def spot(args: argparse.Namespace) -> int:
    chosen = [m for m in MUTATIONS if not args.only or any(o in m.name for o in args.only)]
    with tempfile.TemporaryDirectory(prefix="lvbd_spot_") as tmp:
        copy = scratch_copy(Path(tmp), args.tests_from)
        check = subprocess.run([sys.executable, "-c", "import lvbd; print(lvbd.__file__)"],
                               cwd=copy, env=env_for(copy), capture_output=True, text=True)
        if not check.stdout.strip().startswith(str(copy)):
            raise SystemExit(f"the copy's lvbd is not the one imported: {check.stdout}")
        baseline = {}
        for tests in sorted({m.tests for m in chosen}):
            missing = [t for t in tests if not (copy / t).exists()]
            if missing:
                baseline[tests] = (-1, f"{', '.join(missing)} not in the tests used")
                continue
            baseline[tests] = run_tests(copy, tests, args.timeout)
            if baseline[tests][0] != 0:
                print(f"baseline fails, no verdicts for {tests}: {baseline[tests][1]}")
        print(f"| bug | tests | caught | pytest |\n|---|---|---|---|")
        caught_all = True
        for m in chosen:
            target = copy / m.path
            original = target.read_text()
            if original.count(m.old) != 1 or baseline[m.tests][0] != 0:
                why = ("text not found once" if baseline[m.tests][0] == 0 else
                       baseline[m.tests][1] if baseline[m.tests][0] == -1 else "baseline fails")
                print(f"| {m.name} | {', '.join(m.tests)} | n/a | {why} |")
                continue
            target.write_text(original.replace(m.old, m.new))
            try:
                rc, summary = run_tests(copy, m.tests, args.timeout)
            finally:
                target.write_text(original)
            caught = rc != 0
            caught_all &= caught
            print(f"| {m.name} | {', '.join(m.tests)} | {'yes' if caught else 'NO'} | {summary} |",
                  flush=True)
    return 0 if caught_all else 1


MUTMUT_CFG = """[mutmut]
source_paths = src/
only_mutate = {module}
pytest_add_cli_args = -p no:cacheprovider -q
pytest_add_cli_args_test_selection =
{tests}
process_isolation = forkserver
use_git_change_detection = false
also_copy =
    configs/
    examples/
    benchmarks/
    scripts/
    docs/
    README.md
"""


def mutmut_counts(copy: Path) -> dict[str, int]:
    """Counts per status from ``mutmut results --all true``."""
    proc = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                          cwd=copy, env=env_for(copy), capture_output=True, text=True)
    counts: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        match = re.match(r"\s*\S+:\s*(.+?)\s*$", line)
        if match:
            status = match.group(1)
            counts[status] = counts.get(status, 0) + 1
    return counts


def tool(args: argparse.Namespace) -> int:
    keep = Path(args.keep)
    rows = []
    for name in args.modules:
        if name not in MODULES:
            raise SystemExit(f"unknown module {name!r} (choose from {', '.join(MODULES)})")
        module, tests = MODULES[name]
        copy = keep / name
        shutil.rmtree(copy, ignore_errors=True)
        scratch_copy(copy)
        (copy / "setup.cfg").write_text(MUTMUT_CFG.format(
            module=module, tests="\n".join(f"    {t}" for t in tests)))
        # mutmut reads [tool.mutmut] from pyproject.toml first: make sure there is none
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children",
                               str(args.max_children)], cwd=copy, env=env_for(copy),
                              capture_output=True, text=True)
        (copy / "mutmut_run.log").write_text(proc.stdout + proc.stderr)
        counts = mutmut_counts(copy)
        killed = counts.get("killed", 0)
        considered = sum(v for k, v in counts.items() if k not in ("skipped", "not checked"))
        score = killed / considered if considered else float("nan")
        rows.append((name, counts, score, time.monotonic() - start))
        print(f"{name}: {counts} score {100 * score:.1f} % ({time.monotonic() - start:.0f} s, "
              f"log {copy / 'mutmut_run.log'})", flush=True)
    print("\n| module | mutants | killed | survived | timeout | no tests | other | score |")
    print("|---|---|---|---|---|---|---|---|")
    for name, counts, score, _ in rows:
        other = sum(v for k, v in counts.items()
                    if k not in ("killed", "survived", "timeout", "no tests"))
        print(f"| {name} | {sum(counts.values())} | {counts.get('killed', 0)} | "
              f"{counts.get('survived', 0)} | {counts.get('timeout', 0)} | "
              f"{counts.get('no tests', 0)} | {other} | {100 * score:.1f} % |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p_spot = sub.add_parser("spot", help="issue 12's hand-written bugs, one at a time")
    p_spot.add_argument("--only", nargs="*", default=[], help="substrings of mutation names")
    p_spot.add_argument("--tests-from", default=None,
                        help="take tests/ from this git revision (what the old tests caught)")
    p_spot.add_argument("--timeout", type=float, default=900)
    p_tool = sub.add_parser("tool", help="mutmut on whole modules")
    p_tool.add_argument("modules", nargs="+", help=", ".join(MODULES))
    p_tool.add_argument("--max-children", type=int, default=1)
    p_tool.add_argument("--keep", default="/tmp/lvbd_mutation",
                        help="where the copies (and mutmut's results) stay")
    args = parser.parse_args()
    return spot(args) if args.mode == "spot" else tool(args)


if __name__ == "__main__":
    sys.exit(main())
