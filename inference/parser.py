"""The options of every `interestbert` command (`build_parser`): one place for their names, defaults, choices and
help. Options are spelled with dashes and also accepted with underscores."""

from __future__ import annotations

import argparse

from . import commands

LOG_LEVELS = ("debug", "info", "warning", "error")


class _HelpFormatter(argparse.HelpFormatter):
    """Shows an option by its first spelling only (the underscore aliases stay out of ``--help``)."""

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return (
                ", ".join(self._primary(action.option_strings))
                if action.option_strings
                else super()._format_action_invocation(action)
            )
        metavar = self._format_args(action, self._get_default_metavar_for_optional(action))
        return ", ".join(f"{o} {metavar}" for o in self._primary(action.option_strings))

    @staticmethod
    def _primary(options):
        return [o for o in options if "_" not in o.lstrip("-") or o.startswith("-") and not o.startswith("--")]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose ``--long-option`` is also accepted as ``--long_option``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *names, **kwargs):
        aliases = [n.replace("-", "_").replace("__", "--", 1) for n in names if n.startswith("--") and "-" in n[2:]]
        return super().add_argument(*names, *aliases, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="interestbert", description="Current-interest embeddings, drift and recommendations from behaviour logs."
    )
    parser.add_argument("--version", action="version", version=f"interestbert {commands.version()}")
    _add_logging_args(parser, None)
    sub = parser.add_subparsers(metavar="COMMAND", parser_class=_Parser)

    def command(name: str, func, help: str):
        p = sub.add_parser(name, help=help, description=help)
        _add_logging_args(p, argparse.SUPPRESS)
        p.set_defaults(func=func)
        return p

    p = command(
        "quickstart", commands.cmd_quickstart, "The main job on the embedded synthetic-shop data and the default model."
    )
    p.add_argument("--output-dir", default="interestbert-quickstart", help="Where data, model and report go.")
    p.add_argument("--model", default=None, help="Base model id or folder (default: packaged all-MiniLM-L6-v2).")
    p.add_argument("--max-seq-length", type=int, default=64, help="Token budget of a history text.")
    p.add_argument("--max-steps", type=int, default=80, help="Fine-tuning steps (batch 32).")
    p.add_argument("--train-minutes", type=float, default=2.5, help="Stop fine-tuning after this long.")
    p.add_argument("--limit-users", type=int, default=None, help="Generate a shop with only K users.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the generated data and the training.")

    sub.add_parser(
        "finetune",
        add_help=False,
        help="Fine-tune the LoRA encoder and strategy head on a card (`interestbert finetune --help`).",
    )

    p = command(
        "evaluate", commands.cmd_evaluate, "Full-ranking HR/NDCG/MRR of a model on a card's test or validation split."
    )
    _add_data_args(p, model_help="Model folder or id (default: the untrained base, zero-shot).")
    p.add_argument("--split", choices=["test", "validation"], default="test", help="Which held-out target.")
    p.add_argument("--k", type=int, nargs="+", default=[10], help="Cut-offs (default 10).")
    p.add_argument("--limit-users", type=int, default=None, help="Score only the first K users' targets.")
    p.add_argument("--output", default=None, help="Also write the metrics to this JSON file.")
    _add_fast_path_args(p, "fp32")

    p = command("encode", commands.cmd_encode, "Encode every user's history to Parquet.")
    _add_data_args(p, model_help="Model id or folder (default: the base model).", batch_size=32)
    p.add_argument(
        "--output",
        required=True,
        help="Output folder: part-0000I-of-0000N.parquet shards and _manifest.json (written last).",
    )
    p.add_argument("--users", nargs="+", default=None, help="Only these user ids (default: every user).")
    p.add_argument("--limit-users", type=int, default=None, help="Encode only the first K users.")
    p.add_argument(
        "--num-shards",
        type=int,
        default=None,
        metavar="N",
        help="Split the users into N shards (default: one per process under accelerate launch / torchrun, else 1).",
    )
    p.add_argument(
        "--shard-index",
        type=int,
        default=None,
        metavar="I",
        help="Encode only shard I of N (default: this process's by rank; every shard when not launched).",
    )
    p.add_argument(
        "--chunk-users",
        type=int,
        default=1024,
        metavar="K",
        help="Users per chunk: the unit of memory, "
        "of resumption after a crash and of the shards' row groups (default 1024).",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace what --output holds instead of continuing an "
        "unfinished run of the same options (or refusing one of others).",
    )
    p.add_argument(
        "--out-of-core",
        action="store_true",
        help="Read the events with DuckDB and group them by user "
        "on disk, so that memory is bounded by --chunk-users, not by the data (for data larger than "
        "memory).",
    )
    p.add_argument(
        "--work-dir",
        default=None,
        help="With --out-of-core: where the grouped events and DuckDB's "
        "spill files go (default: a temporary folder; it needs about the events file's size).",
    )
    p.add_argument(
        "--memory-limit",
        default="512MB",
        help="With --out-of-core: DuckDB's memory limit; it sorts and spills to --work-dir within it (default 512MB).",
    )
    _add_fast_path_args(p, "auto")

    p = command(
        "drift", commands.cmd_drift, "Scan users for interest shifts: scores, explained events, summary, plots."
    )
    _add_data_args(p, model_help="Model folder or id (default: the base model).")
    p.add_argument("--output", required=True, help="Output folder (scores.parquet, events.parquet, summary, plots/).")
    p.add_argument("--users", nargs="+", default=None, help="Only these user ids (default: every user).")
    p.add_argument("--limit-users", type=int, default=None, help="Only the first K users.")
    p.add_argument("--plot", type=int, default=3, metavar="K", help="PNG timelines for K users (default 3).")
    _add_drift_args(p)

    p = command("recommend", commands.cmd_recommend, "Top-k items per user, from drift-aware or long-term interest.")
    _add_data_args(p, model_help="A model folder saved by `interestbert finetune` (or an id).", model_required=True)
    p.add_argument("--output", required=True, help="The Parquet file to write (user_id, rank, item_id, score, ...).")
    p.add_argument("--k", type=int, default=10, help="Items per user (default 10).")
    p.add_argument(
        "--drift-aware",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Blend in the recent window as the drift score rises (the strategy head: interest vectors; "
        "the sequence head: its scores of the newest window events), or use long-term interest "
        "only (the default; docs/pages/drift.md says when the blend pays).",
    )
    p.add_argument(
        "--scorer",
        choices=("auto", "sequence", "strategy"),
        default="auto",
        help="Score items with the model's sequence head (reads the order of the newest events) or its "
        "strategy head (the pooled interest vector). auto: the sequence head when the model has one.",
    )
    p.add_argument(
        "--alpha-max",
        type=float,
        default=None,
        metavar="A",
        help="With --drift-aware: the short-term weight at and above the drift threshold, in [0, 1] "
        "(default: the model's drift config, else 0.25; pick it on validation).",
    )
    p.add_argument("--users", nargs="+", default=None, help="Only these user ids (default: every user).")
    p.add_argument("--limit-users", type=int, default=None, help="Only the first K users.")
    _add_drift_args(p)

    p = command("serve", commands.cmd_serve, "Serve recommendations that change with every event, over HTTP.")
    _add_data_args(p, model_help="A model folder saved by `interestbert finetune` (or an id).", model_required=True)
    p.add_argument(
        "--store",
        default="memory",
        metavar="URL",
        help="Where people's states live: memory (the default, in the process), file:PATH (in the process, "
        "written to PATH), or redis://HOST:PORT/DB (shared by replicas, kept across restarts).",
    )
    p.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1: this machine only).")
    p.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="Name of the environment variable holding the API key every request must send (as 'Authorization: "
        "Bearer KEY' or 'X-API-Key: KEY'); without it the service asks for none.",
    )
    p.add_argument("--ttl", type=float, default=None, metavar="SECONDS", help="Forget people idle this long.")
    p.add_argument(
        "--scorer",
        choices=("auto", "sequence", "strategy", "text"),
        default="auto",
        help="The model's sequence head, its strategy head, or the text cosine (auto: the sequence head when the "
        "model has one, else the strategy head, else the text cosine).",
    )
    p.add_argument(
        "--drift",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Scan events for drift and allow drift_aware answers (default: when the model holds a drift "
        "calibration, or with --calibrate).",
    )
    p.add_argument(
        "--max-events",
        type=int,
        default=None,
        help="Events kept per person (default: the longest stretch any answer reads, so answers equal "
        "`interestbert recommend`'s).",
    )
    p.add_argument("--max-seen", type=int, default=1000, help="Distinct items per person never recommended again.")
    p.add_argument("--cache-texts", type=int, default=50_000, help="Text vectors kept in memory (default 50,000).")
    p.add_argument("--max-body", type=int, default=1 << 20, help="Largest request body in bytes (default 1 MiB).")
    p.add_argument(
        "--max-pending", type=int, default=64, help="Requests in flight before the service answers 503 (default 64)."
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="Threads torch uses for one answer (default: torch's own; 1 is often fastest under load on few cores, "
        "where answers run one at a time anyway).",
    )
    p.add_argument(
        "--warm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="At start, encode the card's event texts (item x action) into the text cache, so a known item's first "
        "event costs no encoder pass (default: on).",
    )
    p.add_argument(
        "--seed-from-card",
        action="store_true",
        help="At start, store the card's histories for the people the store does not hold yet.",
    )
    _add_drift_args(p)

    p = command(
        "publish", commands.cmd_publish, "Publish a model folder to the Hugging Face Hub, after the privacy gate."
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="A folder saved by `interestbert finetune`.")
    p.add_argument("--repo-id", required=True, help="ORG/NAME of the model repo (created when missing).")
    p.add_argument("--private", action="store_true", help="Create the repo private.")
    p.add_argument("--revision", default=None, help="The branch to commit to (created when missing).")
    p.add_argument("--commit-message", default=None, help="The commit's message.")
    p.add_argument("--create-pr", action="store_true", help="Open a pull request instead of committing.")
    p.add_argument(
        "--dry-run",
        default=None,
        metavar="OUT_DIR",
        help="Write the files that would be uploaded into OUT_DIR and upload nothing.",
    )
    p.add_argument(
        "--token-env",
        default=None,
        metavar="VAR",
        help="Read the token from this environment variable (default: HF_TOKEN, or `hf auth login`).",
    )
    p.add_argument("--card", default=None, help="The training data's card (default: the one the model records).")
    p.add_argument(
        "--data-dir",
        default=None,
        help="The training data's folder (default: the one the model records, when it sits beside the model).",
    )

    cards = command("cards", None, "Data cards: list, validate, publish.")
    csub = cards.add_subparsers(metavar="ACTION", parser_class=_Parser)
    p = csub.add_parser("validate", help="Check a card and its files; print users, items, events, time span.")
    p.add_argument("card", metavar="NAME_OR_PATH", help="A shipped card name or a path to a card.")
    p.add_argument("--data-dir", default=None, help="Folder with the card's files (optional for generated cards).")
    p.set_defaults(func=commands.cmd_cards_validate)
    _add_logging_args(p, argparse.SUPPRESS)
    p = csub.add_parser(
        "init",
        help="Draft a card from an events file and an items file: prints its guesses (format, "
        "separator, header, which column is the user, item, time, rating) and writes the card to edit.",
    )
    p.add_argument("--events", required=True, help="The events file (delimited text, Parquet or JSON Lines; .gz too).")
    p.add_argument("--items", required=True, help="The items file (the catalogue).")
    p.add_argument(
        "--id-map",
        default=None,
        help="A file of two columns mapping the events' item ids to the items file's ids, when they differ.",
    )
    p.add_argument("--name", default=None, help="The card's name (default: the events file's folder name).")
    p.add_argument("--output", default=None, help="The card's folder (default: ./NAME); README.md is written there.")
    p.add_argument("--force", action="store_true", help="Replace a README.md that is already there.")
    p.set_defaults(func=commands.cmd_cards_init)
    _add_logging_args(p, argparse.SUPPRESS)
    p = csub.add_parser("publish", help="Publish a card as a Hub dataset repo's README.md (no data files).")
    p.add_argument("card", metavar="NAME_OR_PATH", help="A shipped card name or a path to a card.")
    p.add_argument("--repo-id", required=True, help="ORG/NAME of the dataset repo (created when missing).")
    p.add_argument("--private", action="store_true", help="Create the repo private.")
    p.add_argument("--commit-message", default=None, help="The commit's message.")
    p.add_argument("--dry-run", default=None, metavar="OUT_DIR", help="Write the README.md there; upload nothing.")
    p.add_argument("--token-env", default=None, metavar="VAR", help="Read the token from this environment variable.")
    p.set_defaults(func=commands.cmd_cards_publish)
    _add_logging_args(p, argparse.SUPPRESS)
    p = csub.add_parser("list", help="The shipped cards.")
    p.set_defaults(func=commands.cmd_cards_list)
    _add_logging_args(p, argparse.SUPPRESS)
    cards.set_defaults(func=lambda a: cards.print_help() or 2)

    command("env", commands.cmd_env, "Versions, devices and the default model, for bug reports.")
    return parser


def _add_logging_args(p: argparse.ArgumentParser, default) -> None:
    """``--log-level`` and ``-q`` on the top level (with defaults) and on every command (given only when used)."""
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info" if default is None else default,
        help="Messages shown on stderr (default info).",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if default is None else default,
        help="Only warnings and errors, no progress bars.",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=False if default is None else default,
        help="Show the traceback of an error instead of its one-sentence summary.",
    )


