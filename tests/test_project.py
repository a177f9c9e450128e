"""The project's promises: the README's two commands, CI runs the README's test command, the public API, and
the direction of imports (`encoder` never imports `finetune` or `inference`)."""

from __future__ import annotations

import ast
import re

from conftest import REPO

INSTALL_AND_RUN = ('python -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install . '
                   '&& interestbert quickstart')
INSTALL_AND_TEST = ('python -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && '
                    'pip install ".[test]" && python -m pytest -q')


def readme_first_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "the README opens with a code block of commands"
    assert text.index("```") < 600, "the commands come in the README's first lines"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_the_two_commands():
    assert readme_first_commands() == [INSTALL_AND_RUN, INSTALL_AND_TEST]


def test_ci_runs_exactly_the_readme_test_command():
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert lines[-1] == INSTALL_AND_TEST


def test_readme_commands_name_real_cli_commands():
    from interestbert.inference.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["quickstart"]).func.__name__ == "_cmd_quickstart"


def test_public_api_of_the_encoder_package():
    import interestbert.encoder as encoder

    assert sorted(encoder.__all__) == sorted([
        "DEFAULT_BASE_MODEL", "CardData", "DataCard", "DataCardError", "DriftConfig", "DriftEvent", "DriftMonitor",
        "Event", "History", "InterestBertError", "InterestEncoder", "LoraOptions", "SequenceHead", "SequenceOptions",
        "StrategyHead", "Verbaliser",
        "available_cards", "histories_from_verbaliser", "load_card", "load_card_data"])
    for name in encoder.__all__:
        assert getattr(encoder, name) is not None


def test_encoder_never_imports_finetune_or_inference():
    for path in (REPO / "encoder").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert "finetune" not in name and "inference" not in name, f"{path.name} imports {name}"


def test_nothing_unpickles_or_trusts_remote_code():
    for folder in ("encoder", "finetune", "inference"):
        for path in (REPO / folder).glob("*.py"):
            text = path.read_text(encoding="utf-8")
            for banned in ("torch.load(", "pickle.load", "trust_remote_code=True"):
                assert banned not in text, f"{path.name} uses {banned}"
