"""Zero-shot against popularity: the untrained encoder's text cosine, and the strategy head as it starts (``A`` the
item texts' embeddings times a scale, ``b'`` the log popularity), with nothing trained but that one scale.

For each dataset, on the test split (full ranking, seen items excluded) and in the same run:

- ``popularity``: items by their training interactions;
- ``text cosine``: the cosine of the history's embedding to each item text's (what `interestbert evaluate` of a
  base model scores), for the whole-history text and for the default interest horizons;
- ``text + popularity prior``: ``scale * cosine + log(1 + count)`` (centred), the strategy head at its
  initialisation (`StrategyHead(..., popularity=..., init_scale=scale)`), with ``scale`` the best of a grid on the
  validation split, for both histories.

The question (issue 15): can zero-shot reach 2x popularity's NDCG@10 everywhere without training the encoder?

    python benchmarks/zero_shot.py --data-dir ../shared/data --out benchmarks/results/zero_shot

Results: ``<out>/zero_shot.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, MAX_SEQ_LENGTH, data_dir_of, hardware  # noqa: E402
from results_io import write_report  # noqa: E402

from interestbert.encoder.cards import load_card_data  # noqa: E402
from interestbert.encoder.head import StrategyHead  # noqa: E402
from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder  # noqa: E402
from interestbert.encoder.options import parse_horizons  # noqa: E402
from interestbert.encoder.scoring import StrategyHeadScorer, TextCosineScorer  # noqa: E402
from interestbert.encoder.verbalise import Verbaliser  # noqa: E402
from interestbert.finetune.args import FinetuneArguments  # noqa: E402
from interestbert.finetune.data import leave_one_out  # noqa: E402
from interestbert.finetune.evaluate import evaluate, popularity_scorer  # noqa: E402

SCALES = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)  # 500: the prior barely counts
HISTORIES = {"whole history": "all:1", "default horizons": FinetuneArguments.interest_horizons}


def prior_row(verbaliser, split, items, vectors: dict) -> dict:
    """The strategy head as initialised on ``items`` (the item texts' embeddings), its one scale the best of
    `SCALES` on the validation split; test metrics. ``b'`` is each split's own popularity; ``vectors``: the
    ``validation`` and ``test`` histories' interest vectors."""
    valid = {}
    for scale in SCALES:
        head = StrategyHead(verbaliser.item_ids, items, popularity=split.popularity["validation"], init_scale=scale)
        valid[scale] = evaluate(StrategyHeadScorer(head, verbaliser), split.validation, interest=vectors["validation"])[
            "ndcg@10"
        ]
    best = max(valid, key=valid.get)
    head = StrategyHead(verbaliser.item_ids, items, popularity=split.popularity["test"], init_scale=best)
    return {
        **evaluate(StrategyHeadScorer(head, verbaliser), split.test, interest=vectors["test"]),
        "scale": best,
        "validation_ndcg@10_by_scale": {str(k): round(v, 4) for k, v in valid.items()},
    }


def run_dataset(name: str, data_dir: Path, precision: str) -> dict:
    clock = time.perf_counter()
    data = load_card_data(name, data_dir_of(name, data_dir))
    encoder = InterestEncoder.from_pretrained(DEFAULT_BASE_MODEL, max_seq_length=MAX_SEQ_LENGTH).merge_adapter()
    verbaliser = Verbaliser(data, encoder.tokenizer, MAX_SEQ_LENGTH)
    split = leave_one_out(verbaliser)
    items = encoder.encode(verbaliser.item_texts, batch_size=64, precision=precision)
    rows = {"popularity": evaluate(popularity_scorer(verbaliser, split, "test"), split.test)}
    for label, horizons in HISTORIES.items():
        encoder.horizons = parse_horizons(horizons)
        vectors = {
            part: encoder.encode_histories(
                verbaliser, examples.users, examples.ends, batch_size=64, precision=precision
            )
            for part, examples in (("validation", split.validation), ("test", split.test))
        }
        cosine = TextCosineScorer(verbaliser, item_vectors=items)
        rows[f"text cosine ({label})"] = evaluate(cosine, split.test, interest=vectors["test"])
        rows[f"text + popularity prior ({label})"] = prior_row(verbaliser, split, items, vectors)
    pop = rows["popularity"]["ndcg@10"]
    for row in rows.values():
        row["vs_popularity"] = round(row["ndcg@10"] / pop, 2) if pop > 0 else None
    return {
        "dataset": name,
        "users": len(split.test),
        "items": split.n_items,
        "rows": rows,
        "seconds": round(time.perf_counter() - clock, 1),
    }


def markdown(res: dict) -> str:
    lines = [
        f"# Zero-shot against popularity ({res['date'][:10]})",
        "",
        f"{res['hardware']}; `{res['command']}`. "
        "Test split, full ranking, seen items excluded; NDCG@10 (HR@10) and the ratio to popularity's NDCG@10. "
        "`text + popularity prior`: the strategy head as initialised, scale fitted on validation.",
        "",
        "| dataset | row | NDCG@10 (HR@10) | vs popularity | scale |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in res["results"]:
        for name, row in r["rows"].items():
            lines.append(
                f"| {r['dataset']} ({r['users']:,} users) | {name} | {row['ndcg@10']:.4f} "
                f"({row['hr@10']:.4f}) | {row['vs_popularity']:.2f}x | {row.get('scale', '')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "zero_shot")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=sorted(DATASETS))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    args = parser.parse_args(argv)
    res = {
        "command": "python benchmarks/zero_shot.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "hardware": hardware(),
        "threads": torch.get_num_threads(),
        "precision": args.precision,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "results": [],
    }
    for name in args.datasets:
        res["results"].append(run_dataset(name, args.data_dir, args.precision))
        print(name, {k: round(v["ndcg@10"], 4) for k, v in res["results"][-1]["rows"].items()}, flush=True)
    write_report(args.out, "zero_shot", res, markdown(res))


if __name__ == "__main__":
    main()
