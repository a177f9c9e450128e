"""The `interestbert` command line.

Commands are thin: they parse options, call the library (`interestbert.inference.loading`, ``encode``,
``recommend``, ``drift``, ``quickstart``, `interestbert.finetune`) and print its results on stdout; progress and
status go to stderr through `logging` (``--log-level``, ``-q``). Options are spelled with dashes
(``--data-dir``); the underscore spelling (``--data_dir``) is accepted everywhere as an alias, and ``finetune``
takes both (its options are a dataclass parsed by transformers' ``HfArgumentParser``, which also reads one
``.json`` file). Bad input, and any file system, decoding, memory or value error, is reported as one sentence after
``error:`` with exit status 2 (``--debug`` shows the traceback instead); a failed command leaves no empty output
folder.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from interestbert.encoder.errors import InterestBertError, describe

from . import commands
from .parser import LOG_LEVELS, build_parser

logger = logging.getLogger("interestbert")
version = commands.version


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "finetune":
        position = argv.index("finetune")
        _setup_logging(_log_level(argv[:position]))
        from interestbert.finetune.train import main as finetune_main

        return finetune_main(argv[position + 1 :])
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level if not args.quiet else "warning")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    created = _new_folders(args)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was left behind.", file=sys.stderr)
        return 130
    except (InterestBertError, OSError, UnicodeError, MemoryError, ValueError, RecursionError) as err:
        message = describe(err)
        if getattr(args, "debug", False) or message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        for folder in created:
            _remove_if_empty(folder)


OUTPUT_OPTIONS = ("output", "output_dir", "dry_run")


def _new_folders(args) -> list[Path]:
    """The output folders of ``args`` that do not exist yet: removed again after the command if it left them empty
    (a failed command leaves no empty folder behind)."""
    paths = [Path(v) for v in (getattr(args, k, None) for k in OUTPUT_OPTIONS) if isinstance(v, str) and v]
    return [p for p in paths if not os.path.lexists(p)]


def _remove_if_empty(folder: Path) -> None:
    """Removes ``folder`` if it holds nothing but empty folders (quietly leaves it when it cannot)."""
    if not folder.is_dir() or folder.is_symlink():
        return
    try:
        for sub in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if sub.is_dir() and not sub.is_symlink() and not any(sub.iterdir()):
                sub.rmdir()
        if not any(folder.iterdir()):
            folder.rmdir()
    except OSError:  # another process writing there, or no permission: what is left is not ours to force
        pass


def _log_level(argv: Sequence[str]) -> str:
    if "-q" in argv or "--quiet" in argv:
        return "warning"
    for flag in ("--log-level", "--log_level"):
        if flag in argv and argv.index(flag) + 1 < len(argv):
            return argv[argv.index(flag) + 1]
    return "info"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message comes (a redirected or captured stderr included)."""

    def emit(self, record):
        self.stream = sys.stderr
        super().emit(record)


def _setup_logging(level: str) -> None:
    """interestbert's messages to stderr at ``level``; weight-loading bars and hub warnings of the libraries
    below it silenced (they drown the command's own output); no progress bars under ``warning`` or above."""
    if level not in LOG_LEVELS:
        raise SystemExit(f"error: --log-level should be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if not any(getattr(h, "_interestbert", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._interestbert = True
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())
    if logging.getLevelName(level.upper()) >= logging.WARNING:
        os.environ["TQDM_DISABLE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


if __name__ == "__main__":  # python -m interestbert.inference.cli (accelerate launch -m ...)
    sys.exit(main())
