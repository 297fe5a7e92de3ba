"""The one user-error type.

Anything a user can fix (a recipe key, a data file, a model name, an output folder) raises ``UserError`` with a
message that names the culprit (file, entry id and field, or recipe key) and says what is allowed. The CLI prints
it as one line, ``mmguard: error: <message>``, and exits 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input that the user can fix; the message names the culprit and what is allowed."""

    def __str__(self) -> str:  # one line, whatever the message holds
        return " ".join(str(self.args[0]).split()) if self.args else ""


def located(where: str, err: Exception) -> UserError:
    """``err`` re-raised with a location (a file, a recipe key) in front of its message."""
    return UserError(f"{where}: {err}")
