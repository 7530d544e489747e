"""Command line: ``lvbd {separate,train,evaluate,data,plot,env}``; ``main(argv) -> exit code``."""
from __future__ import annotations

import argparse
import glob
import importlib
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import LvbdError

log = logging.getLogger("lvbd")
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".mp3", ".w64",
                  ".caf", ".opus"}
# command -> (module, help); each module has add_arguments(parser) and run(args) -> int
COMMANDS = {
    "separate": ("lvbd.cli_separate", "separate audio files into their sources"),
    "train": ("lvbd.train", "train a model from a YAML config"),
    "evaluate": ("lvbd.evaluate", "evaluate a model or an oracle on a test set"),
    "data": ("lvbd.data.cli", "build the offline corpus and test sets; print its statistics"),
    "plot": ("lvbd.plot", "plot learning curves of a run"),
    "export": ("lvbd.export", "turn a training checkpoint into a shippable model file"),
}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvbd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lvbd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(cmd)
        cmd.set_defaults(_module=module)
    env = sub.add_parser("env", help="print versions for bug reports")
    env.set_defaults(_module=None)
    return parser


def print_env() -> int:
    import numpy
    import scipy
    import soundfile
    import torch

    for name, version in [("lvbd", __version__), ("python", sys.version.split()[0]),
                          ("torch", torch.__version__), ("numpy", numpy.__version__),
                          ("scipy", scipy.__version__), ("soundfile", soundfile.__version__),
                          ("libsndfile", soundfile.__libsndfile_version__),
                          ("cuda", str(torch.cuda.is_available()))]:
        sys.stdout.write(f"{name:<11} {version}\n")
    return 0


def expand_inputs(items: list[str]) -> list[Path]:
    """Files, folders (recursive, audio suffixes) and globs → sorted unique paths, in order.

    A name that matches nothing, or a folder without audio files, is kept so that the caller
    reports it instead of silently doing less than asked.
    """
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES
                           and p.is_file())
            paths += found or [path]
        elif path.exists():
            paths.append(path)
        elif glob.has_magic(item):
            paths += sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        else:
            paths.append(path)
    seen: set[Path] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]


def show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args._module is None:
            return print_env()
        return int(importlib.import_module(args._module).run(args) or 0)
    except LvbdError as err:
        sys.stderr.write(f"lvbd: error: {err}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("lvbd: interrupted\n")
        return 130
    except MemoryError:
        sys.stderr.write("lvbd: error: out of memory (try a smaller --segment)\n")
        return 1
    except OSError as err:
        sys.stderr.write(f"lvbd: error: {err.strerror or err}: {err.filename or ''}\n")
        return 1


if __name__ == "__main__":
    os._exit(main())
