"""The peers, our own and run beside interestbert: a compact SASRec and a recency-weighted item-kNN, with the
popularity baseline and our heads on the frozen (untrained) encoder, on the quality benchmark's split.

Protocol (DESIGN.md, as `quality.py`): leave-one-out in time, full ranking over every catalogue item, the user's
seen items excluded, NDCG@10 / HR@10 / MRR@10 of the test item. Every model learns from each user's events before
their validation target only; its settings (a grid for the kNN, the epoch for the networks) are picked on the
validation target, and the test target is then ranked from the history that includes the validation item.

Rows:

- ``popularity``: items by their interactions before the test targets (`quality.py`'s row).
- ``recency item-kNN``: item-item similarity from the training sequences (cosine of co-occurrence within a user,
  or of nearness in a user's sequence), the user's newest ``last`` items weighted ``decay ** age``; the similarity,
  ``decay`` and ``last`` picked on validation.
- ``SASRec (own, loss at every position)``: item-id SASRec (Kang & McAuley 2018) with pre-norm blocks, trained as
  the paper trains it (the next item at every position of each training sequence) with the full-softmax
  cross-entropy; the best validation epoch is kept (early stopping, a time cap).
- ``zero-shot: text cosine + popularity prior``: the strategy head as initialised (`zero_shot.py`), nothing
  trained but its one scale, picked on validation.
- ``frozen encoder + strategy head`` and ``+ sequence head``: interestbert's heads on the untrained encoder, trained
  as `interestbert finetune` trains them (the strategy head's warm-up on the default horizons' history vectors, the
  sequence head on the item texts' embeddings); nothing of the encoder trains. The fine-tuned rows are
  `quality.py`'s.

The peers are the bars of issue 15; `../shared/STACK.md` lists what they reach on this kind of CPU.

    python benchmarks/peers.py --data-dir ../shared/data --out benchmarks/results/peers

Results: ``<out>/<dataset>.json`` per dataset (written as each finishes) and ``<out>/peers.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import sparse  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, HEAD_LR, MAX_SEQ_LENGTH, data_dir_of, hardware  # noqa: E402
from results_io import run_and_report  # noqa: E402
from zero_shot import prior_row  # noqa: E402

from interestbert.encoder.cards import load_card_data  # noqa: E402
from interestbert.encoder.head import StrategyHead  # noqa: E402
from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder  # noqa: E402
from interestbert.encoder.options import parse_horizons  # noqa: E402
from interestbert.encoder.scoring import Scorer, SequenceHeadScorer, StrategyHeadScorer  # noqa: E402
from interestbert.encoder.sequence import SequenceOptions, right_aligned  # noqa: E402
from interestbert.encoder.verbalise import Verbaliser  # noqa: E402
from interestbert.finetune.args import FinetuneArguments  # noqa: E402
from interestbert.finetune.data import leave_one_out  # noqa: E402
from interestbert.finetune.evaluate import evaluate, popularity_scorer  # noqa: E402
from interestbert.finetune.loop import fit_epochs  # noqa: E402
from interestbert.finetune.sequence import SequenceTraining, train_sequence_head, training_sequences  # noqa: E402
from interestbert.finetune.warmup import fit_head  # noqa: E402

# SASRec's settings: the paper's (maximum length 200 on MovieLens, 50 on the sparse Amazon sets; dropout 0.2 / 0.5)
# at RecBole's width (64, feed-forward 256, 2 heads, 2 blocks); Adam 1e-3, betas (0.9, 0.98).
SASREC_SETTINGS = {
    "amazon-beauty": dict(max_len=50, dropout=0.5),
    "amazon-office": dict(max_len=50, dropout=0.5),
    "movielens-100k": dict(max_len=200, dropout=0.2),
    "movielens-1m": dict(max_len=200, dropout=0.2),
}
KNN_GRID = {"similarity": ("co-occurrence", "sequence"), "decay": (0.5, 0.7, 0.85, 1.0), "last": (1, 3, 10, 50)}
SEQUENCE_WINDOW = 3  # "sequence" similarity: pairs at most this many events apart, weighted 1 / distance
SASREC_ROW, KNN_ROW = "SASRec (own, loss at every position)", "recency item-kNN"
FROZEN_STRATEGY_ROW, FROZEN_ROW = "frozen encoder + strategy head", "frozen encoder + sequence head"
PRIOR_ROW = "zero-shot: text cosine + popularity prior"


def training_histories(verbaliser: Verbaliser, split) -> list[np.ndarray]:
    """Each user's training events (before the validation target), as catalogue rows in time order."""
    offsets, items = verbaliser.offsets, verbaliser.event_items
    return [items[offsets[u] : offsets[u] + n] for u, n in zip(split.validation.users, split.validation.ends)]


