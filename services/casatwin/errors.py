"""Errors a user can fix, as opposed to bugs.

A :class:`UserError` reaches the person at the terminal as one line saying what is wrong
and, when we know it, one line saying how to fix it; no stack trace. Anything else that
escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: bad input, a missing server, a wrong setting."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
