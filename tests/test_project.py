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


def readme_cli_uses() -> list[str]:
    """Every ``interestbert ...`` command the README shows, in code blocks and in inline code."""
    text = (REPO / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    fence = r"```[a-z]*\n(.*?)```"
    spans = re.findall(fence, text, re.S) + re.findall(r"`([^`\n]+)`", re.sub(fence, "", text, flags=re.S))
    uses = []
    for span in spans:
        for line in span.splitlines():
            line = line.lstrip("$ ")
            for part in re.split(r"&&|;|(?<!\\)\|", line):
                part = part.strip()
                if re.match(r"interestbert [a-z]", part):
                    uses.append(part.replace("\\|", "|"))
    return uses


def cli_options() -> dict[str, set[str]]:
    """Each command (``cards validate`` for a nested one) -> the option strings it accepts, aliases included."""
    import argparse

    from transformers import HfArgumentParser

    from interestbert.finetune.args import FinetuneArguments
    from interestbert.inference.cli import build_parser

    def subparsers(parser):
        return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})

    def options(parser):
        return {o for a in parser._actions for o in a.option_strings}

    found = {}
    for name, parser in subparsers(build_parser()).items():
        found[name] = options(parser)
        for inner, nested in subparsers(parser).items():
            found[f"{name} {inner}"] = options(nested)
    found["finetune"] = options(HfArgumentParser(FinetuneArguments))
    return found


def test_readme_commands_name_real_cli_commands_and_options():
    uses = readme_cli_uses()
    commands = cli_options()
    assert len(uses) >= 10, uses  # the commands table alone has ten
    for use in uses:
        words = use.split()
        name = " ".join(words[1:3]) if " ".join(words[1:3]) in commands else words[1]
        assert name in commands, f"the README shows `{use}`, but there is no command `interestbert {name}`"
        for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", use):
            if option == "--help":
                continue
            assert option in commands[name], f"the README shows `{use}`, but `{name}` has no option {option}"


def test_the_readme_check_can_fail():
    commands = cli_options()
    assert "--data-dir" in commands["encode"] and "--data_dir" in commands["encode"]
    assert "--no-such-option" not in commands["encode"] and "cards validate" in commands


def test_public_api_of_the_encoder_package():
    import interestbert.encoder as encoder

    assert sorted(encoder.__all__) == sorted([
        "DEFAULT_BASE_MODEL", "CardData", "DataCard", "DataCardError", "DriftConfig", "DriftEvent", "DriftMonitor",
        "Event", "History", "InterestBertError", "InterestEncoder", "LoraOptions", "ModelCardData", "ModelFolder",
        "PopularityScorer", "Scorer", "SequenceHead", "SequenceHeadScorer", "SequenceOptions", "StrategyHead",
        "StrategyHeadScorer", "TextCosineScorer", "Verbaliser",
        "available_cards", "histories_from_verbaliser", "load_card", "load_card_data", "register_in_hub_cache",
        "scorer_for"])
    assert encoder.DEFAULT_BASE_MODEL == "sentence-transformers/all-MiniLM-L6-v2"
    for name in encoder.__all__:
        if name == "DEFAULT_BASE_MODEL":
            continue
        obj = getattr(encoder, name)  # one of the package's own names (imported on first use)
        assert obj.__name__ == name and obj.__module__.startswith("interestbert.encoder."), (name, obj)
        assert obj.__doc__, f"interestbert.encoder.{name} has no docstring"


