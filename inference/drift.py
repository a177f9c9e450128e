"""`interestbert drift`: scan a card's users for interest shifts; write scores, events, a summary and timelines.

Outputs (each written under a temporary name and renamed when complete):

- ``scores.parquet``: one row per evaluation: ``user_id``, ``event_index``, ``timestamp``, ``score`` (NaN until a
  user has two windows of history).
- ``events.parquet``: one row per detection: ``user_id``, ``event_index``, ``timestamp``, ``score``,
  ``since_index``, ``moved_from``, ``moved_to`` (lists of terms) and ``explanation``.
- ``summary.json`` / ``summary.md``: users with drift, events per 1,000, the score distribution, the threshold and
  where it came from, and (for data with recorded switches) precision and recall against them.
- ``plots/<user>.png``: score timelines for K users.
"""

from __future__ import annotations

import json
import logging
import os
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from interestbert.encoder.drift import (
    MARGIN,
    Calibration,
    DriftMonitor,
    History,
    ScanResult,
    count_false_alarms,
    histories_from_verbaliser,
    switch_points,
    switch_table,
)
from interestbert.encoder.files import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)


def write_scores(results: list[ScanResult], path: Path) -> None:
    n = [len(r.indices) for r in results]
    table = pa.table(
        {
            "user_id": pa.array(np.repeat([r.user_id for r in results], n).tolist(), pa.string()),
            "event_index": pa.array(np.concatenate([r.indices for r in results]) if results else [], pa.int32()),
            "timestamp": pa.array(np.concatenate([r.timestamps for r in results]) if results else [], pa.int64()),
            "score": pa.array(np.concatenate([r.scores for r in results]) if results else [], pa.float32()),
        }
    )
    _write_parquet(table, path)


def write_events(results: list[ScanResult], path: Path) -> None:
    events = [e for r in results for e in r.events]
    table = pa.table(
        {
            "user_id": pa.array([e.user_id for e in events], pa.string()),
            "event_index": pa.array([e.index for e in events], pa.int32()),
            "timestamp": pa.array([e.timestamp for e in events], pa.int64()),
            "score": pa.array([e.score for e in events], pa.float32()),
            "since_index": pa.array([e.since_index for e in events], pa.int32()),
            "moved_from": pa.array([list(e.moved_from) for e in events], pa.list_(pa.string())),
            "moved_to": pa.array([list(e.moved_to) for e in events], pa.list_(pa.string())),
            "explanation": pa.array([e.explanation for e in events], pa.string()),
        }
    )
    _write_parquet(table, path)


def _write_parquet(table: pa.Table, path: Path) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def summarise(
    results: list[ScanResult], monitor: DriftMonitor, calibration: Calibration, switches: dict[str, list[int]] | None
) -> dict:
    n_events = sum(r.n_events for r in results)
    n_detections = sum(len(r.events) for r in results)
    scores = np.concatenate([r.scores for r in results]) if results else np.zeros(0, np.float32)
    scores = scores[~np.isnan(scores)]
    short = sum(r.n_events < 2 * monitor.config.window for r in results)
    summary = {
        "users": len(results),
        "users_with_drift": sum(bool(r.events) for r in results),
        "events": n_events,
        "detections": n_detections,
        "detections_per_1000_events": round(1000 * n_detections / max(n_events, 1), 3),
        "users_too_short": short,
        "events_reordered": sum(r.reordered for r in results),
        "events_tied": sum(r.tied for r in results),
        "window": monitor.config.window,
        "stride": monitor.config.stride,
        "threshold": monitor.config.threshold,
        "calibration": calibration.source,
        "calibration_record": calibration.record,
        "projection": monitor.config.projection,
        "score": {
            "centre": monitor.config.centre,
            "reference_windows": monitor.config.reference_windows,
            "tuning": monitor.config.score_tuning,
        },
        "score_quantiles": {f"p{q}": round(float(np.quantile(scores, q / 100)), 4) for q in (5, 25, 50, 75, 95, 99)}
        if len(scores)
        else {},
    }
    if switches is not None:
        hits = false = truth = 0
        for r in results:
            points = switches.get(r.user_id, [])
            truth += len(points)
            f = count_false_alarms([e.index for e in r.events], points, MARGIN)
            false += f
            hits += len(r.events) - f
        summary["against_recorded_switches"] = {
            "margin_events": MARGIN,
            "switches": truth,
            "hits": hits,
            "false_alarms": false,
            "precision": round(hits / max(hits + false, 1), 4),
            "recall": round(hits / max(truth, 1), 4),
        }
    return summary


