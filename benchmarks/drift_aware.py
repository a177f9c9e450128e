"""Drift-aware recommendation: NDCG@10 of long-only, short-only and drift-aware interest, per dataset.

For each dataset, with the fine-tuned model the quality benchmark saved (``--models``, one folder per card; the
untrained base model, zero-shot, where there is none): the drift threshold is calibrated on the card's training
split (2 alarms per 1,000 events), ``alpha_max`` of the blend is picked on the validation split from a small grid,
and the test split is scored for the three strategies, over all users and over the users with a detection among
their last 20 events. Full ranking, seen items excluded (the evaluation protocol).

``--scorer sequence``: the model's sequence head (a model without one gets a head trained here on its frozen item
texts' embeddings, `--sequence-minutes` at most), whose drift-aware blend is of scores: ``(1 - a) * scores(history)
+ a * scores(the newest window events)``, short-only being ``a = 1`` (`interestbert.inference.recommend`).

    python benchmarks/drift_aware.py --data-dir ../shared/data --models benchmarks/results/quality/models \\
        --out benchmarks/results/drift_aware
    python benchmarks/drift_aware.py --data-dir ../shared/data --models "" --scorer sequence \\
        --datasets movielens-100k --out benchmarks/results/drift_aware/sequence
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import data_dir_of, sequence_events
from drift_eval import ndcg_at
from results_io import read_results, write_json

from interestbert.encoder.cards import load_card, load_card_data, synthetic
from interestbert.encoder.drift import DriftConfig, DriftMonitor, ensure_calibrated
from interestbert.encoder.files import atomic_write_text
from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder
from interestbert.encoder.scoring import SequenceHeadScorer, scorer_for
from interestbert.encoder.sequence import SequenceOptions
from interestbert.encoder.verbalise import Verbaliser
from interestbert.finetune.data import leave_one_out
from interestbert.finetune.metrics import RankingMetrics
from interestbert.finetune.sequence import SequenceTraining, train_sequence_head
from interestbert.inference.recommend import drift_scores, short_term_weight, strategies, tail_histories, user_vectors

DATASETS = ("synthetic-shop", "amazon-beauty", "amazon-office", "movielens-100k", "movielens-1m")
ALPHAS = (0.25, 0.5, 0.75, 1.0)
MAX_SEQ_LENGTH = 128


def paired_interval(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> dict:
    """Mean of ``a - b`` relative to ``b``'s mean, with a 95 % bootstrap interval over users (paired)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(a), size=(n, len(a)))
    rel = (a[draws].mean(1) - b[draws].mean(1)) / np.maximum(b[draws].mean(1), 1e-12)
    return {
        "relative": round(float((a.mean() - b.mean()) / max(b.mean(), 1e-12)), 4),
        "interval": [round(float(x), 4) for x in np.quantile(rel, [0.025, 0.975])],
    }