def imported_modules(path, package: str) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in a file of ``package`` (``interestbert.encoder``):
    ``import a.b``, ``from a import b`` (as ``a.b`` too, since ``b`` may be a module), relative imports, and
    ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def forbidden(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_encoder_never_imports_finetune_or_inference():
    banned = ("interestbert.finetune", "interestbert.inference")
    for path in (REPO / "encoder").glob("*.py"):
        for line, module in imported_modules(path, "interestbert.encoder"):
            assert not forbidden(module, banned), f"encoder/{path.name}:{line} imports {module}"


def test_inference_takes_no_scoring_from_finetune():
    scoring = ("interestbert.finetune.evaluate.rank_examples", "interestbert.finetune.metrics",
               "interestbert.encoder.scoring")  # the last one is allowed: checked below to be what is used
    for path in (REPO / "inference").glob("*.py"):
        for line, module in imported_modules(path, "interestbert.inference"):
            assert not forbidden(module, scoring[:2]), f"inference/{path.name}:{line} imports {module}"
            assert not module.startswith("interestbert.finetune.sequence"), f"inference/{path.name}:{line}"
    recommend = {m for _, m in imported_modules(REPO / "inference" / "recommend.py", "interestbert.inference")}
    assert "interestbert.encoder.scoring" in recommend and not any("finetune" in m for m in recommend)


def test_the_import_check_sees_every_form(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import interestbert.finetune.train\nfrom interestbert import inference\n"
                      "from ..finetune import data\nimport importlib\nimportlib.import_module('interestbert.finetune')\n"
                      "from . import scoring\n")
    modules = [m for _, m in imported_modules(source, "interestbert.encoder")]
    banned = ("interestbert.finetune", "interestbert.inference")
    assert [m for m in modules if forbidden(m, banned)] == [
        "interestbert.finetune.train", "interestbert.inference", "interestbert.finetune",
        "interestbert.finetune.data", "interestbert.finetune"]
    assert "interestbert.encoder.scoring" in modules and not forbidden("interestbert.encoder.scoring", banned)


def test_nothing_unpickles_or_trusts_remote_code():
    for folder in ("encoder", "finetune", "inference"):
        for path in (REPO / folder).glob("*.py"):
            text = path.read_text(encoding="utf-8")
            for banned in ("torch.load(", "pickle.load", "trust_remote_code=True"):
                assert banned not in text, f"{path.name} uses {banned}"


# `--option value` pairs of finetune options the README shows as a choice, not as the default
NOT_DEFAULTS = {("head_warmup_epochs", "0"), ("resume_from_checkpoint", "latest"),
                ("joint_head_learning_rate", "0")}


def readme_finetune_values(text: str) -> list[tuple[str, str, object]]:
    """Every backticked `--name value` of a finetune option in ``text``, with the option's default."""
    import dataclasses

    from interestbert.finetune.args import FinetuneArguments

    defaults = {f.name: f.default for f in dataclasses.fields(FinetuneArguments)
                if f.default is not dataclasses.MISSING}
    return [(name, value, defaults[name]) for name, value in re.findall(r"`--([a-z_]+) ([^`\s]+)`", text)
            if name in defaults and (name, value) not in NOT_DEFAULTS]


def _same(value: str, default) -> bool:
    if isinstance(default, bool) or default is None:
        return False
    if isinstance(default, (int, float)):
        try:
            return float(value) == float(default)
        except ValueError:
            return False
    return value == str(default)


def test_the_readme_gives_the_real_finetune_defaults():
    found = readme_finetune_values((REPO / "README.md").read_text(encoding="utf-8"))
    assert {"learning_rate", "head_learning_rate", "sequence_dim"} <= {name for name, _, _ in found}
    wrong = [f"--{name} {value} (default {default!r})" for name, value, default in found if not _same(value, default)]
    assert not wrong, f"the README states other values than the defaults: {wrong}"


def test_the_defaults_check_can_fail():
    found = readme_finetune_values("the LoRA adapter trains at `--learning_rate 1e-4` and `--lora_r 8`")
    assert [(n, v, _same(v, d)) for n, v, d in found] == [("learning_rate", "1e-4", False), ("lora_r", "8", True)]


def test_help_answers_without_loading_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom interestbert.inference.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
            "    pass\nheavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: interestbert" in done.stdout


def readme_projection_values(text: str) -> dict[str, int]:
    """The drift projection's settings as the README's Drift section states them."""
    patterns = {"dim": r"learned projection \(384 -> (\d+)\)", "lookback": r"the mean of up to (\d+) events before",
                "negatives": r"than to (\d+) other users' windows", "steps": r"; ([\d,]+) steps, seconds"}
    found = {name: re.search(pattern, text) for name, pattern in patterns.items()}
    return {name: int(m.group(1).replace(",", "")) for name, m in found.items() if m}


def test_the_readme_gives_the_real_drift_projection_defaults():
    import inspect

    from interestbert.encoder.drift import PROJECTION_DIM, DriftMonitor

    defaults = inspect.signature(DriftMonitor.fit_projection).parameters
    stated = readme_projection_values((REPO / "README.md").read_text(encoding="utf-8"))
    assert stated == {"dim": PROJECTION_DIM, "lookback": defaults["lookback"].default,
                      "negatives": defaults["batch_users"].default - 1, "steps": defaults["steps"].default}


def test_the_projection_defaults_check_can_fail():
    stated = readme_projection_values("a learned projection (384 -> 64) ... the mean of up to 20 events before a point")
    assert stated == {"dim": 64, "lookback": 20}
