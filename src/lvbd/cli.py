"""Command line entry point: ``get_parser()`` and ``main(argv) -> exit code``.

Only the command being run is imported (torch, numpy and scipy stay unloaded for ``--help``),
so ``lvbd --help`` and ``lvbd separate --help`` answer at once.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .allocator import keep_freed_memory
from .errors import LvbdError
from .inputs import AUDIO_SUFFIXES, expand_inputs, find_inputs  # noqa: F401 (re-exported)

log = logging.getLogger("lvbd")
DESCRIPTION = """\
Separate recordings of several people talking at once into one file per talker,
and train, evaluate and ship the models that do it."""
EPILOG = """examples:
  lvbd separate talk.wav                  # -> separated/default/talk/source1.wav, source2.wav
  lvbd separate recordings/ -o out --flac # every audio file below recordings/
  lvbd evaluate --set data/test           # score the shipped model on every test set
  lvbd experiment configs/experiments/claims.yaml   # the claim experiments -> docs/results.md
  lvbd COMMAND --help                     # the options of one command"""
# command -> (module, help); each module has add_arguments(parser) and run(args) -> int
COMMANDS = {
    "separate": ("lvbd.cli_separate", "separate audio files into one file per talker"),
    "evaluate": ("lvbd.evaluate", "score a model or an oracle on test sets (SI-SDRi, SDRi, ...)"),
    "train": ("lvbd.train", "train a model from a YAML config"),
    "data": ("lvbd.data.cli", "build the offline training corpus and test sets; show statistics"),
    "export": ("lvbd.export", "turn a training checkpoint into a shippable model file"),
    "plot": ("lvbd.plot", "plot the learning curves of training runs"),
    "experiment": ("lvbd.experiment", "train and evaluate a grid of runs on the paper's claims; "
                                      "write the results tables"),
    "env": (None, "print versions of lvbd and its dependencies, for bug reports"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows ``(default: X)`` after every option with a meaningful default not already named."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or "default" in text.lower()
                or any(action.default is v for v in (None, False, True, argparse.SUPPRESS))
                or action.default == ""):
            return text
        return f"{text} (default: %(default)s)"


def _add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """``-v``/``-q`` before or after the command; below the top level they only set if given."""
    default = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("-v", "--verbose", action="store_true", **default,
                        help="show debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", **default,
                        help="show only warnings and errors; no progress bars")


def get_parser(commands: set[str] | None = None) -> argparse.ArgumentParser:
    """The ``lvbd`` parser; the options of ``commands`` only (default: all, which imports all)."""
    parser = argparse.ArgumentParser(prog="lvbd", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"lvbd {__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text,
                             formatter_class=HelpFormatter, conflict_handler="resolve")
        cmd.epilog = getattr(importlib.import_module(module), "EPILOG", None) \
            if module is not None and (commands is None or name in commands) else None
        if module is not None and (commands is None or name in commands):
            importlib.import_module(module).add_arguments(cmd)
        _add_common(cmd, top=False)
        cmd.set_defaults(_module=module)
    return parser


def print_env() -> int:
    import numpy
    import onnxruntime
    import scipy
    import soundfile
    import torch

    for name, version in [("lvbd", __version__), ("python", sys.version.split()[0]),
                          ("torch", torch.__version__), ("onnxruntime", onnxruntime.__version__),
                          ("numpy", numpy.__version__),
                          ("scipy", scipy.__version__), ("soundfile", soundfile.__version__),
                          ("libsndfile", soundfile.__libsndfile_version__),
                          ("cuda", str(torch.cuda.is_available()))]:
        sys.stdout.write(f"{name:<11} {version}\n")
    return 0


def _command(argv: list[str]) -> str | None:
    """The command named in ``argv`` (top-level options take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = get_parser({_command(argv)} & set(COMMANDS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else
                        logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    keep_freed_memory()  # tensor buffers reused without page faults (lvbd/allocator.py)
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
