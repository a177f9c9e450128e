"""The project's promises: the README's two commands, CI runs the README's test command, the commands, options and
defaults the README and the documentation pages show are real, the public API, the direction of imports (`encoder`
never imports `finetune` or `inference`), and the benchmark index and changelog stay in step with what they index."""

from __future__ import annotations

import ast
import re

from conftest import REPO

INSTALL_AND_RUN = (
    "python -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install . "
    "&& interestbert quickstart"
)
INSTALL_AND_TEST = (
    "python -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
    'pip install ".[test]" && python -m pytest -q'
)


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


DOCS = REPO / "docs"
DOCS_PAGES = DOCS / "pages"


def documented_files() -> list:
    """The README and every page of the documentation site (``docs/pages/*.md``)."""
    pages = sorted(DOCS_PAGES.glob("*.md"))
    assert pages, f"no documentation pages in {DOCS_PAGES}"
    return [REPO / "README.md", *pages]


def cli_uses(text: str) -> list[str]:
    """Every ``interestbert ...`` command ``text`` shows, in code blocks and in inline code. A ``|`` with spaces on
    both sides is a shell pipe and ends the command; ``a|b`` (or ``a\\|b`` in a table) is a choice of values."""
    text = text.replace("\\\n", " ")
    fence = r"```[a-z]*\n(.*?)```"
    spans = re.findall(fence, text, re.S) + re.findall(r"`([^`\n]+)`", re.sub(fence, "", text, flags=re.S))
    uses = []
    for span in spans:
        for line in span.splitlines():
            line = line.lstrip("$ ")
            for part in re.split(r"&&|;|\s\|\s", line):
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


def wrong_cli_uses(uses: list[str], commands: dict[str, set[str]]) -> list[str]:
    """The uses that name a command or an option the CLI does not have, each with the reason."""
    wrong = []
    for use in uses:
        words = use.split()
        name = " ".join(words[1:3]) if " ".join(words[1:3]) in commands else words[1]
        if name not in commands:
            wrong.append(f"`{use}`: there is no command `interestbert {name}`")
            continue
        for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", use):
            if option != "--help" and option not in commands[name]:
                wrong.append(f"`{use}`: `{name}` has no option {option}")
    return wrong


def test_the_readme_and_docs_commands_name_real_cli_commands_and_options():
    commands = cli_options()
    found = {
        path.relative_to(REPO).as_posix(): cli_uses(path.read_text(encoding="utf-8")) for path in documented_files()
    }
    assert len(found["README.md"]) >= 10, found["README.md"]  # one example or more per job
    assert len(found["docs/pages/cli.md"]) >= 12, found["docs/pages/cli.md"]  # one row per command and action
    wrong = [f"{name}: {reason}" for name, uses in found.items() for reason in wrong_cli_uses(uses, commands)]
    assert not wrong, "\n".join(wrong)


def test_the_commands_check_can_fail():
    commands = cli_options()
    assert "--data-dir" in commands["encode"] and "--data_dir" in commands["encode"]
    assert "--no-such-option" not in commands["encode"] and "cards validate" in commands
    uses = cli_uses(
        "run `interestbert encode --card c --no-such-option 1 | head`, then\n```bash\n"
        "interestbert teleport --port 1 && interestbert cards validate c --data-dir d \\\n"
        "    --split test|validation\n```\n"
    )
    assert uses == [
        "interestbert teleport --port 1",
        "interestbert cards validate c --data-dir d      --split test|validation",
        "interestbert encode --card c --no-such-option 1",
    ]
    assert wrong_cli_uses(uses, commands) == [
        "`interestbert teleport --port 1`: there is no command `interestbert teleport`",
        (
            "`interestbert cards validate c --data-dir d      --split test|validation`: `cards validate` has no option "
            "--split"
        ),
        "`interestbert encode --card c --no-such-option 1`: `encode` has no option --no-such-option",
    ]


def test_public_api_of_the_encoder_package():
    import interestbert.encoder as encoder

    assert sorted(encoder.__all__) == sorted(
        [
            "DEFAULT_BASE_MODEL",
            "CardData",
            "DataCard",
            "DataCardError",
            "DriftConfig",
            "DriftEvent",
            "DriftMonitor",
            "Event",
            "History",
            "InterestBertError",
            "InterestEncoder",
            "LoraOptions",
            "ModelCardData",
            "ModelFolder",
            "PopularityScorer",
            "Scorer",
            "SequenceHead",
            "SequenceHeadScorer",
            "SequenceOptions",
            "StrategyHead",
            "StrategyHeadScorer",
            "TextCosineScorer",
            "Verbaliser",
            "available_cards",
            "histories_from_verbaliser",
            "load_card",
            "load_card_data",
            "register_in_hub_cache",
            "scorer_for",
        ]
    )
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


def package_of(path) -> str:
    """The installed package of a source file: ``encoder/drift/monitor.py`` -> ``interestbert.encoder.drift``."""
    return ".".join(["interestbert", *path.parent.relative_to(REPO).parts])


