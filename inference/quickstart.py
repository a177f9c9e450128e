"""`interestbert quickstart`: the main job on the embedded synthetic-shop data, in under five minutes on a CPU.

Generate the data; fine-tune the LoRA encoder and the strategy head for a bounded time; evaluate the fine-tuned
model, the untrained base model (zero-shot: item texts nearest the interest vector) and popularity on the test
split (full ranking, seen items excluded); encode every user's interest vector; recommend for three users; write a
Hub-ready model folder and ``report.md``. Everything goes under ``--output-dir``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from interestbert.encoder.cards import load_card, load_card_data, synthetic
from interestbert.encoder.files import atomic_write_text
from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder
from interestbert.encoder.packaged import register_base_model
from interestbert.encoder.scoring import scorer_for
from interestbert.encoder.verbalise import Verbaliser
from interestbert.finetune.args import FinetuneArguments
from interestbert.finetune.evaluate import metrics_table
from interestbert.finetune.train import finetune
from interestbert.inference.encode import encode_users

SHOWN_USERS = 3
TOP_K = 5
TAIL_EVENTS = 5
DRIFT_TARGET = 5.0  # false alarms per 1,000 events (the recorded switches are known here, so not counted)
DRIFT_CALIBRATION_EVENTS = 4000  # training events the quickstart calibrates on (the CLI's default is 10,000)


def run_quickstart(
    output_dir: str | os.PathLike = "interestbert-quickstart",
    model: str | None = None,
    max_seq_length: int = 64,
    max_steps: int = 80,
    train_minutes: float = 2.5,
    limit_users: int | None = None,
    seed: int = 0,
) -> int:
    """The quickstart; see the module docstring. ``limit_users`` shrinks the generated shop (tests)."""
    started = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    card = load_card("synthetic-shop")
    options = card.generator.options()
    options["seed"] = seed
    if limit_users is not None:
        options["n_users"] = limit_users
    print(f"[1/6] generating synthetic-shop (seed {seed}) into {out / 'data'}")
    synthetic.generate(out / "data", **options)
    data = load_card_data(card, out / "data")
    s = data.stats
    print(
        f"      {s['users']:,} users, {s['catalogue']:,} items, {s['events']:,} events, "
        f"{len(data.switches):,} recorded interest switches"
    )

    base_model = model or DEFAULT_BASE_MODEL
    print(
        f"[2/6] fine-tuning {base_model} + LoRA and the strategy head (at most {max_steps} steps or "
        f"{train_minutes:g} min)"
    )
    args = FinetuneArguments(
        card=str(card.path.parent),
        data_dir=str(out / "data"),
        output_dir=str(out / "model"),
        model_name_or_path=base_model,
        overwrite_output_dir=True,
        max_seq_length=max_seq_length,
        per_device_train_batch_size=32,
        max_steps=max_steps,
        max_time_minutes=train_minutes,
        eval_steps=20,
        max_eval_users=300,
        save_steps=10**9,
        seed=seed,
        logging_steps=5,
        head_warmup_epochs=0,
    )  # encoding its prefixes does not fit the time budget
    results = finetune(args)
    register_base_model(out / "model")  # SentenceTransformer(out/model) then resolves the base model offline

    print("[3/6] the untrained base model (zero-shot) and popularity, scored by the fine-tuning on the same test split")
    rows = {
        "interestbert fine-tuned": results["test"],
        "base model, zero-shot": results["zero_shot_test"],
        "popularity": results["popularity_test"],
    }
    print(metrics_table(rows))

    tuned = InterestEncoder.from_pretrained(out / "model", max_seq_length=max_seq_length).merge_adapter()
    verbaliser = Verbaliser(data, tuned.tokenizer, max_seq_length)
    print(f"[4/6] encoding {len(verbaliser.users):,} users' current interests with the fine-tuned model")
    encoded = encode_users(
        tuned, verbaliser, out / "embeddings", num_shards=1, shard_index=0, overwrite=True, model_id=str(out / "model")
    )

    shown = np.linspace(0, len(verbaliser.users) - 1, num=min(SHOWN_USERS, len(verbaliser.users))).round()
    shown = shown.astype(int)
    print("[5/6] drift: calibrating the monitor on the training split, then scanning the three users shown below")
    drift = _scan_drift(tuned, data, verbaliser, shown, out)

    print(f"[6/6] recommendations: the {TOP_K} unseen items the fine-tuned strategy head scores highest")
    sections = []
    top, _ = scorer_for(tuned, verbaliser, "strategy").topk(shown, k=TOP_K)
    for u, picks in zip(shown.tolist(), top):
        user = verbaliser.users[u]
        lo, hi = int(verbaliser.offsets[u]), int(verbaliser.offsets[u + 1])
        recs = [(verbaliser.item_ids[i], verbaliser.item_texts[i]) for i in picks.tolist()]
        tail = [verbaliser.event_text(user, p) for p in range(max(0, hi - lo - TAIL_EVENTS), hi - lo)]
        sections.append((user, hi - lo, tail, recs, drift[user]))
        print(f"\n  user {user} ({hi - lo} events), latest {len(tail)}:")
        for line in tail:
            print(f"    {line}")
        print("  recommended:")
        for item, text in recs:
            print(f"    {item}  {text}")

    seconds = time.perf_counter() - started
    _write_report(
        out, data.stats, len(data.switches), base_model, results, rows, encoded, sections, seconds, drift["_summary"]
    )
    print(f"\ndone in {seconds:.0f} s. Everything is in {out}/:")
    print(
        "  model/            the fine-tuned model, Hub-ready: InterestEncoder.from_pretrained or "
        "SentenceTransformer; all_results.json"
    )
    print("  embeddings/       one interest vector per user (Parquet: part-00000-of-00001.parquet) and _manifest.json")
    print("  drift/            drift timelines (PNG) of the three users; the calibration is in model/interestbert/")
    print("  data/             the generated synthetic-shop files (events.csv, items.csv, switches.csv)")
    print("  report.md         the metrics table and the recommendations (quickstart.json: the figures as JSON)")
    print(
        f"\nServe its recommendations live (one event at a time, over HTTP on this machine):\n"
        f"  interestbert serve --model {out}/model --card synthetic-shop --data-dir {out}/data --seed-from-card"
    )
    return 0


def _scan_drift(encoder, data, verbaliser, users: np.ndarray, out: Path) -> dict:
    """Calibrates a DriftMonitor on the fine-tuned encoder (saved into the model folder), scans ``users`` and
    plots their timelines into ``out/drift``. Returns each user's detections and the calibration."""
    from interestbert.encoder.drift import (
        MIN_ALARMS_TO_CALIBRATE,
        DriftMonitor,
        ensure_calibrated,
        histories_from_verbaliser,
        switch_table,
    )
    from interestbert.inference.drift import plot_timeline

    monitor = DriftMonitor(encoder.encode, separator=verbaliser.separator)
    usable = int(np.clip(verbaliser.n_events - 2, 0, None).sum())  # a small shop (--limit-users): a higher rate
    target = max(DRIFT_TARGET, float(np.ceil(MIN_ALARMS_TO_CALIBRATE * 1000 / max(usable, 1))))
    # no same-user projection here: on synthetic-shop it does not help (benchmarks/FINDINGS.md) and it costs about a
    # minute; real histories are where it pays. Nor
    # the score's tuning: it encodes 300 more streams' events, and the quickstart's minutes go to training
    calibration = ensure_calibrated(
        monitor,
        verbaliser,
        target,
        data=data,
        projection=False,
        tune_score=False,
        min_events=DRIFT_CALIBRATION_EVENTS,
        show_progress_bar=False,
    )
    monitor.save_pretrained(out / "model")
    switches = switch_table(data) or {}
    (out / "drift").mkdir(exist_ok=True)
    found = {"_summary": calibration.record}
    for result in monitor.scan_many(histories_from_verbaliser(verbaliser, users)):
        plot_timeline(
            result, monitor.config.threshold, out / "drift" / f"{result.user_id}.png", switches.get(result.user_id)
        )
        found[result.user_id] = [(e.index, e.explanation) for e in result.events]
        true = ", ".join(str(p) for p, _ in switches.get(result.user_id, [])) or "none"
        print(f"  user {result.user_id}: {len(result.events)} detection(s) (recorded switches at events {true})")
        for index, text in found[result.user_id]:
            print(f"    at event {index}: {text}")
    return found