def summary_markdown(summary: dict, card: str, model: str) -> str:
    lines = [
        f"# Drift scan: {card}",
        "",
        f"Model: `{model}`; window {summary['window']} events, stride "
        f"{summary['stride']}, threshold {summary['threshold']:.4f} ({summary['calibration']}).",
        "",
        "| users | with drift | events | detections | per 1,000 events | too short (< 2 windows) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {summary['users']:,} | {summary['users_with_drift']:,} | {summary['events']:,} | "
        f"{summary['detections']:,} | {summary['detections_per_1000_events']:.2f} | "
        f"{summary['users_too_short']:,} |",
        "",
    ]
    if summary["score_quantiles"]:
        q = summary["score_quantiles"]
        lines += ["Score distribution (1 - cosine): " + ", ".join(f"{k} {v:.3f}" for k, v in q.items()), ""]
    if summary["events_reordered"] or summary["events_tied"]:
        lines += [
            f"Timestamps: {summary['events_reordered']:,} events were out of order (sorted), "
            f"{summary['events_tied']:,} share their timestamp with the event before (file order kept).",
            "",
        ]
    if "against_recorded_switches" in summary:
        s = summary["against_recorded_switches"]
        lines += [
            f"Against the recorded switches (a hit is within {s['margin_events']} events after one): "
            f"precision {s['precision']:.3f}, recall {s['recall']:.3f} ({s['hits']:,} hits, "
            f"{s['false_alarms']:,} false alarms, {s['switches']:,} switches).",
            "",
        ]
    return "\n".join(lines)


def plot_timeline(
    result: ScanResult,
    threshold: float,
    path: Path,
    switches: list[tuple[int, str]] | None = None,
    title: str | None = None,
) -> None:
    """One user's score over their history: the threshold, detections with their explanation, true switches.

    Drawn on a `matplotlib.figure.Figure` of its own (rendered by Agg when saved): pyplot and the user's
    backend choice are never touched."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), dpi=110)
    ax = fig.subplots()
    ok = ~np.isnan(result.scores)  # NaN (no reference yet, or just after a detection) breaks the line
    ax.plot(
        result.indices,
        result.scores,
        color="#1f77b4",
        lw=1.6,
        marker=".",
        ms=4,
        label="drift score (distance of the recent window from earlier interest, above the user's usual)",
    )
    ax.axhline(threshold, color="#d62728", ls="--", lw=1.2, label=f"threshold {threshold:.3f}")
    top = max(threshold * 1.9, float(np.nanmax(result.scores)) * 1.35 if ok.any() else threshold * 1.9)
    for k, (point, label) in enumerate(switches or []):
        ax.axvline(point, color="#2ca02c", ls=":", lw=1.6, label="true switch" if k == 0 else None)
        ax.text(point, top * 0.55, f" {label}", color="#2ca02c", fontsize=7, rotation=90, va="bottom")
    for k, event in enumerate(result.events):
        ax.plot(
            [event.index],
            [event.score],
            marker="v",
            ms=10,
            color="#d62728",
            ls="none",
            label="detection" if k == 0 else None,
        )
        text = "\n".join(textwrap.wrap(event.explanation, 28))
        ax.annotate(
            text,
            (event.index, event.score),
            xytext=(4, 10 + 26 * (k % 2)),
            textcoords="offset points",
            fontsize=7,
            color="#8c1c13",
            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="#d62728", lw=0.6),
        )
    bottom = min(0.0, float(np.nanmin(result.scores))) if ok.any() else 0.0  # centred scores go below 0
    ax.set_xlim(0, max(result.n_events, 1))
    ax.set_ylim(bottom - 0.05 * (top - bottom), top)
    ax.set_xlabel("event index in the user's history (oldest = 0)")
    ax.set_ylabel("drift score")
    ax.set_title(title or f"user {result.user_id}: {result.n_events} events, {len(result.events)} detection(s)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, fontsize=7, frameon=False)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def pick_plot_users(results: list[ScanResult], switches: dict | None, k: int) -> list[ScanResult]:
    """Users worth looking at first: with detections and (where recorded) true switches, then the rest."""

    def key(r: ScanResult):
        return (-(bool(r.events) and bool((switches or {}).get(r.user_id))), -bool(r.events), r.user_id)

    return sorted(results, key=key)[:k]


def run_drift(
    data,
    verbaliser,
    monitor: DriftMonitor,
    calibration: Calibration,
    model_name: str,
    output: str | os.PathLike,
    user_indices: np.ndarray,
    plot: int = 3,
) -> dict:
    """Scans the users, writes every output (see the module docstring) and returns the summary."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    histories: list[History] = histories_from_verbaliser(verbaliser, user_indices)
    logger.info(
        "scanning %s users (window %d, stride %d, threshold %.4f)",
        f"{len(histories):,}",
        monitor.config.window,
        monitor.config.stride,
        monitor.config.threshold,
    )
    results = monitor.scan_many(histories, show_progress_bar=True)
    switches = switch_table(data)
    summary = summarise(results, monitor, calibration, switch_points(data))
    write_scores(results, out / "scores.parquet")
    write_events(results, out / "events.parquet")
    atomic_write_text(
        out / "summary.json", json.dumps(dict(summary, card=data.card.name, model=model_name), indent=2) + "\n"
    )
    atomic_write_text(out / "summary.md", summary_markdown(summary, data.card.name, model_name))
    plots = []
    if plot > 0:
        (out / "plots").mkdir(exist_ok=True)
        for r in pick_plot_users(results, switches, plot):
            path = out / "plots" / f"{_safe(r.user_id)}.png"
            plot_timeline(r, monitor.config.threshold, path, (switches or {}).get(r.user_id))
            plots.append(path)
    summary["plots"] = [str(p) for p in plots]
    return summary


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "user"
