"""User-facing errors: one line that names the bad input and what would be valid."""


class UserError(Exception):
    """Bad input from the user. The CLI prints `error: <message>` and exits 2, without a traceback."""
