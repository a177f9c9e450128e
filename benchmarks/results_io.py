"""Result files shared by the benchmarks: one JSON per dataset, read back in a fixed order for the summary."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from interestbert.encoder.files import atomic_write_text


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_results(out: Path, names: Iterable[str]) -> list[dict]:
    """``out/<name>.json`` for each name that has one, in the order given."""
    return [json.loads((out / f"{n}.json").read_text()) for n in names if (out / f"{n}.json").is_file()]


def write_report(out: Path, name: str, data, markdown: str) -> None:
    """``out/<name>.json`` and ``out/<name>.md`` (each complete or absent), and the Markdown on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", data)
    atomic_write_text(out / f"{name}.md", markdown)
    print(markdown)


def run_and_report(
    out: Path,
    report: str,
    names: Iterable[str],
    run: Callable[[str], dict],
    command: str,
    markdown: Callable[[list[dict]], str],
    order: Iterable[str],
    report_only: bool = False,
) -> None:
    """``run(name)`` for each of ``names`` (none with ``report_only``), each result written to ``out/<name>.json``
    with ``command`` as soon as it is done; then the report (`write_report`) of every saved result, in ``order``."""
    if not report_only:
        for name in names:
            write_json(out / f"{name}.json", {**run(name), "command": command})
    results = read_results(out, order)
    write_report(out, report, results, markdown(results))
