"""User-facing errors: one line that names the bad input and what would be valid."""


class UserError(Exception):
    """Bad input from the user. The CLI prints `error: <message>` and exits 2, without a traceback."""


class RunFailed(Exception):
    """A run that started and then failed or was interrupted; its record (status.json, error.txt) says
    so. The CLI prints `error: <message>` (one line) and exits `exit_code`, without a traceback."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def closest(word: str, choices, n: int = 3) -> list[str]:
    """The valid names nearest to a mistyped one: difflib's ratio >= 0.6, and within 0.1 of the best,
    so a clear winner comes alone (`max_step` -> `max_steps`, not `save_steps` too); ties in the
    listed order. A case slip is nearer than any spelling slip."""
    import difflib

    word = str(word)
    options = list(dict.fromkeys(str(c) for c in choices))
    same_case = [c for c in options if c.lower() == word.lower() and c != word]
    if same_case:
        return same_case[:n]
    scored = [(difflib.SequenceMatcher(None, word, c).ratio(), -i, c) for i, c in enumerate(options) if c != word]
    scored = [s for s in scored if s[0] >= 0.6]
    if not scored:
        return []
    best = max(s[0] for s in scored)
    return [c for r, _i, c in sorted(scored, reverse=True) if r >= best - 0.1][:n]


def did_you_mean(word: str, choices, prefix: str = "") -> str:
    """`did you mean train.max_steps?` (or `... a or b?`) for a mistyped name; "" when none is near.
    `prefix` is put before each suggestion (`train.`, `method=`)."""
    near = closest(word, choices)
    if not near:
        return ""
    named = [f"{prefix}{c}" for c in near]
    return "did you mean " + (named[0] if len(named) == 1 else ", ".join(named[:-1]) + " or " + named[-1]) + "?"
