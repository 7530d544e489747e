"""The one exception family a user can cause; the CLI turns it into one line and exit 1."""


class LvbdError(ValueError):
    """Base of every error caused by input, files or configuration (not by a bug)."""
