"""Result files shared by the benchmarks: one JSON per dataset, read back in a fixed order for the summary."""

from __future__ import annotations

import json
from collections.abc import Iterable
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
