"""Does noticing a shift help the next recommendation? The downstream measure of ``DRIFT_BENCHMARK.md``.

On the drift benchmark's evaluation streams (the same P1/P2 renewal streams `benchmarks/drift.py` builds, same seed),
for every change t of a spliced stream and j in {2, 4, 6, 8, 10} events after it (while the new segment lasts), the
full catalogue is ranked for the next event of the new segment (event t + j; the stream's earlier items excluded,
the target kept), and NDCG@10 is taken for each way of forming the interest vector:

- (i) ``long-only``: the mean of the newest events whose texts fit the history budget (128 tokens, the newest
  kept whole, as the Verbaliser cuts): the span of the interest vector `interestbert recommend` uses by default;
  beside it, fixed horizons of the newest 1, 2 and 20 events (20: the span of the monitor's default reference);
- (ii) ``drift-aware (blend)``: what `interestbert recommend --drift-aware` does: ``a * short + (1 - a) * long``,
  ``a = alpha_max * clip(score / threshold, 0, 1)`` from the monitor's score at the newest event (alpha_max 0.25);
- (ii') ``drift-aware (reset)``: after the monitor's newest detection, the mean of the events since the point it
  names (its ``since_index``), within the long-term span; long-term while there is none;
- (iii) ``short-only``: the mean of the newest ``window`` (4) event vectors;
- (iv) ``oracle reset``: the mean of the events since the true change t;
- (v) each drift-aware policy triggered at the true t instead of by the monitor (for the reset policy this is (iv)).

With ``--scorer text`` (the default) vectors are the encoder's unit embeddings of the event texts (the monitor's
``window_vector="mean"`` view), scored by cosine to the item texts' embeddings (zero-shot, the packaged base model).
With ``--scorer sequence`` a sequence head (the product's, on the frozen packaged encoder, its text prior fitted) is
trained on the users in no calibration or evaluation stream, so it has never seen the evaluated users; each
span is scored from the order of its newest events (the long-term span: the head's whole input, 200 events on
ml-1m, 50 elsewhere), and a blend is the same blend of the spans' scores. The monitor is the one `interestbert
recommend --drift-aware` makes on the fly (``--monitor product``): its same-user projection fitted on the users in
no stream and its score's form picked on the tuning pool's histories (as `drift.py`), then calibrated on the
calibration controls to 5 false alarms per 1,000 events (``--monitor raw``: the default settings on the vectors as
encoded). Headline: **headroom recovered** = (NDCG_ii - NDCG_i) / (NDCG_iv - NDCG_i), with NDCG averaged over every
(change, j), and a 95 % bootstrap interval over streams (paired). On the control streams (no change), queries at
the same offsets after pseudo-changes drawn like the real ones measure the cost: (ii) must not lose to (i) there.

Results: ``<out>/<dataset>.json`` and ``<out>/drift_downstream.md``.

    python benchmarks/drift_downstream.py --data-dir ../shared/data --out benchmarks/results/drift_downstream
    python benchmarks/drift_downstream.py --data-dir ../shared/data --scorer sequence \
        --out benchmarks/results/drift_downstream/sequence
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drift_eval as de  # noqa: E402
from common import data_dir_of, sequence_events  # noqa: E402
from drift import DATASETS, MemoEncode, load_streams, monitor_series, unit  # noqa: E402
from results_io import read_results, write_json  # noqa: E402

from interestbert.encoder.cards import load_card_data  # noqa: E402
from interestbert.encoder.drift import DriftConfig, DriftMonitor  # noqa: E402
from interestbert.encoder.files import atomic_write_text  # noqa: E402
from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder  # noqa: E402
from interestbert.encoder.scoring import SequenceHeadScorer  # noqa: E402
from interestbert.encoder.sequence import SequenceOptions  # noqa: E402
from interestbert.encoder.verbalise import Verbaliser  # noqa: E402
from interestbert.finetune.data import leave_one_out  # noqa: E402
from interestbert.finetune.evaluate import evaluate  # noqa: E402
from interestbert.finetune.sequence import SequenceTraining, train_sequence_head  # noqa: E402
from interestbert.inference.recommend import short_term_weight  # noqa: E402

BUDGET = 5.0
STRATEGIES = (
    "long-only",
    "drift-aware (blend)",
    "drift-aware (reset)",
    "short-only",
    "oracle reset",
    "blend at the true change",
    "newest 1",
    "newest 2",
    "newest 20",
)
MONITORS = {
    "product": "its same-user projection (users in no stream) and score's form (the tuning pool), as "
    "`recommend --drift-aware` does on the fly",
    "raw": "default settings, the vectors as encoded",
}
BUDGET_TOKENS = 128  # the history text's budget (the quality benchmark's max_seq_length)
SCORERS = {
    "text": "Zero-shot (packaged base model, item-text cosine)",
    "sequence": "A sequence head (frozen packaged encoder, the text prior fitted) trained on the users in no "
    "calibration or evaluation stream; a span scored by its newest events' order, a blend "
    "as the same blend of scores",
}


def budget_starts(costs: np.ndarray, sep: int, budget: int = BUDGET_TOKENS) -> np.ndarray:
    """For each p, the first event of the newest events before p whose texts fit ``budget`` tokens with their
    separators and the 2 special tokens (at least one event, as the Verbaliser keeps)."""
    cum = np.concatenate([[0], np.cumsum(np.asarray(costs) + sep)])  # cost of events[:k], a separator after each
    starts = np.zeros(len(costs) + 1, dtype=np.int64)
    for p in range(1, len(costs) + 1):
        fits = np.flatnonzero(cum[p] - cum[:p] - sep + 2 <= budget)
        starts[p] = fits[0] if len(fits) else p - 1
    return starts


def spans(qs, long_starts, detections, scores, threshold: float, config: DriftConfig) -> dict:
    """``{strategy: [[(weight, first event), ...] per query]}``: each way of forming the interest at a query's
    position p = t + j as a weighted sum over spans ``events[first:p]``. ``long_starts[k][p]``: where the long-term
    span of stream ``k`` begins (the scorer's own history budget); a reset never reaches further back."""
    w, alpha_max = config.window, config.alpha_max
    out = {name: [] for name in STRATEGIES}
    for k, t, j in qs:
        p = t + j
        long = int(long_starts[k][p])
        a = float(short_term_weight(np.asarray([scores[k][p - 1]]), threshold, alpha_max)[0])  # the product's
        raised = [d for d in detections[k] if d.index <= p - 1]
        for n in (1, 2, 20):
            out[f"newest {n}"].append([(1.0, max(0, p - n))])
        out["long-only"].append([(1.0, long)])
        out["short-only"].append([(1.0, p - w)])
        out["oracle reset"].append([(1.0, t)])
        out["drift-aware (blend)"].append([(a, p - w), (1 - a, long)])
        out["drift-aware (reset)"].append([(1.0, max(raised[-1].since_index, long) if raised else long)])
        out["blend at the true change"].append([(alpha_max, p - w), (1 - alpha_max, long)])
    return out


def text_scores(parts, qs, vectors, items: np.ndarray) -> np.ndarray:
    """Zero-shot: the cosine of ``unit(sum of weight * unit(mean of the span's event vectors))`` to the item
    texts (the text scorer's interest, `interestbert recommend`'s blend)."""
    interest = [
        unit(sum(wt * unit(vectors[k][first : t + j].mean(0)) for wt, first in part if wt > 0))
        for part, (k, t, j) in zip(parts, qs)
    ]
    return np.stack(interest) @ items.T if interest else np.zeros((0, len(items)), np.float32)


class SequenceScores:
    """A sequence head (`interestbert.finetune.sequence.train_sequence_head`) trained on the users in no
    calibration or evaluation stream, scoring a span by the order of its newest ``max_events`` events; a
    weighted sum of spans is the same sum of their scores. Columns follow the text catalogue (``catalogue``)."""

    def __init__(self, data, users, encoder, encode, minutes: float, seed: int, max_events: int):
        keep = set(users)
        part = dataclasses.replace(data, events=data.events.filter(lambda u: u in keep, input_columns="user_id"))
        self.verbaliser = Verbaliser(part, encoder.tokenizer, BUDGET_TOKENS)
        split = leave_one_out(self.verbaliser)
        items = np.asarray(encode(self.verbaliser.item_texts), np.float32)
        self.head, self.summary = train_sequence_head(
            self.verbaliser,
            split,
            items,
            SequenceOptions(max_events=max_events),
            SequenceTraining(seed=seed, max_minutes=minutes),
            show_progress_bar=False,
        )
        self.summary.pop("log", None)
        self.summary.update(
            users=len(split.test),
            test_ndcg10=round(evaluate(SequenceHeadScorer(self.head, self.verbaliser), split.test)["ndcg@10"], 5),
        )
        self.row_of = {}  # item text -> the head's row (the first item with that text)
        for row, text in enumerate(self.verbaliser.item_texts):
            self.row_of.setdefault(text, row)

    def columns(self, catalogue: list[str]) -> np.ndarray:
        return np.asarray([self.row_of[text] for text in catalogue])

    def __call__(self, parts, qs, streams, catalogue: list[str], batch: int = 256) -> np.ndarray:
        length, columns = self.head.options.max_events, self.columns(catalogue)
        out = np.zeros((len(qs), len(catalogue)), np.float32)
        for lo in range(0, len(qs), batch):
            for slot in range(max((len(p) for p in parts[lo : lo + batch]), default=0)):
                rows, weights = [], []
                for part, (k, t, j) in zip(parts[lo : lo + batch], qs[lo : lo + batch]):
                    wt, first = part[slot] if slot < len(part) else (0.0, t + j)
                    events = streams[k].events[max(first, t + j - length) : t + j]
                    rows.append([-1] * (length - len(events)) + [self.row_of[e.item_text] for e in events])
                    weights.append(wt)
                with torch.no_grad():
                    scores = self.head.scores(torch.as_tensor(rows, dtype=torch.long)).numpy()[:, columns]
                out[lo : lo + batch] += np.asarray(weights, np.float32)[:, None] * scores
        return out


def run_dataset(
    name: str,
    data_dir: Path,
    n: int,
    seed: int,
    encoder,
    precision: str,
    kind: str,
    scorer: str = "text",
    sequence_minutes: float = 15.0,
    alpha_max: float | None = None,
) -> dict:
    clock = time.perf_counter()
    design, splits, _, separator, outside, tuning_pool = load_streams(name, data_dir, n, seed, encoder.tokenizer)
    (_, cal_c), (ev_s, ev_c) = splits["calibrate"], splits["evaluate"]
    encode = MemoEncode(encoder, precision)
    memo: dict[str, int] = {}

    def tokens(text: str) -> int:
        if text not in memo:
            memo[text] = len(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])
        return memo[text]

    sep = tokens(separator)
    config = DriftConfig() if alpha_max is None else DriftConfig(alpha_max=alpha_max)
    monitor = DriftMonitor(encode, config, separator=separator, batch_size=128)
    fitted = {}
    if kind == "product":
        # as benchmarks/drift.py's product row: projection on the users in no stream, form on the tuning pool's
        fit = monitor.fit_and_tune(outside, tuning_pool, BUDGET, seed=seed)
        fitted = dict(zip(("projection", "score_tuning"), fit))
    monitor.calibrate([s.history() for s in cal_c], BUDGET)
    threshold = monitor.config.threshold
    data = load_card_data(name, data_dir_of(name, data_dir))
    catalogue = list(dict.fromkeys(data.items["text"]))
    row_of = {text: i for i, text in enumerate(catalogue)}
    items = np.asarray(encode(catalogue), np.float32)  # (n_items, dim)
    sequence = None
    if scorer == "sequence":
        # the head is no part of the monitor: it may learn from the tuning pool's users too (in no evaluation stream)
        users = [h.user_id for h in outside + tuning_pool]
        sequence = SequenceScores(data, users, encoder, encode, sequence_minutes, seed, sequence_events(name))
        fitted["sequence_head"] = sequence.summary
    changes = [t for s in ev_s for t in s.changes]
    result = {
        "dataset": name,
        "design": dataclasses.asdict(design),
        "items": len(catalogue),
        "threshold": round(float(threshold), 4),
        "budget_per_1000": BUDGET,
        "alpha_max": monitor.config.alpha_max,
        "window": monitor.config.window,
        "monitor": kind,
        "scorer": scorer,
        "centre": monitor.config.centre,
        "reference_windows": monitor.config.reference_windows,
        **fitted,
    }
    for kind, streams in (("changes", ev_s), ("controls", ev_c)):
        qs = de.downstream_queries(streams, pseudo_changes=None if kind == "changes" else changes, seed=seed)
        scans = monitor.scan_many([s.history() for s in streams])
        detections = [r.events for r in scans]
        series = monitor_series(monitor, streams)
        scores = [series[s.stream_id] for s in streams]
        vectors = [np.asarray(encode([e.text for e in s.events]), np.float32) for s in streams]
        starts = [budget_starts([tokens(e.text) for e in s.events], sep) for s in streams]
        if sequence is None:
            long_starts = starts
            scored = lambda parts: text_scores(parts, qs, vectors, items)  # noqa: E731
        else:
            long_starts = [
                np.maximum(np.arange(len(s.events) + 1) - sequence.head.options.max_events, 0) for s in streams
            ]
            scored = lambda parts: sequence(parts, qs, streams, catalogue)  # noqa: E731
        values = {
            k: de.ndcg_at(de.query_ranks(scored(parts), streams, qs, row_of))
            for k, parts in spans(qs, long_starts, detections, scores, threshold, monitor.config).items()
        }
        lengths = np.asarray([t + j - long_starts[k][t + j] for k, t, j in qs])
        offsets = np.asarray([j for _, _, j in qs])
        part = {
            "queries": len(qs),
            "streams": len(streams),
            "long_span_events": {"mean": round(float(lengths.mean()), 2), "median": float(np.median(lengths))},
            "ndcg@10": {k: round(float(v.mean()), 4) for k, v in values.items()},
            "ndcg@10_by_offset": {
                int(j): {k: round(float(v[offsets == j].mean()), 4) for k, v in values.items()}
                for j in de.DOWNSTREAM_OFFSETS
                if (offsets == j).any()
            },
        }
        if kind == "changes":
            part["headroom_recovered"] = {
                p: {
                    "value": round(de.headroom_recovered(values, p), 3),
                    "ci95": [round(x, 3) for x in de.headroom_interval(values, qs, p, seed=seed)],
                }
                for p in STRATEGIES
                if p not in ("long-only", "oracle reset")
            }
        else:
            long = values["long-only"].mean()
            part["relative_change_vs_long"] = {
                k: round(float(v.mean() / long - 1), 4) if long > 0 else None for k, v in values.items()
            }
        result[kind] = part
    result["seconds"] = round(time.perf_counter() - clock, 1)
    result["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return result


def markdown(results: list[dict], command: str) -> str:
    lines = [
        f"# Downstream: the next recommendation after a shift ({results[0]['date'][:10]})",
        "",
        f"`{command}`. {SCORERS[results[0].get('scorer', 'text')]}. NDCG@10 of the next event of the new "
        "segment, averaged over every change and j in 2, 4, 6, 8, 10 events after it; the monitor "
        f"({MONITORS[results[0].get('monitor', 'raw')]}) calibrated to {BUDGET:g} false alarms per 1,000 events. "
        "Headroom recovered = (row − "
        "long-only) / (oracle reset − long-only), 95 % bootstrap interval over streams. Controls: the same "
        "offsets after a pseudo-change on unspliced streams; the change of NDCG@10 against long-only there is "
        "the row's cost (or gain) when nothing changed.",
        "",
        "| dataset | interest vector | NDCG@10 after a change | headroom recovered [95 %] | NDCG@10, controls | "
        "vs long-only, controls |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        c, k = r["changes"], r["controls"]
        for name in STRATEGIES:
            h = c["headroom_recovered"].get(name)
            head = "" if h is None else f"{h['value']:.2f} [{h['ci95'][0]}, {h['ci95'][1]}]"
            budget = "128 tokens" if r.get("scorer", "text") == "text" else "the head's input"
            label = (
                name
                if name != "long-only"
                else f"long-only (newest {c['long_span_events']['mean']:.1f} events on average: {budget})"
            )
            lines.append(
                f"| {r['dataset']} ({c['queries']:,} queries) | {label} | {c['ndcg@10'][name]:.4f} | "
                f"{head} | {k['ndcg@10'][name]:.4f} | {k['relative_change_vs_long'][name]:+.1%} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "drift_downstream")
    parser.add_argument(
        "--datasets",
        nargs="*",
        default=["movielens-1m", "movielens-100k"],
        choices=[d for d, spec in DATASETS.items() if not spec.generated],
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=300,
        help="Spliced (and control) streams per split (the "
        "drift benchmark uses 150; more here because one query's NDCG@10 is mostly 0).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument(
        "--monitor",
        default="product",
        choices=("product", "raw"),
        help="product: projection (users in no stream) and score form (tuning pool), as `recommend "
        "--drift-aware` does on the fly; raw: the default settings on the vectors as encoded.",
    )
    parser.add_argument(
        "--scorer",
        default="text",
        choices=tuple(SCORERS),
        help="text: zero-shot item-text cosine of interest vectors; sequence: a sequence head trained "
        "on the users in no calibration or evaluation stream.",
    )
    parser.add_argument("--sequence-minutes", type=float, default=15.0, help="The sequence head's time cap.")
    parser.add_argument(
        "--alpha-max",
        type=float,
        default=None,
        help="The blend's alpha_max (default: the product's, DriftConfig().alpha_max); pick it on "
        "the card's validation split (`drift_aware.py`), not on these streams.",
    )
    args = parser.parse_args(argv)
    command = "python benchmarks/drift_downstream.py " + " ".join(argv if argv is not None else sys.argv[1:])
    encoder = InterestEncoder.from_pretrained(DEFAULT_BASE_MODEL, max_seq_length=128).merge_adapter()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        result = run_dataset(
            name,
            args.data_dir,
            args.streams,
            args.seed,
            encoder,
            args.precision,
            args.monitor,
            args.scorer,
            args.sequence_minutes,
            args.alpha_max,
        )
        write_json(args.out / f"{name}.json", dict(result, command=command))
        print(name, result["changes"]["headroom_recovered"], result["controls"]["relative_change_vs_long"], flush=True)
    results = read_results(args.out, [d for d in DATASETS if d in args.datasets])
    atomic_write_text(args.out / "drift_downstream.md", markdown(results, command.strip()))
    print(markdown(results, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