def item_similarity(histories: list[np.ndarray], n_items: int, kind: str) -> torch.Tensor:
    """``(n_items, n_items)`` pair counts over ``sqrt(count_i * count_j)``, zero diagonal: users holding both items
    (``co-occurrence``, the cosine of their user sets), or pairs at most `SEQUENCE_WINDOW` events apart in a user's
    sequence, either order, weight 1/distance (``sequence``)."""
    if kind == "co-occurrence":
        rows = np.concatenate([np.full(len(np.unique(h)), u) for u, h in enumerate(histories)])
        cols = np.concatenate([np.unique(h) for h in histories])
        users = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(histories), n_items))
        counts = (users.T @ users).toarray()
    elif kind == "sequence":
        a, b, w = [], [], []
        for h in histories:
            for gap in range(1, SEQUENCE_WINDOW + 1):
                a.append(h[:-gap])
                b.append(h[gap:])
                w.append(np.full(max(len(h) - gap, 0), 1.0 / gap, np.float32))
        a, b, w = np.concatenate(a), np.concatenate(b), np.concatenate(w)
        pairs = sparse.coo_matrix((w, (a, b)), shape=(n_items, n_items)).toarray()
        counts = pairs + pairs.T
    else:
        raise ValueError(f"unknown similarity {kind!r}")
    np.fill_diagonal(counts, 0.0)
    norm = np.sqrt(np.maximum(np.bincount(np.concatenate(histories), minlength=n_items), 1.0))
    return torch.as_tensor(counts / norm[:, None] / norm[None, :], dtype=torch.float32)


class RecencyItemKNNScorer(Scorer):
    """Scores ``sum_age decay**age * similarity[item at that age]`` over the user's newest ``last`` items."""

    name = "recency item-kNN"

    def __init__(self, verbaliser, similarity: torch.Tensor, decay: float, last: int):
        super().__init__(verbaliser)
        self.similarity, self.decay, self.last = similarity, decay, last

    def _scores(self, users, ends, rows) -> torch.Tensor:
        recent = right_aligned(self.verbaliser.event_items, self.verbaliser.offsets, users, ends, self.last)
        weights = self.decay ** torch.arange(self.last - 1, -1, -1, dtype=torch.float32)  # newest: weight 1
        weights = weights.expand_as(recent) * (recent >= 0)
        return torch.einsum("bl,bln->bn", weights, self.similarity[recent.clamp(min=0)])


class SASRec(nn.Module):
    """Item-id SASRec: embeddings of the newest ``max_len`` items plus positions, causal pre-norm blocks; the
    next item's logits are the last hidden state against the (shared) item embeddings."""

    def __init__(
        self,
        n_items: int,
        max_len: int,
        dim: int = 64,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        ff: int = 256,
    ):
        super().__init__()
        self.max_len, self.dim = max_len, dim
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)  # row 0: padding, row r + 1: catalogue row r
        self.position = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            dim, heads, ff, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.item.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)

    def hidden(self, histories: torch.Tensor) -> torch.Tensor:
        """``(batch, n, dim)`` states of right-aligned catalogue rows (-1 padding on the left)."""
        keep = (histories >= 0).unsqueeze(-1)
        n = histories.shape[1]
        x = self.item(histories + 1) * self.dim**0.5 + self.position.weight[-n:]
        x = self.drop(x) * keep
        causal = nn.Transformer.generate_square_subsequent_mask(n, device=x.device)
        return self.norm(self.blocks(x, mask=causal, is_causal=True)) * keep

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.item.weight[1:].T


class SASRecScorer(Scorer):
    name = "SASRec"

    def __init__(self, model: SASRec, verbaliser):
        super().__init__(verbaliser)
        self.model = model

    def _scores(self, users, ends, rows) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            histories = right_aligned(
                self.verbaliser.event_items, self.verbaliser.offsets, users, ends, self.model.max_len
            )
            return self.model.logits(self.model.hidden(histories)[:, -1])
        finally:
            self.model.train(was_training)


