"""`interestbert drift`: scores, explained events, a summary and plots; unknown users refused."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from interestbert.inference.cli import main


def test_drift_command_writes_scores_events_summary_and_plots(tiny_bert, synthetic_dir, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "drift"
    code = main(
        [
            "drift",
            "--card",
            "synthetic-shop",
            "--data-dir",
            str(synthetic_dir),
            "--model",
            str(tiny_bert),
            "--output",
            str(out),
            "--limit-users",
            "30",
            "--plot",
            "2",
            "--window",
            "6",
            "--target-false-alarms",
            "20",
        ]
    )
    captured = capsys.readouterr()
    printed, logged = captured.out, captured.err
    assert code == 0, printed + logged
    # status messages are logged to stderr, the command's result to stdout
    assert "the model has no drift calibration" in logged and "training split" in logged, logged
    assert "no drift projection: 0 users besides the 120 calibrating" in logged, logged  # all 120 calibrate
    assert "detections" in printed and "calibrating" not in printed, printed
    scores = pq.read_table(out / "scores.parquet").to_pandas()
    events = pq.read_table(out / "events.parquet").to_pandas()
    summary = json.loads((out / "summary.json").read_text())
    assert scores.user_id.nunique() == 30 and summary["users"] == 30
    assert summary["detections"] == len(events) > 0, summary
    assert set(events.columns) >= {"user_id", "event_index", "score", "moved_from", "moved_to", "explanation"}
    assert (events.score >= summary["threshold"] - 1e-6).all(), (events.score.min(), summary["threshold"])
    assert "against_recorded_switches" in summary and "precision" in (out / "summary.md").read_text()
    assert summary["projection"] is None and summary["score"] == {
        "centre": True,
        "reference_windows": 5,
        "tuning": None,
    }
    assert "the drift score keeps its form (centre=True, reference_windows=5)" in logged, logged
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) == 2
    for png in pngs:
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 300 and image[..., :3].std() > 0.05, (png, image.shape)  # drawn on, not blank
    assert not [p.name for p in out.rglob(".*")], "no temporary files left"


def test_drift_command_rejects_unknown_users(tiny_bert, synthetic_dir, tmp_path, capsys):
    code = main(
        [
            "drift",
            "--card",
            "synthetic-shop",
            "--data-dir",
            str(synthetic_dir),
            "--model",
            str(tiny_bert),
            "--output",
            str(tmp_path / "d"),
            "--users",
            "U0000",
            "nobody",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--users" in err and "'nobody'" in err and "Traceback" not in err
