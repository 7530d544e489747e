"""Reference separators: oracle masks and the trivial ``mixture`` copy (``oracle.py``)."""
from .oracle import BASELINES, MixtureCopy, OracleMask, get_baseline

__all__ = ["BASELINES", "MixtureCopy", "OracleMask", "get_baseline"]
