"""Writing files so that a reader never sees half of one, even after a power cut.

Every file the project writes goes through `atomic_write`: the content goes to a temporary sibling in the same
folder, is flushed to disk (``fsync``), renamed over the final name (``os.replace``, atomic on POSIX and Windows),
and the folder itself is flushed so that the rename survives a crash. A failed write leaves no file behind and the
old file, if any, untouched. `atomic_folder` does the same for a whole folder (a checkpoint, a saved model part).
A temporary is named after its machine and process, so that the next write of the same file removes what a killed
process left (`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path


def fsync_path(path: str | os.PathLike) -> None:
    """Flushes a file, or a folder's entries, to disk. Folders cannot be opened on Windows: skipped there."""
    path = Path(path)
    if path.is_dir() and os.name == "nt":  # pragma: no cover - no folder fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """Flushes every file under ``folder`` to disk (before the folder, or its files, are renamed into place)."""
    for file in Path(folder).rglob("*"):
        if file.is_file():
            fsync_path(file)


_HOST = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"


def temporary_sibling(path: str | os.PathLike) -> Path:
    """``.NAME.host~pid~random.tmp`` beside ``path``: a temporary of this process, named so that a later run can
    tell a dead process's (`remove_stale_temporaries`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_HOST}~{os.getpid()}~{uuid.uuid4().hex[:8]}.tmp")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Removes the temporary siblings of ``path`` (files or folders that `atomic_write` or `atomic_folder` were
    filling) left by processes of this machine that are gone (killed, crashed); those of live processes and of other
    machines are kept. Returns what was removed."""
    path = Path(path)
    removed = []
    try:
        siblings = list(path.parent.glob(f".{glob.escape(path.name)}.*~*~*.tmp"))
    except OSError:
        return removed
    for sibling in siblings:
        parts = sibling.name[len(path.name) + 2 : -len(".tmp")].split("~")
        if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's), or this platform cannot tell: keep its files
    return True


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Calls ``write(tmp)`` on a temporary sibling of ``path`` (parent folders created), flushes it to disk and
    renames it to ``path``; a failed write leaves no file behind.

    Args:
        path: The final file.
        write: Writes the whole content to the path it is given (``pq.write_table(table, tmp)``,
            ``safetensors.torch.save_file(tensors, tmp)``, ...).

    Example:
        >>> atomic_write("out/table.parquet", lambda tmp: pq.write_table(table, tmp))  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_sibling(path)  # the writer creates it
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` through `atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, value, indent: int | None = 2, default=None) -> Path:
    """Writes ``value`` as JSON (UTF-8, a final newline) to ``path`` through `atomic_write`."""
    return atomic_write_text(path, json.dumps(value, indent=indent, default=default) + "\n")


def save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Writes torch tensors to a safetensors file through `atomic_write` (contiguous, on the CPU)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary sibling folder to fill; on success it replaces ``path`` whole (an existing ``path`` is
    removed only after the new one is complete), on error it is deleted and ``path`` is left as it was.

    Example:
        >>> with atomic_folder("run/checkpoint-20") as tmp:  # doctest: +SKIP
        ...     save_safetensors(tmp / "trainable.safetensors", tensors)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_sibling(path)
    tmp.mkdir(mode=0o755)  # a saved model is meant to be read by others
    try:
        yield tmp
        replace_folder(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Makes the complete folder ``tmp`` (a sibling of ``path``) become ``path``: its files flushed to disk, an
    existing ``path`` moved aside and removed only after the rename, the parent folder flushed."""
    tmp, path = Path(tmp), Path(path)
    fsync_tree(tmp)
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_path(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path