def _write_report(
    out: Path,
    stats: dict,
    switches: int,
    base_model: str,
    results: dict,
    rows: dict,
    encoded,
    sections: list,
    seconds: float,
    calibration: dict,
) -> None:
    lines = [
        "# interestbert quickstart report",
        "",
        f"Data: synthetic-shop, {stats['users']:,} users, {stats['catalogue']:,} items, {stats['events']:,} events, "
        f"{switches:,} recorded interest switches.",
        f"Model: `{base_model}` + LoRA + strategy head, fine-tuned for {results['global_step']} steps "
        f"({results['train_runtime_s']:.0f} s on {results['hardware']}); best validation step {results['best_step']}.",
        "",
        f"Test split: {rows['popularity']['n']:,} users, each user's last event held out, full ranking over all "
        f"{stats['catalogue']:,} items, items the user has seen excluded.",
        "",
        metrics_table(rows),
        "",
        f"Encoding: {encoded.users:,} users at {encoded.users_per_second:.1f} users/s. Total time {seconds:.0f} s.",
        "",
    ]
    lines += [
        f"Drift: threshold {calibration['threshold']:.4f}, calibrated to "
        f"{calibration['target_false_alarms_per_1000_events']:g} false alarms per 1,000 events on "
        f"{calibration['events']:,} training events ({calibration['achieved_false_alarms_per_1000_events']:.2f} "
        "reached); saved in `model/interestbert/drift/config.json`.",
        "",
    ]
    for user, n, tail, recs, drift in sections:
        lines += [
            f"## user {user} ({n} events)",
            "",
            f"![drift timeline of {user}](drift/{user}.png)",
            "",
            "Interest shifts detected:",
            "",
        ]
        lines += [f"- at event {index}: {text}" for index, text in drift] or ["- none"]
        lines += ["", "Latest events:", ""]
        lines += [f"- {t}" for t in tail]
        lines += ["", "Recommended:", ""]
        lines += [f"- `{item}` {text}" for item, text in recs]
        lines.append("")
    atomic_write_text(out / "report.md", "\n".join(lines))
    atomic_write_text(
        out / "quickstart.json",
        json.dumps(
            {
                "stats": stats,
                "test": rows,
                "seconds": round(seconds, 1),
                "users_per_second": round(encoded.users_per_second, 2),
            },
            indent=2,
        )
        + "\n",
    )
