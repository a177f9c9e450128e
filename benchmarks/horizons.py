"""Interest horizons ablation: which history texts should the interest vector be made of?

For each dataset, with the untrained base model (frozen): every training prefix (a seeded sample of at most
``--max-train`` of them), every validation and every test history is verbalised three ways (the newest event, the
newest 4, the whole history within 128 tokens) and each distinct text is encoded once. Each variant's interest
vector is ``normalize(sum of weight * embedding)`` over its horizons; a fresh strategy head is fitted on the
training vectors alone (`interestbert.finetune.warmup.fit_head`, the same routine as the fine-tuning's head warm-up:
up to 100 epochs, the best validation epoch kept), then the test split is ranked (full ranking, seen items
excluded). The peer is ``all:1``, plain mean pooling of the whole history, which interestbert used before
horizons existed. No LoRA training here: this isolates what the horizons alone are worth.

    python benchmarks/horizons.py --data-dir ../shared/data --out benchmarks/results/horizons \\
        --datasets amazon-beauty amazon-office
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
from common import data_dir_of
from results_io import read_results, write_json

from interestbert.encoder.cards import load_card_data
from interestbert.encoder.files import atomic_write_text
from interestbert.encoder.head import StrategyHead
from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder
from interestbert.encoder.options import format_horizons, parse_horizons
from interestbert.encoder.scoring import StrategyHeadScorer
from interestbert.encoder.verbalise import Verbaliser
from interestbert.finetune.args import FinetuneArguments
from interestbert.finetune.data import leave_one_out
from interestbert.finetune.evaluate import evaluate
from interestbert.finetune.warmup import fit_head

DATASETS = ("amazon-beauty", "amazon-office", "movielens-100k", "movielens-1m")
PEER = "all:1"
VARIANTS = (PEER, "4:1", "1:1", "1:0.5,all:0.5", FinetuneArguments.interest_horizons)
MAX_SEQ_LENGTH = 128


def encode_horizons(encoder: InterestEncoder, verbaliser: Verbaliser, examples: dict, events: list) -> dict:
    """``{split: {horizon: (n, dim) vectors}}``; each distinct text of any split and horizon encoded once."""
    texts = {
        (name, h): verbaliser.texts_for_indices(ex.users, ex.ends, h) for name, ex in examples.items() for h in events
    }
    unique = list(dict.fromkeys(t for group in texts.values() for t in group))
    position = {t: i for i, t in enumerate(unique)}
    vectors = encoder.encode(unique, batch_size=64, show_progress_bar=True)
    out: dict = {name: {} for name in examples}
    for (name, h), group in texts.items():
        out[name][h] = vectors[[position[t] for t in group]]
    return out


def combine(vectors: dict, horizons) -> np.ndarray:
    mixed = sum(weight * vectors[events] for events, weight in horizons)
    return mixed / np.linalg.norm(mixed, axis=1, keepdims=True)


def run_dataset(name: str, data_dir: Path, max_train: int, seed: int) -> dict:
    data = load_card_data(name, data_dir_of(name, data_dir))
    encoder = InterestEncoder.from_pretrained(DEFAULT_BASE_MODEL, max_seq_length=MAX_SEQ_LENGTH)
    verbaliser = Verbaliser(data, encoder.tokenizer, MAX_SEQ_LENGTH)
    split = leave_one_out(verbaliser)
    train = split.train
    if len(train) > max_train:
        train = train.subset(np.sort(np.random.default_rng([seed, 7]).choice(len(train), max_train, replace=False)))
    examples = {"train": train, "validation": split.validation, "test": split.test}
    parsed = {v: parse_horizons(v) for v in VARIANTS}
    events = sorted({h for p in parsed.values() for h, _ in p}, key=lambda h: (h is None, h or 0))
    whole = verbaliser.texts_for_indices(split.test.users, split.test.ends)
    events_in_whole = float(np.mean([t.count(verbaliser.separator) + 1 for t in whole]))
    started = time.perf_counter()
    vectors = encode_horizons(encoder, verbaliser, examples, events)
    encode_seconds = time.perf_counter() - started
    items = encoder.encode(verbaliser.item_texts, batch_size=64)
    defaults = FinetuneArguments(card=name, output_dir="-")
    rows = {}
    for variant, horizons in parsed.items():
        started = time.perf_counter()
        encoder.head = StrategyHead(
            verbaliser.item_ids, items, popularity=split.popularity["train"], init_scale=defaults.head_init_scale
        )
        valid = combine(vectors["validation"], horizons)
        _, summary = fit_head(
            encoder,
            verbaliser,
            combine(vectors["train"], horizons),
            train.targets,
            defaults.head_warmup_epochs,
            defaults.head_learning_rate,
            seed=seed,
            validation=(split.validation, valid),
            patience=defaults.head_warmup_patience,
        )
        test = evaluate(
            StrategyHeadScorer(encoder.head, verbaliser), split.test, interest=combine(vectors["test"], horizons)
        )
        rows[format_horizons(horizons)] = {**test, "fit": summary, "fit_seconds": round(time.perf_counter() - started)}
        print(f"{name} {variant}: test NDCG@10 {test['ndcg@10']:.4f} ({summary})", flush=True)
    return {
        "dataset": name,
        "users": len(split.test),
        "items": split.n_items,
        "train_examples": len(train),
        "encode_seconds": round(encode_seconds),
        "events_in_whole_history_text": round(events_in_whole, 1),
        "peer": format_horizons(parse_horizons(PEER)),
        "rows": rows,
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| dataset | interest horizons | HR@10 | NDCG@10 | MRR@10 | NDCG@10 vs whole history |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        peer = r["rows"][r["peer"]]["ndcg@10"]
        for variant, m in r["rows"].items():
            lines.append(
                f"| {r['dataset']} ({r['users']:,} users) | `{variant}` | {m['hr@10']:.4f} | "
                f"{m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | {m['ndcg@10'] / peer:.2f}x |"
            )
    notes = [
        f"- {r['dataset']}: head fitted on {r['train_examples']:,} training prefixes; the whole-history text "
        f"({MAX_SEQ_LENGTH} tokens) of a test user holds {r['events_in_whole_history_text']} events on average "
        f"(a horizon longer than that gives the same text); encoding all horizons took {r['encode_seconds']} s"
        for r in results
    ]
    return "\n".join(lines + ["", *notes]) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "horizons"))
    parser.add_argument("--datasets", nargs="+", default=["amazon-beauty", "amazon-office"], choices=list(DATASETS))
    parser.add_argument("--max-train", type=int, default=FinetuneArguments.head_warmup_max_examples)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    out = Path(args.out)
    command = "python benchmarks/horizons.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in args.datasets:
        result = run_dataset(name, Path(args.data_dir), args.max_train, args.seed)
        result.update(command=command, date=dt.date.today().isoformat())
        write_json(out / f"{name}.json", result)
    done = read_results(out, DATASETS)
    write_json(out / "horizons.json", done)
    atomic_write_text(out / "horizons.md", markdown(done))
    print(markdown(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
