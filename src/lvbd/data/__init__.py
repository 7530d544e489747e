"""Data: corpus building from Debian speech packages (``corpus``), fixed test sets
(``testsets``), mixing (``mixing``) and torch datasets returning stems ``(K, L)``
(``datasets``). Heavy modules load lazily, so ``import lvbd.data`` stays light.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "BuildConfig": "corpus", "build_corpus": "corpus", "read_manifest": "corpus",
    "corpus_stats": "corpus", "mix_stems": "mixing", "DynamicMixDataset": "datasets",
    "FixedValidSet": "datasets", "MixtureFolderDataset": "datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'lvbd.data' has no attribute {name!r}")
