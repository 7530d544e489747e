"""Streaming swap rate and SI-SDRi against offline separation on long mixtures (issue 14).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/streaming_quality.py --model default \\
        --set data/test/id --seconds 30 --chunk 2.0

Builds ``--mixtures`` K-speaker mixtures of ``--seconds`` from the utterances of one test set
(``lvbd.longform.long_mixtures``; ``--set`` may be a set or its parent, the ``<K>spk`` set of the
model is used) and separates each one whole (offline), streamed (``Separator.stream`` with
``--chunk`` segments and ``--overlap``: the model's memory plus the engine's reordering), in
back-to-back chunks with only the model's memory, and in independent chunks. Prints per mode the
swap rate (chunk boundaries where the best assignment to the references changes), the same over
decided windows only, the swaps the mode adds to the whole file's order
(``longform.added_swaps``) and the whole-file SI-SDRi, and the ratio of streamed to offline
SI-SDRi (the peer measured in the same run).

``--split valid --similar`` pairs two validation speakers of one espeak-ng voice variant in each
mixture (``mixtures_from_speakers(similar=True)``): near-identical voices, where the model's
swaps come from (docs/streaming.md, "Eleventh session").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--set", default="data/test/id", help="a test set or its parent folder")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--chunk", type=float, default=2.0, help="segment / chunk seconds")
    parser.add_argument("--overlap", type=float, default=0.25, help="overlap of the stream")
    parser.add_argument("--context", type=float, default=0.0,
                        help="seconds of past input the stream shows the model before each "
                             "segment (low latency: --chunk 0.1 --overlap 0 --context 2)")
    parser.add_argument("--window", type=float, default=None,
                        help="seconds per window of the swap count (default: --chunk)")
    parser.add_argument("--modes", default="whole,stream,memory,independent",
                        help="comma-separated modes of lvbd.longform")
    parser.add_argument("--mixtures", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default=None,
                        help="build the mixtures from this split of the corpus manifest "
                             "(e.g. valid: choices are made there, not on a test set) "
                             "instead of --set")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="corpus of --split")
    parser.add_argument("--similar", action="store_true",
                        help="with --split: the speakers of each mixture share one espeak-ng "
                             "voice variant (near-identical voices)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--engine", default="torch", choices=["torch", "onnxruntime"],
                        help="what runs the model (the same outputs to the graph's parity; "
                             "onnxruntime is faster on short segments)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    if args.similar and not args.split:
        parser.error("--similar needs --split")

    import torch

    from lvbd.data.mixfolder import find_sets, read_set
    from lvbd.errors import LvbdError
    from lvbd.longform import evaluate_long_form
    from lvbd.separate import Separator

    torch.set_num_threads(args.threads)
    try:
        separator = Separator.load(args.model, device="cpu", engine=args.engine,
                                   threads=args.threads)
        mixtures = None
        if args.split:
            sys.path.insert(0, str(ROOT / "benchmarks"))
            from segment_choice import split_speakers

            from lvbd.longform import mixtures_from_speakers

            source = f"{args.data}/{args.split}"
            groups = split_speakers(args.data, args.split)
            mixtures = mixtures_from_speakers(groups, separator.n_sources, args.seconds,
                                              args.mixtures, args.seed, source, args.similar)
            if args.similar:
                source += " (speakers of one espeak-ng variant)"
        else:
            sets = [s for s in find_sets(args.set) if read_set(s).n_sources == separator.n_sources]
            if not sets:
                raise LvbdError(f"{args.set} holds no {separator.n_sources}-speaker set")
            source = sets[0]
        summary = evaluate_long_form(separator, source, args.seconds, args.chunk, args.overlap,
                                     args.mixtures, args.seed, tuple(args.modes.split(",")),
                                     args.context, args.window, mixtures)
    except LvbdError as err:
        sys.stderr.write(f"streaming_quality: error: {err}\n")
        return 1
    print(f"{args.model} on {source}: {args.mixtures} mixtures of {args.seconds:g} s, "
          f"{args.chunk:g} s chunks (stream overlap {args.overlap:g}, context {args.context:g} s; "
          f"swaps over {summary['window']:g} s windows)")
    print(f"{'mode':<12} {'swap rate':>10} {'swaps':>12} {'decided':>8} {'swaps':>12} "
          f"{'added':>10} {'swaps':>12} {'SI-SDRi dB':>11}")
    for mode, m in summary["modes"].items():
        rate = "-" if m["swap_rate"] is None else f"{m['swap_rate']:.3f}"
        d_rate = "-" if m["decided_swap_rate"] is None else f"{m['decided_swap_rate']:.3f}"
        o_rate = "-" if m.get("added_swap_rate") is None else f"{m['added_swap_rate']:.3f}"
        o_count = (f"{m['added_swaps']:>5}/{m['added_boundaries']:<6}"
                   if "added_swaps" in m else f"{'-':>12}")
        print(f"{mode:<12} {rate:>10} {m['swaps']:>5}/{m['boundaries']:<6} {d_rate:>8} "
              f"{m['decided_swaps']:>5}/{m['decided_boundaries']:<6} {o_rate:>10} {o_count} "
              f"{m['si_sdri']:>11.2f}")
    print(f"(decided: {summary['window']:g} s windows whose best assignment leads by >= 3 dB; "
          "added: over the windows that both this mode and the whole file decide, changes of "
          "this mode's order that also change its order relative to the whole file's: the "
          "swaps chunking or streaming adds)")
    if {"whole", "stream"} <= set(summary["modes"]):
        whole, stream = summary["modes"]["whole"]["si_sdri"], summary["modes"]["stream"]["si_sdri"]
        ratio = f"{stream / whole:.3f}" if whole > 0 else "- (offline SI-SDRi <= 0)"
        print(f"stream / whole SI-SDRi: {ratio} (difference {stream - whole:+.2f} dB)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
