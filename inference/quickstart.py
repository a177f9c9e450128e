"""`interestbert quickstart`: the whole path on the embedded synthetic-shop data, in a few minutes on a CPU.

Generate the data, verbalise and encode every user's history with the default model, encode the catalogue, and
show zero-shot recommendations (the items whose text embedding is nearest a user's interest vector) for three
users beside the tail of their history. Everything is written under ``--output-dir``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from interestbert.encoder import synthetic
from interestbert.encoder.cards import load_card, load_card_data
from interestbert.encoder.verbalise import Verbaliser
from interestbert.inference.encode import encode_users, read_embeddings

SHOWN_USERS = 3
TOP_K = 5
TAIL_EVENTS = 5


def run_quickstart(output_dir: str | os.PathLike = "interestbert-quickstart", model: str | None = None,
                   max_seq_length: int = 128, limit_users: int | None = None, seed: int = 0) -> int:
    from interestbert.inference.cli import _limit, load_encoder

    started = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    card = load_card("synthetic-shop")
    options = {k: v for k, v in card.generator.items() if k != "name"}
    options["seed"] = seed
    print(f"[1/4] generating synthetic-shop (seed {seed}) into {out / 'data'}")
    synthetic.generate(out / "data", **options)
    data = load_card_data(card, out / "data")
    s = data.stats
    print(f"      {s['users']:,} users, {s['catalogue']:,} items, {s['events']:,} events, "
          f"{len(data.switches):,} recorded interest switches")

    encoder = load_encoder(model, max_seq_length)
    verbaliser = Verbaliser(data, encoder.tokenizer, encoder.max_seq_length)
    users = _limit(len(verbaliser.users), limit_users)
    print(f"[2/4] encoding {len(users):,} user histories with {encoder.base_model} "
          f"(newest events within {encoder.max_seq_length} tokens)")
    result = encode_users(encoder, verbaliser, out / "embeddings", user_indices=users,
                          extra_info={"card": card.name, "seed": seed})
    print(f"      {result.users_per_second:.1f} users/s -> {result.path}")

    item_ids = verbaliser.item_ids
    item_texts = verbaliser.item_texts
    print(f"[3/4] encoding {len(item_texts):,} item texts")
    item_vectors = encoder.encode(list(item_texts), batch_size=64, show_progress_bar=True)  # (n_items, dim)

    print(f"[4/4] zero-shot recommendations: the {TOP_K} unseen items nearest each interest vector")
    user_ids, user_vectors = read_embeddings(result.path)
    shown = np.linspace(0, len(user_ids) - 1, num=min(SHOWN_USERS, len(user_ids))).round().astype(int)
    sections = []
    for row in shown.tolist():
        user = user_ids[row]
        u = verbaliser.user_index[user]
        lo, hi = int(verbaliser.offsets[u]), int(verbaliser.offsets[u + 1])
        seen = verbaliser.event_items[lo:hi]
        scores = item_vectors @ user_vectors[row]  # (n_items,) cosine: both unit norm
        scores[seen] = -np.inf
        top = np.argsort(-scores, kind="stable")[:TOP_K]
        tail = [verbaliser.event_text(user, p) for p in range(max(0, hi - lo - TAIL_EVENTS), hi - lo)]
        recs = [(item_ids[i], item_texts[i], float(scores[i])) for i in top.tolist()]
        sections.append((user, hi - lo, tail, recs))
        print(f"\n  user {user} ({hi - lo} events), latest {len(tail)}:")
        for line in tail:
            print(f"    {line}")
        print("  recommended:")
        for item, text, score in recs:
            print(f"    {score:.3f}  {item}  {text}")

    report = out / "report.md"
    _write_report(report, data.stats, len(data.switches), encoder, result, sections, time.perf_counter() - started)
    print(f"\ndone in {time.perf_counter() - started:.0f} s. Everything is in {out}/:")
    print(f"  data/             the generated synthetic-shop files (events.csv, items.csv, switches.csv)")
    print(f"  embeddings/       embeddings.parquet (one interest vector per user) and encode_info.json")
    print(f"  report.md         this run's numbers and recommendations (quickstart.json: the same, as JSON)")
    return 0


def _write_report(path: Path, stats: dict, switches: int, encoder, result, sections, seconds: float) -> None:
    lines = [
        "# interestbert quickstart report",
        "",
        f"Data: synthetic-shop, {stats['users']:,} users, {stats['catalogue']:,} items, {stats['events']:,} events, "
        f"{switches:,} recorded interest switches.",
        f"Model: `{encoder.base_model}` (zero-shot, no fine-tuning), max_seq_length {encoder.max_seq_length}.",
        "",
        "| step | figure |",
        "| --- | --- |",
        f"| users encoded | {result.users:,} |",
        f"| encode speed | {result.users_per_second:.1f} users/s on {encoder.device} |",
        f"| histories cut to the token budget | {result.cut_histories:,} |",
        f"| total time | {seconds:.0f} s |",
        "",
    ]
    for user, n, tail, recs in sections:
        lines += [f"## user {user} ({n} events)", "", "Latest events:", ""]
        lines += [f"- {t}" for t in tail]
        lines += ["", "Recommended (cosine of the item text to the interest vector):", ""]
        lines += [f"- {score:.3f} `{item}` {text}" for item, text, score in recs]
        lines.append("")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    summary = path.with_name("quickstart.json")
    tmp = summary.with_name(f".{summary.name}.tmp")
    tmp.write_text(json.dumps({"stats": stats, "users_per_second": round(result.users_per_second, 2),
                               "seconds": round(seconds, 1)}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, summary)