def test_package_of_follows_sub_packages():
    assert package_of(REPO / "encoder" / "model.py") == "interestbert.encoder"
    assert package_of(REPO / "encoder" / "drift" / "monitor.py") == "interestbert.encoder.drift"
    assert package_of(REPO / "encoder" / "drift" / "__init__.py") == "interestbert.encoder.drift"


def forbidden(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_encoder_never_imports_finetune_or_inference():
    banned = ("interestbert.finetune", "interestbert.inference")
    for path in sorted((REPO / "encoder").rglob("*.py")):
        for line, module in imported_modules(path, package_of(path)):
            assert not forbidden(module, banned), f"{path.relative_to(REPO)}:{line} imports {module}"


def test_inference_takes_no_scoring_from_finetune():
    scoring = (
        "interestbert.finetune.evaluate.rank_examples",
        "interestbert.finetune.metrics",
        "interestbert.encoder.scoring",
    )  # the last one is allowed: checked below to be what is used
    for path in sorted((REPO / "inference").rglob("*.py")):
        for line, module in imported_modules(path, package_of(path)):
            assert not forbidden(module, scoring[:2]), f"{path.relative_to(REPO)}:{line} imports {module}"
            assert not module.startswith("interestbert.finetune.sequence"), f"{path.relative_to(REPO)}:{line}"
    recommend = {m for _, m in imported_modules(REPO / "inference" / "recommend.py", "interestbert.inference")}
    assert "interestbert.encoder.scoring" in recommend and not any("finetune" in m for m in recommend)


def test_the_import_check_sees_every_form(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "import interestbert.finetune.train\nfrom interestbert import inference\n"
        "from ..finetune import data\nimport importlib\nimportlib.import_module('interestbert.finetune')\n"
        "from . import scoring\n"
    )
    modules = [m for _, m in imported_modules(source, "interestbert.encoder")]
    banned = ("interestbert.finetune", "interestbert.inference")
    assert [m for m in modules if forbidden(m, banned)] == [
        "interestbert.finetune.train",
        "interestbert.inference",
        "interestbert.finetune",
        "interestbert.finetune.data",
        "interestbert.finetune",
    ]
    assert "interestbert.encoder.scoring" in modules and not forbidden("interestbert.encoder.scoring", banned)
    # in a sub-package, `..` is `interestbert.encoder` and `...finetune` leaves it
    nested = tmp_path / "nested.py"
    nested.write_text("from .. import scoring\nfrom ...finetune import data\n")
    modules = [m for _, m in imported_modules(nested, "interestbert.encoder.drift")]
    assert [m for m in modules if forbidden(m, banned)] == ["interestbert.finetune", "interestbert.finetune.data"]
    assert "interestbert.encoder.scoring" in modules


def test_nothing_unpickles_or_trusts_remote_code():
    for folder in ("encoder", "finetune", "inference"):
        for path in sorted((REPO / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for banned in ("torch.load(", "pickle.load", "trust_remote_code=True"):
                assert banned not in text, f"{path.relative_to(REPO)} uses {banned}"


# `--option value` pairs of finetune options the README or the docs show as a choice, not as the default
NOT_DEFAULTS = {("head_warmup_epochs", "0"), ("resume_from_checkpoint", "latest"), ("joint_head_learning_rate", "0")}


def finetune_values(text: str) -> list[tuple[str, str, object]]:
    """Every backticked `--name value` of a finetune option in ``text``, with the option's default (a value in
    capitals, `--seed N`, is a placeholder, not a value)."""
    import dataclasses

    from interestbert.finetune.args import FinetuneArguments

    defaults = {
        f.name: f.default for f in dataclasses.fields(FinetuneArguments) if f.default is not dataclasses.MISSING
    }
    return [
        (name, value, defaults[name])
        for name, value in re.findall(r"`--([a-z_]+) ([^`\s]+)`", text)
        if name in defaults and (name, value) not in NOT_DEFAULTS and not re.fullmatch(r"[A-Z][A-Z_]*", value)
    ]


def _same(value: str, default) -> bool:
    if isinstance(default, bool) or default is None:
        return False
    if isinstance(default, (int, float)):
        try:
            return float(value) == float(default)
        except ValueError:
            return False
    return value == str(default)


def test_the_finetune_page_gives_the_real_finetune_defaults():
    """The Fine-tuning page states the defaults; the README and the other pages may quote them, never others."""
    page = (DOCS_PAGES / "finetune.md").read_text(encoding="utf-8")
    stated = {name for name, _, _ in finetune_values(page)}
    assert {"learning_rate", "head_learning_rate", "sequence_dim", "interest_horizons", "lora_r"} <= stated, stated
    for path in documented_files():
        found = finetune_values(path.read_text(encoding="utf-8"))
        wrong = [
            f"--{name} {value} (default {default!r})" for name, value, default in found if not _same(value, default)
        ]
        assert not wrong, f"{path.relative_to(REPO)} states other values than the defaults: {wrong}"


def test_the_finetune_defaults_check_can_fail():
    found = finetune_values("the LoRA adapter trains at `--learning_rate 1e-4` and `--lora_r 8` (`--seed N`)")
    assert [(n, v, _same(v, d)) for n, v, d in found] == [("learning_rate", "1e-4", False), ("lora_r", "8", True)]


def test_help_answers_without_loading_torch():
    import subprocess
    import sys

    code = (
        "import sys\nfrom interestbert.inference.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
        "    pass\nheavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: interestbert" in done.stdout


def projection_values(text: str) -> dict[str, int]:
    """The drift projection's settings as the Drift page states them."""
    patterns = {
        "dim": r"learned projection \(384 -> (\d+)\)",
        "lookback": r"the mean of up to (\d+) events before",
        "negatives": r"than to (\d+) other users' windows",
        "steps": r"; ([\d,]+) steps, seconds",
    }
    found = {name: re.search(pattern, text) for name, pattern in patterns.items()}
    return {name: int(m.group(1).replace(",", "")) for name, m in found.items() if m}


def test_the_drift_page_gives_the_real_projection_defaults():
    import inspect

    from interestbert.encoder.drift import PROJECTION_DIM, DriftMonitor

    defaults = inspect.signature(DriftMonitor.fit_projection).parameters
    stated = projection_values((DOCS_PAGES / "drift.md").read_text(encoding="utf-8"))
    assert stated == {
        "dim": PROJECTION_DIM,
        "lookback": defaults["lookback"].default,
        "negatives": defaults["batch_users"].default - 1,
        "steps": defaults["steps"].default,
    }


def test_the_projection_defaults_check_can_fail():
    stated = projection_values("a learned projection (384 -> 64) ... the mean of up to 20 events before a point")
    assert stated == {"dim": 64, "lookback": 20}


def nav_pages(nav) -> list[str]:
    """The page files a MkDocs ``nav`` names, in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for item in nav for page in nav_pages(item)]


def test_the_docs_site_lists_every_page_once():
    import yaml

    config = yaml.safe_load((DOCS / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["docs_dir"] == "pages" and config["theme"]["name"] == "material"
    listed = nav_pages(config["nav"])
    assert sorted(listed) == sorted(p.name for p in DOCS_PAGES.glob("*.md")), listed
    assert len(set(listed)) == len(listed), listed


def markdown_links(text: str) -> list[str]:
    """The targets of ``[text](target)`` links that stay in the repository (no scheme, no bare anchor)."""
    return [
        t.split("#")[0]
        for t in re.findall(r"\]\(([^)\s]+)\)", text)
        if not re.match(r"[a-z]+:", t) and not t.startswith("#")
    ]


def test_links_of_the_readme_benchmarks_and_changelog_point_at_files():
    for name in ("README.md", "CHANGELOG.md", "benchmarks/README.md", "benchmarks/FINDINGS.md"):
        path = REPO / name
        missing = [t for t in markdown_links(path.read_text(encoding="utf-8")) if not (path.parent / t).exists()]
        assert not missing, f"{name} links to what is not there: {missing}"
    assert markdown_links("[a](docs/pages/cli.md#errors) [b](https://x.org) [c](#top)") == ["docs/pages/cli.md"]


def test_every_benchmark_result_is_indexed_with_its_machine_date_and_command():
    results = REPO / "benchmarks" / "results"
    index = (REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")
    linked = {(REPO / "benchmarks" / t).resolve() for t in markdown_links(index)}
    for table in sorted(results.rglob("*.md")):
        assert {table, *table.parents} & linked, f"benchmarks/README.md does not link {table.relative_to(REPO)}"
        top = table.read_text(encoding="utf-8")[:2500]
        assert re.search(r"20\d\d-\d\d-\d\d", top), f"{table.relative_to(REPO)} gives no date near its top"
        assert "python benchmarks/" in top, f"{table.relative_to(REPO)} gives no command near its top"
        assert re.search(r"Machine|CPU|EPYC|Xeon", top), f"{table.relative_to(REPO)} names no machine near its top"


def test_the_changelog_describes_the_version_in_pyproject():
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.MULTILINE)
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    newest = re.search(r"^## \[([^\]]+)\]", changelog, re.MULTILINE)
    assert version and newest and newest.group(1) == version.group(1), (newest, version)


def test_ruff_finds_nothing_to_lint_or_format():
    """The code passes the linter and the formatter configured in pyproject.toml (`ruff check`, `ruff format`)."""
    import subprocess
    import sys

    for command in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        done = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, f"ruff {' '.join(command)}:\n{done.stdout[-3000:]}{done.stderr[-1000:]}"


def test_the_documentation_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a broken link, an anchor that does not exist or a page left out of the nav fails."""
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-q",
            "-f",
            str(DOCS / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "cards" / "index.html").is_file()
