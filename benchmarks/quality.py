"""Quality benchmark: interestbert fine-tuned (strategy head, and with the sequence head) vs untrained (zero-shot)
vs popularity vs SASRec, per dataset.

Protocol (DESIGN.md): leave-one-out in time, full ranking over every catalogue item, the user's seen items excluded,
HR@10 / NDCG@10 / MRR@10 on the test item, ties broken by catalogue order. Every row of a dataset is scored on the
same users and targets in the same run of this script. The SASRec row comes from RecBole 1.2.1 run on the same
split by ``benchmarks/recbole_peer.py`` in its own virtual environment (see benchmarks/README.md); this script
runs it when ``--recbole-python`` is given, or reads its earlier result from ``--sasrec-dir``.

Run (CPU, in the background; each dataset's result is written as soon as it is done):

    python benchmarks/quality.py --data-dir ../shared/data --out benchmarks/results/quality \\
        --recbole-python /work/recbole-venv/bin/python

``--smoke`` runs a few steps on one dataset (minutes) to check the script.

The peers' rows (`peers.py`) run first. The fine-tuned encoder's sequence head is then trained as the frozen row's
(same options, epochs, patience, time cap), except when the fine-tuning kept step 0: its encoder is then the frozen
one, bit for bit, and the row is the frozen one's, marked ``reused`` (saves ml-1m's 30-minute head;
``--no-reuse-frozen`` trains it again).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import DATASETS, HEAD_LR, LORA_LR, MAX_SEQ_LENGTH, data_dir_of, hardware, sequence_events, sequence_minutes
from results_io import read_results, write_json

from interestbert.encoder.cards import load_card_data
from interestbert.encoder.files import atomic_write_text
from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder
from interestbert.encoder.scoring import scorer_for
from interestbert.encoder.sequence import SequenceOptions
from interestbert.encoder.verbalise import Verbaliser
from interestbert.finetune.args import FinetuneArguments
from interestbert.finetune.data import leave_one_out
from interestbert.finetune.evaluate import evaluate, popularity_scorer
from interestbert.finetune.metrics import RankingMetrics
from interestbert.finetune.sequence import train_sequence_head
from interestbert.finetune.train import finetune

SASREC = "SASRec (RecBole 1.2.1)"
PEERS = (SASREC, "SASRec (own, loss at every position)", "recency item-kNN")  # the bars: the best of them
ROW_ORDER = (
    "popularity",
    "interestbert untrained (zero-shot)",
    "zero-shot: text cosine + popularity prior",
    "frozen encoder + strategy head",
    "frozen encoder + sequence head",
    "interestbert fine-tuned",
    "interestbert fine-tuned + sequence head",
    *reversed(PEERS),
)


def tied_share(verbaliser: Verbaliser, split) -> float:
    """Share of test targets whose timestamp equals the event before (their order is the file's)."""
    pos = verbaliser.offsets[split.test.users] + split.test.ends
    return float((verbaliser.timestamps[pos] == verbaliser.timestamps[pos - 1]).mean())


def run_dataset(
    name: str,
    data_dir: Path,
    out: Path,
    smoke: bool,
    recbole_python: str | None,
    sasrec_dir: Path | None,
    head_warmup: int = FinetuneArguments.head_warmup_epochs,
    minutes: float | None = None,
    peer_minutes: float = 20.0,
    reuse_frozen: bool = True,
) -> dict:
    import peers  # it imports this module's constants

    spec = DATASETS[name]
    folder = data_dir_of(name, data_dir)
    data = load_card_data(name, folder)
    base = InterestEncoder.from_pretrained(DEFAULT_BASE_MODEL, max_seq_length=MAX_SEQ_LENGTH)
    verbaliser = Verbaliser(data, base.tokenizer, MAX_SEQ_LENGTH)
    split = leave_one_out(verbaliser)
    test = split.test if not smoke else split.test.subset(slice(0, 200))
    rows: dict[str, dict] = {}

    rows["popularity"] = {**evaluate(popularity_scorer(verbaliser, split, "test"), test), "train_seconds": 0.0}

    start = time.perf_counter()
    zero = evaluate(scorer_for(base, verbaliser, "text"), test, show_progress_bar=True)
    rows["interestbert untrained (zero-shot)"] = {
        **zero,
        "train_seconds": 0.0,
        "score_seconds": round(time.perf_counter() - start, 1),
    }

    # the peers first: the frozen encoder's sequence head is the fine-tuned one's when the run keeps step 0
    rows.update(peer_rows(name, verbaliser, split, smoke, peer_minutes))
    model_dir = out / "models" / name
    args = FinetuneArguments(
        card=name,
        data_dir=str(folder),
        output_dir=str(model_dir),
        overwrite_output_dir=True,
        max_seq_length=MAX_SEQ_LENGTH,
        max_train_prefixes_per_user=spec["prefixes"],
        per_device_train_batch_size=32,
        max_steps=10 if smoke else spec["max_steps"],
        max_time_minutes=minutes or spec["minutes"],
        eval_steps=5 if smoke else 50,
        max_eval_users=100 if smoke else 600,
        early_stopping_patience=3,
        save_steps=10**9,
        do_test=False,
        learning_rate=LORA_LR,
        head_learning_rate=HEAD_LR,
        warmup_ratio=0.1,
        head_warmup_epochs=head_warmup,
        sequence_head=False,
        sequence_epochs=peer_epochs(smoke),
        sequence_max_minutes=sequence_minutes(name),
        sequence_max_events=sequence_events(name),
        disable_tqdm=True,
        seed=42,
    )
    results = finetune(args)
    tuned = InterestEncoder.from_pretrained(model_dir, max_seq_length=MAX_SEQ_LENGTH).merge_adapter()
    strategy = evaluate(scorer_for(tuned, verbaliser, "strategy"), test)
    rows["interestbert fine-tuned"] = {
        **strategy,
        "train_seconds": results["train_runtime_s"],
        "steps": results["global_step"],
        "best_step": results["best_step"],
    }
    rows["interestbert fine-tuned + sequence head"] = fine_tuned_sequence_row(
        verbaliser, split, test, tuned, args, results, rows[peers.FROZEN_ROW] if reuse_frozen else None
    )
    sasrec = run_sasrec(name, folder, out, recbole_python, sasrec_dir, smoke)
    if sasrec is not None:
        rows[SASREC] = sasrec_row(name, sasrec, test_user_ids(verbaliser, test))
    return {
        "dataset": name,
        "users": len(test),
        "items": split.n_items,
        "skipped_users": split.skipped_users,
        "test_targets_tied_with_previous_event": round(tied_share(verbaliser, split), 4),
        "schedule": {
            "max_seq_length": MAX_SEQ_LENGTH,
            "train_prefixes_per_user": spec["prefixes"],
            "learning_rate": LORA_LR,
            "head_learning_rate": HEAD_LR,
            "head_warmup_epochs": head_warmup,
            "head_warmup_max_examples": args.head_warmup_max_examples,
            "interest_horizons": args.interest_horizons,
            "max_steps": args.max_steps,
            "max_minutes": args.max_time_minutes,
            "batch_size": 32,
            "train_examples": results["train_examples"],
            "sequence_head": {
                **dataclasses.asdict(args.sequence_options()),
                "learning_rate": args.sequence_learning_rate,
                "max_minutes": sequence_minutes(name),
            },
        },
        "hardware": hardware(),
        "rows": rows,
    }


def peer_epochs(smoke: bool) -> int:
    return 2 if smoke else 400


def fine_tuned_sequence_row(
    verbaliser: Verbaliser,
    split,
    test,
    tuned: InterestEncoder,
    args: FinetuneArguments,
    results: dict,
    frozen: dict | None,
) -> dict:
    """The sequence head on the fine-tuned encoder, trained as the frozen row's (`peers.frozen_rows`: same
    options, epochs, patience and time cap). When the run kept step 0 the encoder is the frozen one (the adapter
    never moved: the same item embeddings, bit for bit), so with ``frozen`` (that row) its head is not trained a
    second time: the row is the frozen one's, marked ``reused``."""
    steps = results["train_runtime_s"]
    if frozen is not None and results["best_step"] == 0:
        return {
            **{k: frozen[k] for k in ("hr@10", "ndcg@10", "mrr@10", "n")},
            "train_seconds": steps + frozen["train_seconds"],
            "sequence_epochs": frozen["epochs"],
            "sequence_best_epoch": frozen["best_epoch"],
            "text_prior": frozen.get("text_prior"),
            "reused": "best step 0 (the untrained encoder): the frozen encoder + sequence head row",
        }
    items = tuned.encode(verbaliser.item_texts, batch_size=64)
    tuned.sequence_head, log = train_sequence_head(
        verbaliser, split, items, args.sequence_options(), args.sequence_training(), show_progress_bar=False
    )
    return {
        **evaluate(scorer_for(tuned, verbaliser, "sequence"), test),
        "train_seconds": steps + log["train_runtime_s"],
        "sequence_epochs": log["epochs"],
        "sequence_best_epoch": log["best_epoch"],
        "text_prior": log.get("text_prior"),
    }


def peer_rows(name: str, verbaliser: Verbaliser, split, smoke: bool, minutes: float) -> dict[str, dict]:
    """The rows of `peers.py`, run here on the same split: the recency item-kNN, our own SASRec (``minutes``: its
    time cap), the zero-shot head with its popularity prior, and our heads on the frozen encoder, the sequence
    head with the fine-tuned one's shape and time cap (``--smoke``: a few epochs)."""
    import peers

    if smoke:
        split = dataclasses.replace(
            split, validation=split.validation.subset(slice(0, 200)), test=split.test.subset(slice(0, 200))
        )
    epochs = peer_epochs(smoke)
    options = SequenceOptions(max_events=sequence_events(name))
    rows = {
        peers.KNN_ROW: peers.knn_row(verbaliser, split),
        peers.SASREC_ROW: peers.sasrec_row(name, verbaliser, split, minutes, epochs, patience=20),
    }
    base = InterestEncoder.from_pretrained(DEFAULT_BASE_MODEL, max_seq_length=MAX_SEQ_LENGTH).merge_adapter()
    rows.update(
        peers.frozen_rows(
            verbaliser,
            split,
            base,
            options,
            DATASETS[name]["prefixes"],
            sequence_minutes(name),
            epochs,
            patience=FinetuneArguments.sequence_patience,
        )
    )
    return rows


def run_sasrec(
    name: str, folder: Path, out: Path, recbole_python: str | None, sasrec_dir: Path | None, smoke: bool
) -> dict | None:
    """SASRec's per-user test ranks: run now in RecBole's venv, or read from an earlier run."""
    if recbole_python:
        sys.path.insert(0, str(Path(__file__).parent))
        from recbole_peer import export_split

        export = out / "recbole" / name
        export_split(name, str(folder), str(export))
        result = out / "recbole" / f"{name}.json"
        cmd = [
            recbole_python,
            str(Path(__file__).parent / "recbole_peer.py"),
            "run",
            "--export",
            str(export),
            "--out",
            str(result),
            "--max-minutes",
            "3" if smoke else "30",
        ]
        subprocess.run(cmd, check=True, env={**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
        return json.loads(result.read_text())
    if sasrec_dir is not None and (sasrec_dir / f"{name}.json").is_file():
        return json.loads((sasrec_dir / f"{name}.json").read_text())
    return None


def test_user_ids(verbaliser: Verbaliser, test) -> list[str]:
    return [verbaliser.users[u] for u in test.users.tolist()]


def sasrec_row(name: str, sasrec: dict, user_ids: list[str]) -> dict:
    """The SASRec row from a `recbole_peer.py` result, after checking that it ranked exactly our test users."""
    if sasrec["user_ids"][: len(user_ids)] != user_ids:
        raise RuntimeError(f"{name}: the SASRec run ranked other users than ours; re-export the split.")
    return {
        **RankingMetrics.of(np.asarray(sasrec["ranks"][: len(user_ids)])),
        "train_seconds": sasrec.get("train_seconds"),
        "epochs": sasrec.get("epochs"),
        "best_epoch": sasrec.get("best_epoch"),
        "stop_reason": sasrec.get("stop_reason"),
        "hardware": sasrec.get("hardware"),
        "date": sasrec.get("date"),
    }


def attach_peer(result: dict, data_dir: Path, sasrec_dir: Path | None) -> dict:
    """With ``--report-only --sasrec-dir``: (re)builds the dataset's SASRec row from ``<sasrec-dir>/<card>.json``
    (a peer run beside ours, finished after our rows were written), checked against our test users."""
    path = None if sasrec_dir is None else sasrec_dir / f"{result['dataset']}.json"
    if path is None or not path.is_file():
        return result
    name = result["dataset"]
    data = load_card_data(name, data_dir_of(name, data_dir))
    tokenizer = InterestEncoder.from_pretrained(DEFAULT_BASE_MODEL, max_seq_length=MAX_SEQ_LENGTH).tokenizer
    verbaliser = Verbaliser(data, tokenizer, MAX_SEQ_LENGTH)
    test = leave_one_out(verbaliser).test
    result["rows"][SASREC] = sasrec_row(name, json.loads(path.read_text()), test_user_ids(verbaliser, test))
    return result


def markdown(results: list[dict]) -> str:
    lines = [
        "| dataset | model | HR@10 | NDCG@10 | MRR@10 | NDCG@10 vs the best peer | training time | hardware |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        peer = max((m["ndcg@10"] for model, m in r["rows"].items() if model in PEERS), default=None)
        for model, m in sorted(
            r["rows"].items(), key=lambda kv: ROW_ORDER.index(kv[0]) if kv[0] in ROW_ORDER else len(ROW_ORDER)
        ):
            ratio = f"{m['ndcg@10'] / peer:.2f}x" if peer else "n/a"
            secs = m.get("train_seconds")
            train = "-" if not secs else f"{secs / 60:.1f} min"
            if m.get("stop_reason"):  # the peer: how long it trained and why it stopped (cap or early stopping)
                train += f" ({m['epochs']:g} epochs, best {m['best_epoch']:g}, {m['stop_reason']})"
            where = r["hardware"] if not m.get("hardware") else f"{m['hardware']} ({m.get('date', 'undated')})"
            lines.append(
                f"| {r['dataset']} ({r['users']:,} users) | {model} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} | "
                f"{m['mrr@10']:.4f} | {ratio} | {train} | {where} |"
            )
    notes = [
        f"- {r['dataset']}: {100 * r['test_targets_tied_with_previous_event']:.1f} % of test targets share the "
        f"timestamp of the event before; interest horizons "
        f"{r['schedule'].get('interest_horizons', 'all:1 (a run from before horizons existed)')}; schedule "
        f"{r['schedule']}; {r.get('date', 'date not recorded')}"
        for r in results
    ]
    return "\n".join(lines + ["", *notes]) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "quality"))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--recbole-python", default=None, help="Python of RecBole's venv: run SASRec now.")
    parser.add_argument(
        "--sasrec-dir",
        default=None,
        help="Folder of recbole_peer.py results (<card>.json): read after our rows; with --report-only "
        "they replace the saved SASRec rows (a peer run beside ours, checked user by user).",
    )
    parser.add_argument("--smoke", action="store_true", help="A few steps on 200 users, to check the script.")
    parser.add_argument(
        "--head-warmup-epochs",
        type=int,
        default=FinetuneArguments.head_warmup_epochs,
        help="Fit the head on frozen vectors first (0: off).",
    )
    parser.add_argument("--train-minutes", type=float, default=None, help="Override the per-dataset time cap.")
    parser.add_argument("--peer-minutes", type=float, default=20.0, help="Time cap of our SASRec (peers.py).")
    parser.add_argument(
        "--no-reuse-frozen",
        dest="reuse_frozen",
        action="store_false",
        help="Train the fine-tuned encoder's sequence head even when the run kept step 0 (by default "
        "that row is then the frozen encoder's: the same encoder).",
    )
    parser.add_argument("--report-only", action="store_true", help="Rebuild quality.md from the saved JSON files.")
    args = parser.parse_args(argv)
    out = Path(args.out)
    sasrec_dir = Path(args.sasrec_dir) if args.sasrec_dir else None
    command = "python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in [] if args.report_only else args.datasets:
        started = time.perf_counter()
        result = run_dataset(
            name,
            Path(args.data_dir),
            out,
            args.smoke,
            args.recbole_python,
            sasrec_dir,
            args.head_warmup_epochs,
            args.train_minutes,
            args.peer_minutes,
            args.reuse_frozen,
        )
        result.update(command=command, date=dt.date.today().isoformat(), seconds=round(time.perf_counter() - started))
        write_json(out / f"{name}.json", result)
        print(markdown([result]), flush=True)
    done = read_results(out, DATASETS)
    if args.report_only:
        done = [attach_peer(r, Path(args.data_dir), sasrec_dir) for r in done]
        for r in done:
            write_json(out / f"{r['dataset']}.json", r)
    write_json(out / "quality.json", done)
    atomic_write_text(out / "quality.md", markdown(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