def _add_data_args(
    p: argparse.ArgumentParser, model_help: str, model_required: bool = False, batch_size: int = 64
) -> None:
    p.add_argument("--card", required=True, help="A shipped card name or a path to a card.")
    p.add_argument("--data-dir", default=None, help="Folder with the card's files (optional for generated cards).")
    p.add_argument("--model", required=model_required, default=None, help=model_help)
    p.add_argument(
        "--max-seq-length",
        type=int,
        default=None,
        help="Token budget of a history text (default: the model's, 256 for all-MiniLM-L6-v2).",
    )
    p.add_argument("--batch-size", type=int, default=batch_size, help="Texts per forward pass.")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when available).")


def _add_fast_path_args(p, precision: str) -> None:
    """``--precision`` and ``--backend``: how histories are encoded (`EncodeOptions`, whose constants they offer)."""
    from interestbert.encoder.backends import BACKENDS, PRECISIONS

    default = {"auto": "auto (the default)", "fp32": "fp32 (the default: the model's own numbers)"}[precision]
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=precision,
        help=f"{default}; "
        "auto: bf16 where the hardware computes it (CUDA; a CPU with AMX or avx512_bf16), else fp32; it "
        "says which. int8 (torch or onnx, CPU): dynamic quantisation, faster and less exact; its cosine to "
        "fp32 on a sample is printed first.",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="torch, or the merged "
        "model exported once (cached by its hash) to OpenVINO or ONNX Runtime, CPU only; extras "
        "interestbert[openvino] / interestbert[onnx].",
    )


def _add_drift_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="Events in the short-term window (default: the model's calibration, else 4).",
    )
    p.add_argument("--stride", type=int, default=None, help="Evaluate every N events (default: 2).")
    p.add_argument(
        "--target-false-alarms",
        type=float,
        default=None,
        metavar="PER_1000",
        help="Alarms per 1,000 events when calibrating (default 2).",
    )
    p.add_argument("--calibrate", action="store_true", help="Calibrate again even if the model holds a calibration.")
    p.add_argument("--save-calibration", action="store_true", help="Write the calibration into the --model folder.")
    p.add_argument(
        "--projection",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="When calibrating now, first fit the same-user projection of event vectors on other users' "
        "training histories (default: on).",
    )
    p.add_argument(
        "--tune-score",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="When calibrating now, pick the drift score's form (centred or not, the reference's span) on "
        "streams spliced from other users' training histories (default: on).",
    )
