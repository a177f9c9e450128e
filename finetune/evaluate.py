"""Full-ranking evaluation: every item scored, the user's seen items excluded, one held-out target per user.

Scoring is `interestbert.encoder.scoring`'s: a model's sequence head, its strategy head, or (for the untrained
base) the cosine of the interest vector to the item texts (zero-shot); the popularity baseline scores items by
their interaction count before the target, on the same examples. This module shards the examples across
processes, feeds the ranks to `RankingMetrics`, and formats the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from interestbert.encoder.backends import EncodeOptions
from interestbert.encoder.scoring import PopularityScorer, Scorer, scorer_for

from .data import Examples, Split
from .metrics import RankingMetrics


def rank_examples(
    scorer: Scorer, examples: Examples, *, accelerator=None, show_progress_bar: bool = False, **inputs
) -> np.ndarray:
    """0-based rank of each example's target under ``scorer`` (seen items excluded), in example order.

    With an ``accelerator`` of several processes, each scores a contiguous shard and the ranks are gathered.
    ``inputs`` (``interest=`` vectors computed ahead) have one row per example.
    """
    index = np.arange(len(examples))
    sharded = accelerator is not None and accelerator.num_processes > 1
    if sharded:
        index = np.array_split(index, accelerator.num_processes)[accelerator.process_index]
    part = examples.subset(index)
    ranks = scorer.rank_examples(part, show_progress_bar=show_progress_bar, **{k: v[index] for k, v in inputs.items()})
    if sharded:
        from accelerate.utils import gather_object

        ranks = np.concatenate(gather_object([ranks]))
    return ranks


def evaluate(scorer: Scorer, examples: Examples, ks: Sequence[int] = (10,), **kwargs) -> dict[str, float]:
    """HR@k, NDCG@k and MRR@k (and ``n``) of ``scorer`` on ``examples``; ``kwargs`` as in `rank_examples`."""
    metrics = RankingMetrics(ks)
    metrics.update_ranks(rank_examples(scorer, examples, **kwargs))
    return metrics.compute()


def popularity_scorer(verbaliser, split: Split, name: str) -> PopularityScorer:
    """The popularity baseline for one split: items by their interactions before that split's targets."""
    return PopularityScorer(split.popularity[name], verbaliser)


def evaluate_model(
    encoder,
    verbaliser,
    split: Split,
    name: str = "test",
    ks: Sequence[int] = (10,),
    batch_size: int = 64,
    show_progress_bar: bool = False,
    baselines: bool = True,
    accelerator=None,
    precision: str = "fp32",
    backend: str = "torch",
    options: EncodeOptions | None = None,
) -> dict[str, dict]:
    """The evaluation table of a model on one split: each of its heads (sequence, strategy) or, for a model
    without one, the zero-shot text cosine; then popularity. Returns ``{row name: metrics}``. ``options`` (or
    ``batch_size``, ``precision`` and ``backend``): how histories are encoded (`EncodeOptions`)."""
    options = options or EncodeOptions(precision, backend, batch_size)
    examples = split[name]
    kinds = [k for k, head in (("sequence", encoder.sequence_head), ("strategy", encoder.head)) if head is not None]
    labels = {
        "sequence": "interestbert (sequence head)",
        "strategy": "interestbert (strategy head)" if "sequence" in kinds else "interestbert (fine-tuned)",
        "text": "interestbert (untrained, zero-shot)",
    }
    rows = {}
    for kind in kinds or ["text"]:
        scorer = scorer_for(encoder, verbaliser, kind, options=options)
        rows[labels[kind]] = evaluate(
            scorer, examples, ks, accelerator=accelerator, show_progress_bar=show_progress_bar
        )
    if baselines:
        rows["popularity"] = evaluate(popularity_scorer(verbaliser, split, name), examples, ks)
    return rows


def format_metrics(name: str, metrics: dict, ks: Sequence[int] = (10,)) -> str:
    """One table row: ``name | HR@10 | NDCG@10 | MRR@10``."""
    cells = [f"{metrics[f'{m}@{k}']:.4f}" for k in ks for m in ("hr", "ndcg", "mrr")]
    return f"| {name} | " + " | ".join(cells) + " |"


def metrics_table(rows: dict[str, dict], ks: Sequence[int] = (10,)) -> str:
    header = "| model | " + " | ".join(f"{m.upper()}@{k}" for k in ks for m in ("hr", "ndcg", "mrr")) + " |"
    rule = "| --- |" + " ---: |" * (3 * len(ks))
    return "\n".join([header, rule, *(format_metrics(name, m, ks) for name, m in rows.items())])
