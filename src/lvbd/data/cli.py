"""``lvbd data build`` (synthesize the corpus and test sets), ``lvbd data stats`` and
``lvbd data pack`` (a size-capped training corpus for a GPU machine; docs/gpu.md).

Also runnable on its own: ``python -m lvbd.data.cli build --out data --hours 10 --jobs 2``.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..progress import show_progress
from .corpus import BuildConfig, build_corpus, corpus_stats, format_stats
from .testsets import TEST_SETS
from .voices import ENGINES


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="{build,stats,pack}", required=True)
    build = sub.add_parser("build", help="synthesize the corpus, manifest and fixed test sets",
                           description=__doc__)
    build.add_argument("--out", default="data", help="output folder (default: data)")
    build.add_argument("--hours", type=_non_negative, default=10.0,
                       help="hours of espeak-ng training speech (default: 10)")
    build.add_argument("--sample-rate", type=_positive_int, default=8000)
    build.add_argument("--jobs", type=_positive_int, default=2, help="worker processes")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES),
                       help="engines to use (default: all; missing ones are skipped)")
    build.add_argument("--other-hours", type=_non_negative, default=0.5,
                       help="training hours per mbrola/flite/festival training voice")
    build.add_argument("--valid-clips", type=int, default=400,
                       help="espeak-ng validation clips")
    build.add_argument("--test-clips", type=int, default=400,
                       help="espeak-ng clips of each of test / ood-espeak / ood-lang")
    build.add_argument("--test-mixtures", type=int, nargs="+", default=[300, 200],
                       help="mixtures per test set, one value per --test-speakers entry "
                            "(default: 300 200)")
    build.add_argument("--test-speakers", type=_positive_int, nargs="+", default=[2, 3],
                       help="speakers per test mixture (default: 2 3)")
    build.add_argument("--test-sets", nargs="+", choices=list(TEST_SETS), default=None,
                       help="test sets to write (default: all)")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    stats = sub.add_parser("stats", help="hours / speakers / utterances per split and engine")
    stats.add_argument("root", nargs="?", default="data", help="corpus folder (default: data)")
    pack = sub.add_parser("pack", help="copy a size-capped train/valid subset of a corpus "
                          "(FLAC + manifest) for a GPU machine")
    pack.add_argument("--root", default="data", help="source corpus (default: data)")
    pack.add_argument("--out", required=True, help="pack folder to write, e.g. pack")
    pack.add_argument("--max-mib", type=_positive_float, default=45.0,
                      help="size limit of the whole pack in MiB (default: 45)")
    pack.add_argument("--engines", nargs="+", choices=ENGINES, default=None,
                      help="engines to keep (default: every engine in the manifest)")
    pack.add_argument("--splits", nargs="+", default=["train", "valid"],
                      help="manifest splits to keep (default: train valid)")
    pack.add_argument("--valid-share", type=_non_negative, default=0.08,
                      help="share of the size limit for the valid split (default: 0.08)")
    pack.add_argument("--seed", type=int, default=0)
    pack.add_argument("--force", action="store_true", help="replace an existing pack")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "stats":
        print(format_stats(corpus_stats(args.root)))
        return 0
    if args.data_command == "pack":
        from .pack import PackConfig, build_pack

        build_pack(args.root, args.out, PackConfig(
            max_mib=args.max_mib, splits=tuple(args.splits),
            engines=None if args.engines is None else tuple(args.engines),
            valid_share=args.valid_share, seed=args.seed), force=args.force)
        return 0
    config = BuildConfig(
        hours=args.hours, sample_rate=args.sample_rate, jobs=args.jobs, seed=args.seed,
        engines=tuple(args.engines), other_hours=args.other_hours,
        valid_clips=args.valid_clips, test_clips=args.test_clips,
        test_mixtures=tuple(args.test_mixtures), test_speakers=tuple(args.test_speakers),
        test_sets=None if args.test_sets is None else tuple(args.test_sets),
        progress=show_progress(args.quiet))
    manifest = build_corpus(args.out, config)
    print(format_stats(corpus_stats(manifest.parent)))
    return 0


def main(argv: list[str] | None = None) -> int:
    from ..errors import LvbdError

    parser = argparse.ArgumentParser(prog="lvbd data", description="corpus builder")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except LvbdError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
