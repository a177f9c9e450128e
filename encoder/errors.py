"""The one error type that reaches a user as a sentence, not a traceback."""

from __future__ import annotations


class InterestBertError(Exception):
    """Bad input the user can fix: a card, a file, a line or an option.

    The message is one sentence that says where (card, file and line), what is wrong and how to fix it. The
    command line prints it after ``error:`` and exits with status 2; library callers can catch it.
    """


class DataCardError(InterestBertError, ValueError):
    """A data card or one of the files it names is invalid."""