def run_dataset(
    name: str,
    data_dir: Path,
    models: Path | None,
    limit: int | None,
    scorer_kind: str = "strategy",
    sequence_minutes: float = 10.0,
    alphas: tuple[float, ...] = ALPHAS,
    seed: int = 42,
) -> dict:
    if data_dir_of(name, data_dir) is None:
        folder = Path(tempfile.mkdtemp(prefix="drift-aware-shop-"))
        synthetic.generate(folder, seed=0)
        data = load_card_data(load_card("synthetic-shop"), folder)
    else:
        data = load_card_data(name, data_dir_of(name, data_dir))
    model_dir = models / name if models is not None and (models / name).is_dir() else None
    encoder = InterestEncoder.from_pretrained(
        str(model_dir or DEFAULT_BASE_MODEL), max_seq_length=MAX_SEQ_LENGTH
    ).merge_adapter()
    verbaliser = Verbaliser(data, encoder.tokenizer, MAX_SEQ_LENGTH)
    split = leave_one_out(verbaliser)
    monitor = DriftMonitor(encoder.encode, DriftConfig(), separator=verbaliser.separator, batch_size=64)
    calibration = ensure_calibrated(monitor, verbaliser, 2.0, show_progress_bar=False, data=data)
    threshold = monitor.config.threshold
    head_log = None
    if scorer_kind == "sequence":
        head = encoder.sequence_head
        if head is None:
            options = SequenceOptions(max_events=sequence_events(name))
            items = encoder.encode(verbaliser.item_texts, batch_size=64)
            head, head_log = train_sequence_head(
                verbaliser,
                split,
                items,
                options,
                SequenceTraining(seed=seed, max_minutes=sequence_minutes),
                show_progress_bar=False,
            )
            head_log.pop("log", None)
        scorer = SequenceHeadScorer(head, verbaliser, short_window=monitor.config.window)
    else:
        scorer = scorer_for(encoder, verbaliser, "strategy" if encoder.head is not None else "text")

    def inputs_of(examples, alphas):
        """``{strategy: the scorer's inputs}`` (interest vectors, or the sequence head's short-term weights) and
        which users had a detection among their last 20 events."""
        if scorer_kind == "sequence":
            drift, recent = drift_scores(monitor, tail_histories(verbaliser, monitor, examples.users, examples.ends))
            rows = {"long-only": np.zeros(len(drift), np.float32), "short-only": np.ones(len(drift), np.float32)}
            rows.update({f"drift-aware (alpha_max {a})": short_term_weight(drift, threshold, a) for a in alphas})
            return {k: {"alpha": v} for k, v in rows.items()}, recent
        vectors = user_vectors(encoder, verbaliser, monitor, examples.users, examples.ends)
        rows = {}
        for alpha in alphas:
            for strategy, interest in strategies(vectors, threshold, alpha).items():
                key = strategy if strategy != "drift-aware" else f"drift-aware (alpha_max {alpha})"
                rows[key] = {"interest": interest}
        return rows, vectors.recent_detection

    def evaluate(examples, alphas):
        if limit is not None:
            examples = examples.subset(slice(0, limit))
        inputs, recent = inputs_of(examples, alphas)
        out, ranks = {}, {}
        for key, given in inputs.items():
            ranks[key] = scorer.rank_examples(examples, **given)
            out[key] = {
                "all": RankingMetrics.of(ranks[key]),
                "recent_drift": RankingMetrics.of(ranks[key][recent]) if recent.any() else None,
            }
        return out, recent, ranks

    start = time.perf_counter()
    validation, _, _ = evaluate(split.validation, alphas)
    best_alpha = max(alphas, key=lambda a: validation[f"drift-aware (alpha_max {a})"]["all"]["ndcg@10"])
    test, recent, ranks = evaluate(split.test, (best_alpha,))
    rows = {k.replace(f" (alpha_max {best_alpha})", ""): v for k, v in test.items()}
    long_only = ndcg_at(ranks["long-only"])  # each user's NDCG@10, as `RankingMetrics` averages it
    versus = {
        k.replace(f" (alpha_max {best_alpha})", ""): paired_interval(ndcg_at(r), long_only)
        for k, r in ranks.items()
        if k != "long-only"
    }
    winner = max(rows, key=lambda k: rows[k]["all"]["ndcg@10"])
    return {
        "dataset": name,
        "model": str(model_dir) if model_dir else f"{DEFAULT_BASE_MODEL} (untrained)",
        "scorer": scorer.name,
        "sequence_head_training": head_log,
        "users": int(len(recent)),
        "users_with_recent_drift": int(recent.sum()),
        "window": monitor.config.window,
        "stride": monitor.config.stride,
        "threshold": round(threshold, 4),
        "calibration": calibration.record,
        "alpha_max": best_alpha,
        "validation_ndcg@10": {k: v["all"]["ndcg@10"] for k, v in validation.items()},
        "test": rows,
        "test_vs_long_only": versus,
        "winner": winner,
        "seed": seed,
        "seconds": round(time.perf_counter() - start),
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| dataset | model | strategy | NDCG@10 all | vs long-only [95 %] | HR@10 all | NDCG@10 recent drift | "
        "users (recent drift) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        model = "fine-tuned" if "untrained" not in r["model"] else "untrained"
        if r.get("scorer") == "sequence head":
            model += " encoder, sequence head" + (" trained here" if r.get("sequence_head_training") else "")
        for strategy, m in r["test"].items():
            recent = "-" if m["recent_drift"] is None else f"{m['recent_drift']['ndcg@10']:.4f}"
            label = strategy + (f" (alpha_max {r['alpha_max']})" if strategy == "drift-aware" else "")
            versus = r.get("test_vs_long_only", {}).get(strategy)  # absent in results saved before it
            versus = (
                "-" if versus is None else "{:+.1%} [{:+.1%}, {:+.1%}]".format(versus["relative"], *versus["interval"])
            )
            lines.append(
                f"| {r['dataset']} | {model} | {label} | {m['all']['ndcg@10']:.4f} | {versus} | "
                f"{m['all']['hr@10']:.4f} | {recent} | {r['users']:,} ({r['users_with_recent_drift']:,}) |"
            )
    lines.append("")
    lines += [
        f"- {r['dataset']}: best on test: {r['winner']}; window {r['window']}, threshold {r['threshold']}"
        for r in results
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--models", default=str(Path(__file__).parent / "results" / "quality" / "models"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "drift_aware"))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--limit-users", type=int, default=None, help="Score only the first K users (smoke).")
    parser.add_argument("--scorer", choices=("strategy", "sequence"), default="strategy")
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=list(ALPHAS), help="The grid of alpha_max picked from on validation."
    )
    parser.add_argument("--seed", type=int, default=42, help="Seed of a sequence head trained here.")
    parser.add_argument(
        "--sequence-minutes",
        type=float,
        default=10.0,
        help="Time cap of a sequence head trained here (for a model without one).",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    command = "python benchmarks/drift_aware.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in args.datasets:
        result = run_dataset(
            name,
            Path(args.data_dir),
            Path(args.models) if args.models else None,
            args.limit_users,
            args.scorer,
            args.sequence_minutes,
            tuple(args.alphas),
            args.seed,
        )
        result.update(command=command, date=dt.date.today().isoformat())
        write_json(out / f"{name}.json", result)
        print(markdown([result]), flush=True)
    done = read_results(out, DATASETS)
    write_json(out / "drift_aware.json", done)
    atomic_write_text(out / "drift_aware.md", markdown(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
