"""Deepen a trained model's TCN (same output, longer receptive field) for further training.

    PYTHONPATH=src python3 scripts/grow_tcn.py CKPT OUT.safetensors --n-blocks 8 [--force]

Writes a weights-only checkpoint (``lvbd.models.grow.grow_tcn``, config with the new
``model.n_blocks``; an existing OUT is overwritten only with ``--force``); continue with ``lvbd train --config CONFIG --set model.n_blocks=8 --init OUT``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lvbd.checkpoint import load_model, save_checkpoint
from lvbd.errors import LvbdError
from lvbd.models.grow import grow_tcn

log = logging.getLogger("grow_tcn")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--n-blocks", type=int, required=True)
    parser.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if Path(args.out).exists() and not args.force:
            raise LvbdError(f"{args.out} exists (use --force to overwrite it)")
        model, cfg, info = load_model(args.checkpoint)
        grown, grown_cfg = grow_tcn(model, cfg, args.n_blocks)
        save_checkpoint(args.out, grown, grown_cfg, info["step"],
                        extra={"grown_from": str(args.checkpoint), "n_blocks_from": cfg.model.n_blocks})
    except LvbdError as err:
        sys.stderr.write(f"grow_tcn: {err}\n")
        return 1
    log.info("%s: %d -> %d blocks per repeat, %d -> %d parameters", args.out, cfg.model.n_blocks,
             args.n_blocks, sum(p.numel() for p in model.parameters()),
             sum(p.numel() for p in grown.parameters()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