def knn_row(verbaliser, split) -> dict:
    start = time.perf_counter()
    histories = training_histories(verbaliser, split)
    similarities = {kind: item_similarity(histories, split.n_items, kind) for kind in KNN_GRID["similarity"]}
    grid = {}
    for kind, decay, last in itertools.product(*KNN_GRID.values()):
        scorer = RecencyItemKNNScorer(verbaliser, similarities[kind], decay, last)
        grid[(kind, decay, last)] = evaluate(scorer, split.validation)["ndcg@10"]
    kind, decay, last = max(grid, key=grid.get)
    test = evaluate(RecencyItemKNNScorer(verbaliser, similarities[kind], decay, last), split.test)
    return {
        **test,
        "similarity": kind,
        "decay": decay,
        "last": last,
        "validation_ndcg@10": round(grid[(kind, decay, last)], 5),
        "validation_grid": {f"{k}, decay {d}, last {n}": round(v, 5) for (k, d, n), v in grid.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }


def sasrec_row(name: str, verbaliser, split, minutes: float, epochs: int, patience: int, seed: int = 42) -> dict:
    settings = SASREC_SETTINGS[name]
    torch.manual_seed(seed)
    model = SASRec(split.n_items, **settings)
    inputs, targets = training_sequences(verbaliser, split, settings["max_len"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    scorer = SASRecScorer(model, verbaliser)

    def batch_loss(rows):
        x, y = inputs[rows], targets[rows]
        hidden = model.hidden(x)
        keep = y >= 0
        return F.cross_entropy(model.logits(hidden[keep]), y[keep])

    result = fit_epochs(
        model,
        optimizer,
        len(inputs),
        batch_loss,
        epochs=epochs,
        batch_size=128,
        generator=torch.Generator().manual_seed(seed),
        validate=lambda: evaluate(scorer, split.validation)["ndcg@10"],
        patience=patience,
        max_minutes=minutes,
        desc=f"SASRec {name}",
    )
    model.eval()
    return {
        **evaluate(scorer, split.test),
        **settings,
        "dim": 64,
        "layers": 2,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "validation_ndcg@10": round(result.best_metric, 5),
        "train_seconds": round(result.seconds, 1),
        "log": result.log,
    }


def frozen_rows(
    verbaliser,
    split,
    encoder: InterestEncoder,
    options: SequenceOptions,
    prefixes: int | None,
    minutes: float,
    epochs: int,
    patience: int,
) -> dict[str, dict]:
    """interestbert on the untrained encoder: the strategy head as initialised (zero-shot: the item texts'
    embeddings times one scale, picked on validation, plus the log popularity ``b'``), the strategy head as
    `interestbert finetune` warms it up before its first step, both on the default horizons' history vectors, and
    the sequence head on the item texts' embeddings. Encodings at ``precision="auto"`` (bf16 where the CPU has
    it)."""
    args = FinetuneArguments(card="-", output_dir="-", head_learning_rate=HEAD_LR)
    encoder.horizons = parse_horizons(args.interest_horizons)
    start = time.perf_counter()
    items = encoder.encode(verbaliser.item_texts, batch_size=64, precision="auto")
    encode_seconds = time.perf_counter() - start
    train = leave_one_out(verbaliser, prefixes).train
    cap = args.head_warmup_max_examples
    if len(train) > cap:  # as the warm-up samples them
        train = train.subset(np.sort(np.random.default_rng([args.seed, 7]).choice(len(train), cap, replace=False)))
    vectors = {
        name: encoder.encode_histories(verbaliser, examples.users, examples.ends, batch_size=64, precision="auto")
        for name, examples in (("train", train), ("validation", split.validation), ("test", split.test))
    }
    zero_shot = prior_row(verbaliser, split, items, vectors)
    encoder.head = StrategyHead(
        verbaliser.item_ids, items, popularity=split.popularity["train"], init_scale=args.head_init_scale
    )
    fitted = time.perf_counter()
    _, summary = fit_head(
        encoder,
        verbaliser,
        vectors["train"],
        train.targets,
        args.head_warmup_epochs,
        args.head_learning_rate,
        args.weight_decay,
        args.seed,
        (split.validation, vectors["validation"]),
        args.head_warmup_patience,
    )
    strategy = {
        **evaluate(StrategyHeadScorer(encoder.head, verbaliser), split.test, interest=vectors["test"]),
        "train_seconds": round(time.perf_counter() - fitted, 1),
        "warm_up": summary,
        "encode_seconds": round(fitted - start, 1),
        "train_examples": len(train),
    }
    training = SequenceTraining(epochs=epochs, patience=patience, max_minutes=minutes)
    head, log = train_sequence_head(verbaliser, split, items, options, training, show_progress_bar=False)
    sequence = {
        **evaluate(SequenceHeadScorer(head, verbaliser), split.test),
        "max_events": options.max_events,
        "best_epoch": log["best_epoch"],
        "epochs": log["epochs"],
        "validation_ndcg@10": log["best_validation_ndcg@10"],
        "item_encode_seconds": round(encode_seconds, 1),
        "train_seconds": log["train_runtime_s"],
        "text_prior": log.get("text_prior"),
        "log": log["log"],
    }
    return {PRIOR_ROW: zero_shot, FROZEN_STRATEGY_ROW: strategy, FROZEN_ROW: sequence}


def run_dataset(
    name: str,
    data_dir: Path,
    rows_wanted: list[str],
    minutes: float,
    epochs: int,
    patience: int,
    sequence_events: int | None,
) -> dict:
    clock = time.perf_counter()
    data = load_card_data(name, data_dir_of(name, data_dir))
    encoder = InterestEncoder.from_pretrained(DEFAULT_BASE_MODEL, max_seq_length=MAX_SEQ_LENGTH).merge_adapter()
    verbaliser = Verbaliser(data, encoder.tokenizer, MAX_SEQ_LENGTH)
    split = leave_one_out(verbaliser)
    rows = {"popularity": evaluate(popularity_scorer(verbaliser, split, "test"), split.test)}
    if "knn" in rows_wanted:
        rows[KNN_ROW] = knn_row(verbaliser, split)
        print(f"{name}: {KNN_ROW} NDCG@10 {rows[KNN_ROW]['ndcg@10']:.4f}", flush=True)
    if "sasrec" in rows_wanted:
        rows[SASREC_ROW] = sasrec_row(name, verbaliser, split, minutes, epochs, patience)
        print(f"{name}: {SASREC_ROW} NDCG@10 {rows[SASREC_ROW]['ndcg@10']:.4f}", flush=True)
    if "frozen" in rows_wanted:
        options = SequenceOptions(max_events=sequence_events or SequenceOptions.max_events)
        rows.update(
            frozen_rows(verbaliser, split, encoder, options, DATASETS[name]["prefixes"], minutes, epochs, patience)
        )
        print(
            f"{name}: {FROZEN_STRATEGY_ROW} NDCG@10 {rows[FROZEN_STRATEGY_ROW]['ndcg@10']:.4f}, "
            f"{FROZEN_ROW} {rows[FROZEN_ROW]['ndcg@10']:.4f}",
            flush=True,
        )
    return {
        "dataset": name,
        "users": len(split.test),
        "items": split.n_items,
        "rows": rows,
        "hardware": hardware(),
        "date": dt.date.today().isoformat(),
        "seconds": round(time.perf_counter() - clock, 1),
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| dataset | model | HR@10 | NDCG@10 | MRR@10 | settings (picked on validation) | training |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for result in results:
        for label, row in result["rows"].items():
            if label == KNN_ROW:
                settings = f"{row['similarity']}, decay {row['decay']}, last {row['last']}"
            elif "best_epoch" in row:
                settings = f"best epoch {row['best_epoch']} of {row['epochs']}"
            else:
                settings = "-"
            seconds = row.get("train_seconds", row.get("seconds"))
            lines.append(
                f"| {result['dataset']} ({result['users']:,} users, {result['items']:,} items) | {label} | "
                f"{row['hr@10']:.4f} | {row['ndcg@10']:.4f} | {row['mrr@10']:.4f} | {settings} | "
                f"{'-' if seconds is None else f'{seconds / 60:.1f} min'} |"
            )
    notes = [f"- {r['dataset']}: {r['hardware']}, {r['date']}, `{r.get('command', '')}`" for r in results]
    return "\n".join(lines + [""] + notes) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "peers"))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--rows", nargs="+", default=["knn", "sasrec", "frozen"], choices=["knn", "sasrec", "frozen"])
    parser.add_argument("--minutes", type=float, default=20.0, help="Time cap of each trained row.")
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--patience", type=int, default=20, help="Epochs without a better validation NDCG@10.")
    parser.add_argument(
        "--sequence-events",
        type=int,
        default=None,
        help="max_events of the frozen row's sequence head (default: the product's).",
    )
    parser.add_argument("--report-only", action="store_true", help="Rebuild peers.md from the saved JSON files.")
    args = parser.parse_args(argv)
    out = Path(args.out)
    command = "python benchmarks/peers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run_and_report(
        out,
        "peers",
        args.datasets,
        lambda name: run_dataset(
            name, Path(args.data_dir), args.rows, args.minutes, args.epochs, args.patience, args.sequence_events
        ),
        command,
        markdown,
        DATASETS,
        args.report_only,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
