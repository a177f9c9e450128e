"""The one error type that reaches a user as a sentence, not a traceback."""

from __future__ import annotations


class InterestBertError(Exception):
    """Bad input the user can fix: a card, a file, a line or an option.

    The message is one sentence that says where (card, file and line), what is wrong and how to fix it. The
    command line prints it after ``error:`` and exits with status 2; library callers can catch it.
    """


class DataCardError(InterestBertError, ValueError):
    """A data card or one of the files it names is invalid."""


def excerpt(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, nested containers to a few levels and items: safe to put
    in a message whatever a card or a file holds (a YAML alias bomb, a megabyte of text)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxdict, short.maxlist, short.maxtuple, short.maxset = 3, 6, 6, 6, 6
    short.maxstring = short.maxother = limit
    short.maxlong = 40
    text = short.repr(value)
    return text if len(text) <= limit + 20 else text[:limit] + "..."


def describe(err: BaseException) -> str | None:
    """One sentence for an error of the file system, of decoding, of memory or of a value that reached the command
    line's boundary without being turned into an `InterestBertError`; None for any other kind (a bug: its traceback
    is shown)."""
    import errno

    if isinstance(err, InterestBertError):
        return str(err)
    if isinstance(err, MemoryError):  # pyarrow's ArrowMemoryError is one
        return (
            "the machine ran out of memory; use a smaller --batch-size or --chunk-users, encode --out-of-core, or "
            "free memory."
        )
    if isinstance(err, UnicodeError):
        encoding = getattr(err, "encoding", "the expected encoding")
        return (
            f"a file could not be decoded as {encoding} ({_first_line(err)}); save it in that encoding or set "
            "the card's `encoding`."
        )
    if isinstance(err, OSError):
        where = " ".join(str(p) for p in (err.filename, err.filename2) if p) or "a file"
        reason = err.strerror or _first_line(err) or type(err).__name__
        fix = {
            errno.ENOSPC: "free space there or write elsewhere",
            errno.EDQUOT: "free space there or write elsewhere",
            errno.EROFS: "write to a writable file system",
            errno.EACCES: "check its permissions or write elsewhere",
            errno.EPERM: "check its permissions or write elsewhere",
            errno.ENOENT: "check the path",
            errno.ENOTDIR: "check the path: a part of it is a file",
            errno.EISDIR: "pass a file's path, not a folder's",
            errno.EEXIST: "remove it or pass another path",
        }.get(err.errno, "check the path and try again")
        return f"{where}: {reason}; {fix}."
    if isinstance(err, (ValueError, RecursionError, OverflowError)):
        return (
            f"{type(err).__name__}: {_first_line(err) or 'a value is out of range'} (run again with --debug for "
            "where it came from); check the options and input files."
        )
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return excerpt(text.splitlines()[0], 200).strip("'\"") if text else ""
