"""User-facing errors: one line that names the bad input and what would be valid."""


class UserError(Exception):
    """Bad input from the user. The CLI prints `error: <message>` and exits 2, without a traceback."""


class RunFailed(Exception):
    """A run that started and then failed or was interrupted; its record (status.json, error.txt) says
    so. The CLI prints `error: <message>` (one line) and exits `exit_code`, without a traceback."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
