"""SASRec from RecBole 1.2.1 as a peer, on exactly our leave-one-out split and our ranking protocol.

Two roles in one file:

- ``export_split(card, data_dir, out_dir)``, imported from the project's virtual environment (this module imports
  neither recbole nor torch at module level), writes RecBole atomic files for a card::

      <out_dir>/ib_<card>/ib_<card>.inter   user_id:token  item_id:token  timestamp:float
      <out_dir>/ib_<card>/items.json        our catalogue, in order (catalogue index -> item id)
      <out_dir>/ib_<card>/users.json        our users with >= 3 events, in our order (first appearance)
      <out_dir>/ib_<card>/meta.json         card, counts

  Tokens are our own indices (``u<user position>``, ``i<catalogue index>``), so no id can be mangled by pandas
  (``NA``, quotes, tabs) and mapping RecBole's internal ids back to our catalogue index is exact. The timestamp is
  the event's position in the user's history (0, 1, 2, ...): RecBole's time order is then exactly ours (ties
  in file order), and its float32 timestamps cannot merge two events. The name is never ``ml-100k`` (RecBole
  would silently load its bundled copy instead).

- ``python benchmarks/recbole_peer.py run --export DIR --out results.json`` (run with RecBole's own virtual
  environment, e.g. /work/recbole-venv/bin/python, with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1) trains RecBole's SASRec
  (CE loss, RecBole's defaults) on RecBole's leave-one-out split (``LS: valid_and_test``, ``TO``), stops early on
  our validation NDCG@10 (seen items masked, see below), then ranks every user's test target with our rule and
  writes JSON with the per-user ranks.

Our protocol (DESIGN.md, "Evaluation protocol"; finetune/metrics.py, finetune/data.py): full ranking over the
whole catalogue; the user's already-seen items (history before the target, minus the target itself) get -inf;
rank = items scored strictly higher + tied items with a smaller catalogue index. RecBole 1.2.1 does not mask
seen items for sequential models in full-sort evaluation, so this script never uses RecBole's evaluator: it calls
``model.full_sort_predict`` and masks and ranks itself, for validation (early stopping) and test alike.

Example::

    .venv/bin/python -c "import sys; sys.path.insert(0, 'benchmarks'); import recbole_peer; \\
        print(recbole_peer.export_split('amazon-beauty', '../shared/data/amazon-beauty-10core', '/tmp/rb'))"
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 /work/recbole-venv/bin/python benchmarks/recbole_peer.py run \\
        --export /tmp/rb/ib_amazon-beauty --out benchmarks/results/sasrec/amazon-beauty.json

or both steps at once (the export runs in the project's venv as a subprocess)::

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 /work/recbole-venv/bin/python benchmarks/recbole_peer.py run \\
        --card amazon-beauty --data-dir ../shared/data/amazon-beauty-10core --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sys
import time
from pathlib import Path

MODEL = "SASRec (RecBole 1.2.1)"
MIN_EVENTS = 3  # as finetune/data.py
K = 10

# RecBole's SASRec defaults (properties/model/SASRec.yaml), spelt out so the JSON records them.
SASREC = {
    "n_layers": 2,
    "n_heads": 2,
    "hidden_size": 64,
    "inner_size": 256,
    "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "initializer_range": 0.02,
    "loss_type": "CE",
}


def dataset_name(card: str) -> str:
    """RecBole dataset name for a card: ``ib_<card>`` (never ``ml-100k``)."""
    name = "ib_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(card)).name)
    assert name != "ml-100k"
    return name


# ------------------------------------------------------------------------------------------------------- export


def export_split(card: str, data_dir: str, out_dir: str) -> dict:
    """Writes a card's events as RecBole atomic files under ``<out_dir>/ib_<card>/``; returns counts.

    Keeps users with >= 3 events (the others cannot be split, as in `leave_one_out`), in our order, each
    user's events in our order, with the position in the history as timestamp.
    """
    from interestbert.encoder.cards import load_card_data
    from interestbert.encoder.files import atomic_write_text

    data = load_card_data(card, data_dir)
    catalogue = list(data.items["item_id"])
    index = {item: i for i, item in enumerate(catalogue)}
    users = list(data.events["user_id"])
    items = list(data.events["item_id"])

    # events are sorted by user (first appearance), then time, ties in file order: runs of equal user ids
    runs: list[tuple[str, int, int]] = []  # (user, start, end)
    start = 0
    for i in range(1, len(users) + 1):
        if i == len(users) or users[i] != users[start]:
            runs.append((users[start], start, i))
            start = i
    if len({u for u, _, _ in runs}) != len(runs):
        raise ValueError(f"card {card}: events are not grouped by user")

    name = dataset_name(card)
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    kept: list[str] = []
    n_events = 0
    n_3 = 0
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user, a, b in runs:
        if b - a < MIN_EVENTS:
            continue
        token = f"u{len(kept)}"
        kept.append(user)
        n_3 += b - a == MIN_EVENTS
        for pos, j in enumerate(range(a, b)):
            lines.append(f"{token}\ti{index[items[j]]}\t{pos}")
        n_events += b - a
    atomic_write_text(folder / f"{name}.inter", "\n".join(lines) + "\n")
    atomic_write_text(folder / "items.json", json.dumps(catalogue))
    atomic_write_text(folder / "users.json", json.dumps(kept))
    counts = {
        "card": str(card),
        "dataset": name,
        "folder": str(folder),
        "users": len(kept),
        "skipped_users": len(runs) - len(kept),
        "users_with_exactly_3_events": n_3,
        "events": n_events,
        "catalogue": len(catalogue),
        "items_with_events": len({items[j] for u, a, b in runs if b - a >= MIN_EVENTS for j in range(a, b)}),
        "last_event_tied_share": data.stats.get("last_event_tied_share"),
    }
    atomic_write_text(folder / "meta.json", json.dumps(counts, indent=1))
    return counts


# ---------------------------------------------------------------------------------------------------------- run


def target_ranks(scores, targets):
    """0-based rank of ``targets[i]`` in ``scores[i]``: strictly higher + tied with a smaller catalogue index.

    The same rule as `interestbert.finetune.metrics.target_ranks` (copied: that package is not installed in
    RecBole's environment).
    """
    import torch

    target_scores = scores.gather(1, targets[:, None])
    above = (scores > target_scores).sum(dim=1)
    index = torch.arange(scores.shape[1], device=scores.device)[None, :]
    tied_before = ((scores == target_scores) & (index < targets[:, None])).sum(dim=1)
    return above + tied_before


def metrics(ranks) -> dict:
    """HR@10, NDCG@10, MRR@10 as `RankingMetrics.compute`."""
    import numpy as np

    ranks = np.asarray(ranks, dtype=np.int64)
    hit = ranks < K
    return {
        f"hr@{K}": float(hit.mean()),
        f"ndcg@{K}": float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()),
        f"mrr@{K}": float(np.where(hit, 1.0 / (ranks + 1.0), 0.0).mean()),
        "n": int(len(ranks)),
    }


class _Deadline:
    """Wraps RecBole's train dataloader: stops yielding batches once the wall-clock deadline has passed or a
    SIGTERM/SIGINT has arrived (the run then still evaluates its best model and writes its results)."""

    def __init__(self, loader, deadline: float):
        self.loader, self.deadline = loader, deadline
        self.batches = 0
        self.cut = False
        self.signal = None

    def stop(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __iter__(self):
        self.batches, self.cut = 0, False
        for batch in self.loader:
            if time.time() >= self.deadline or self.signal:
                self.cut = True
                return
            self.batches += 1
            yield batch

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)


class Ranker:
    """Our ranking of one RecBole evaluation split (valid or test): one row per user, seen items masked."""

    def __init__(self, eval_dataset, dataset, sequences: list[list[int]], n_catalogue: int, which: str):
        import numpy as np
        import torch

        feat = eval_dataset.inter_feat
        uid_tokens = dataset.field2id_token[dataset.uid_field]
        iid_tokens = dataset.field2id_token[dataset.iid_field]
        # RecBole internal item id -> our catalogue index (index 0 is [PAD])
        self.to_ours = torch.tensor([int(t[1:]) for t in iid_tokens[1:]], dtype=torch.long)
        self.n_catalogue = n_catalogue
        users = np.array([int(uid_tokens[u][1:]) for u in feat[dataset.uid_field].tolist()])
        order = np.argsort(users, kind="stable")  # our user order
        self.feat = feat[torch.as_tensor(order)]
        self.users = users[order]
        if len(self.users) != len(sequences) or not np.array_equal(self.users, np.arange(len(sequences))):
            raise RuntimeError(
                f"RecBole's {which} split has {len(self.users)} rows for {len(sequences)} users, "
                "or not one row per user"
            )
        offset = {"valid": 2, "test": 1}[which]
        ends = np.array([len(s) - offset for s in sequences])  # history length = target position
        expected = np.array([s[e] for s, e in zip(sequences, ends)])
        got = self.to_ours[self.feat[dataset.iid_field] - 1].numpy()
        if not np.array_equal(got, expected):
            raise RuntimeError(f"RecBole's {which} targets differ from ours for {(got != expected).sum()} users")
        # the model's input: the last <= MAX_ITEM_LIST_LENGTH items of the history, in order
        seq = self.feat[dataset.item_id_list_field]
        lens = self.feat[dataset.item_list_length_field]
        for r in range(len(sequences)):
            hist = sequences[r][: ends[r]]
            n = int(lens[r])
            if n != min(len(hist), seq.shape[1]) or self.to_ours[seq[r, :n] - 1].tolist() != hist[len(hist) - n :]:
                raise RuntimeError(f"RecBole's {which} input sequence for user {r} is not the history we use")
        self.targets = torch.as_tensor(expected, dtype=torch.long)
        self.seen = []  # per user: catalogue indices of the history, minus the target
        for s, e, t in zip(sequences, ends, expected):
            h = np.unique(np.asarray(s[:e], dtype=np.int64))
            self.seen.append(h[h != t])

    def ranks(self, model, batch_size: int = 256, mask_seen: bool = True):
        import numpy as np
        import torch

        model.eval()
        out = []
        with torch.no_grad():
            for a in range(0, len(self.users), batch_size):
                inter = self.feat[a : a + batch_size].to(model.device)
                raw = model.full_sort_predict(inter).float().cpu()  # (b, n_recbole_items) incl. [PAD] at 0
                scores = torch.full((raw.shape[0], self.n_catalogue), float("-inf"))
                scores[:, self.to_ours] = raw[:, 1:]  # items RecBole never saw stay at -inf
                rows = [r for r, h in enumerate(self.seen[a : a + batch_size]) for _ in h]
                if rows and mask_seen:
                    scores[torch.tensor(rows), torch.from_numpy(np.concatenate(self.seen[a : a + batch_size]))] = float(
                        "-inf"
                    )
                out.append(target_ranks(scores, self.targets[a : a + batch_size]))
        return torch.cat(out).numpy()


def run(args) -> dict:
    import logging
    import tempfile

    import numpy as np
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset
    from recbole.data.utils import create_samplers, get_dataloader
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    # Importing recbole.model.sequential_recommender imports sine.py, which turns on autograd's anomaly detection
    # for the whole process at import time: a pure slowdown (backward ~10x slower here). Turn it off again.
    torch.autograd.set_detect_anomaly(False)

    export = Path(args.export).resolve()
    out = Path(args.out).resolve()
    meta = json.loads((export / "meta.json").read_text())
    name = meta["dataset"]
    catalogue = json.loads((export / "items.json").read_text())
    user_ids = json.loads((export / "users.json").read_text())
    sequences: list[list[int]] = [[] for _ in user_ids]
    with open(export / f"{name}.inter") as f:
        next(f)
        for line in f:
            u, i, _ = line.rstrip("\n").split("\t")
            sequences[int(u[1:])].append(int(i[1:]))

    if args.threads:
        torch.set_num_threads(args.threads)  # 1 is several times faster than 2 on a 2-core box that is also busy
    cwd = os.getcwd()
    scratch = tempfile.TemporaryDirectory(prefix="recbole-peer-")
    os.chdir(scratch.name)  # RecBole's Trainer writes log_tensorboard/ and saved/ under the working directory
    try:
        config_dict = {
            "data_path": str(export.parent),
            "checkpoint_dir": os.path.join(scratch.name, "saved"),
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "user_inter_num_interval": "[0,inf)",
            "item_inter_num_interval": "[0,inf)",
            "MAX_ITEM_LIST_LENGTH": 50,
            **SASREC,
            "train_neg_sample_args": None,  # required by the CE loss
            "epochs": args.epochs,
            "train_batch_size": 256,
            "learning_rate": 1e-3,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "metrics": ["Hit", "NDCG", "MRR"],
            "topk": [K],
            "valid_metric": "NDCG@10",
            "stopping_step": args.patience,
            "eval_batch_size": 256,
            "use_gpu": args.device != "cpu",
            "seed": args.seed,
            "reproducibility": True,
            "show_progress": False,
            "state": "WARNING",
        }
        argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config would parse our --key=value options
        try:
            config = Config(model="SASRec", dataset=name, config_dict=config_dict)
        finally:
            sys.argv = argv
        init_seed(config["seed"], config["reproducibility"])
        logging.basicConfig(level=logging.WARNING)
        t0 = time.time()
        dataset = create_dataset(config)
        train_ds, valid_ds, test_ds = dataset.build()
        # RecBole's leave-one-out keeps one row in training for a user with exactly 2 prefixes (3 events) and
        # gives them no validation row; ours puts those 2 in validation and test. Drop such training rows, and
        # fail loudly if a user lacks a validation row.
        tf = train_ds.inter_feat
        uids = dataset.field2id_token[dataset.uid_field]
        pos = tf[dataset.time_field].numpy()
        n_user = np.array([len(sequences[int(uids[u][1:])]) for u in tf[dataset.uid_field].tolist()])
        keep = pos <= n_user - 3
        dropped = int((~keep).sum())
        if dropped:
            train_ds.inter_feat = tf[torch.as_tensor(np.flatnonzero(keep))]
        n_train_expected = sum(max(len(s) - 3, 0) for s in sequences)
        if len(train_ds) != n_train_expected:
            raise RuntimeError(f"RecBole has {len(train_ds)} training prefixes, our split {n_train_expected}")
        train_sampler, _, _ = create_samplers(config, dataset, [train_ds, valid_ds, test_ds])
        train_data = get_dataloader(config, "train")(config, train_ds, train_sampler, shuffle=config["shuffle"])
        valid = Ranker(valid_ds, dataset, sequences, len(catalogue), "valid")
        test = Ranker(test_ds, dataset, sequences, len(catalogue), "test")
        prep_seconds = time.time() - t0
        print(
            f"[{name}] RecBole data ready in {prep_seconds:.1f}s: {len(user_ids)} users, "
            f"{dataset.item_num - 1} items seen by RecBole of {len(catalogue)} in our catalogue, "
            f"{len(train_ds)} training prefixes ({dropped} dropped to match our split)",
            flush=True,
        )

        init_seed(config["seed"], config["reproducibility"])
        model = SASRec(config, train_data.dataset).to(config["device"])
        trainer = Trainer(config, model)
        t_train = time.time()
        deadline = t_train + 60 * args.max_minutes if args.max_minutes else float("inf")
        loader = _Deadline(train_data, deadline)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, loader.stop)
        best, best_state, best_epoch, bad = -1.0, None, 0, 0
        history = []
        epochs_done, stop_reason = 0, "epochs"
        for epoch in range(args.epochs):
            te = time.time()
            loss = trainer._train_epoch(loader, epoch, show_progress=False)
            if loader.batches == 0:
                stop_reason = loader.signal or "max_minutes"
                break
            partial = loader.cut
            epochs_done += 1 if not partial else loader.batches / len(train_data)
            v = metrics(valid.ranks(model))
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": float(loss) / max(loader.batches, 1),
                    "seconds": round(time.time() - te, 1),
                    "partial": partial,
                    **{k: round(x, 5) for k, x in v.items() if k != "n"},
                }
            )
            print(f"[{name}] epoch {epoch + 1}{' (partial)' if partial else ''}: {history[-1]}", flush=True)
            if v["ndcg@10"] > best:
                best, best_epoch, bad = v["ndcg@10"], epoch + 1, 0
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            else:
                bad += 1
            if partial or loader.signal or time.time() >= deadline:
                stop_reason = loader.signal or "max_minutes"
                break
            if bad >= args.patience:
                stop_reason = "early_stopping"
                break
        train_seconds = time.time() - t_train
        if best_state is not None:
            model.load_state_dict(best_state)
        valid_ranks = valid.ranks(model)
        test_ranks = test.ranks(model)
        # for the record: seen items left in, as RecBole 1.2.1's own evaluator does for SASRec
        test_unmasked = metrics(test.ranks(model, mask_seen=False))
    finally:
        os.chdir(cwd)
        scratch.cleanup()

    result = {
        "model": MODEL,
        "card": meta["card"],
        "ranks": test_ranks.tolist(),
        "user_ids": user_ids,
        **{k: v for k, v in metrics(test_ranks).items() if k != "n"},
        "n_users": len(user_ids),
        "train_seconds": round(train_seconds, 1),
        "prep_seconds": round(prep_seconds, 1),
        "epochs": round(epochs_done, 3),
        "best_epoch": best_epoch,
        "stop_reason": stop_reason,
        "best_valid_ndcg@10": best,
        "valid": metrics(valid_ranks),
        "test_without_seen_mask": test_unmasked,
        "history": history,
        "config": {
            **SASREC,
            "MAX_ITEM_LIST_LENGTH": 50,
            "train_batch_size": 256,
            "learning_rate": 1e-3,
            "optimizer": "adam",
            "max_epochs": args.epochs,
            "patience": args.patience,
            "max_minutes": args.max_minutes,
            "seed": args.seed,
            "eval_args": config_dict["eval_args"],
            "seen_items_masked": True,
            "tie_rule": "strictly higher + tied with a smaller catalogue index",
            "training_prefixes": len(train_ds),
            "recbole_items": int(dataset.item_num - 1),
            "catalogue": len(catalogue),
        },
        "hardware": _hardware(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


def _hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"{'cuda' if torch.cuda.is_available() else 'cpu'}"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write RecBole atomic files (project venv)")
    e.add_argument("--card", required=True)
    e.add_argument("--data-dir", required=True)
    e.add_argument("--out-dir", required=True)
    r = sub.add_parser("run", help="train and rank with RecBole (RecBole venv)")
    r.add_argument("--export", help="folder written by export_split (<out_dir>/ib_<card>)")
    r.add_argument("--card", help="instead of --export: export first, with --data-dir and --project-python")
    r.add_argument("--data-dir")
    r.add_argument("--project-python", default=str(Path(__file__).resolve().parents[1] / ".venv/bin/python"))
    r.add_argument("--out", required=True)
    r.add_argument("--epochs", type=int, default=200)
    r.add_argument("--patience", type=int, default=5)
    r.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock cap on training (a partial last epoch is kept and evaluated)",
    )
    r.add_argument("--device", default="cpu")
    r.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's default)")
    r.add_argument("--seed", type=int, default=2020)
    args = p.parse_args(argv)
    if args.cmd == "export":
        print(json.dumps(export_split(args.card, args.data_dir, args.out_dir), indent=1))
        return 0
    if args.export is None:
        if not (args.card and args.data_dir):
            p.error("run needs --export, or --card and --data-dir")
        import subprocess
        import tempfile

        tmp = tempfile.mkdtemp(prefix="recbole-export-")
        subprocess.run(
            [
                args.project_python,
                __file__,
                "export",
                "--card",
                args.card,
                "--data-dir",
                args.data_dir,
                "--out-dir",
                tmp,
            ],
            check=True,
        )
        args.export = os.path.join(tmp, dataset_name(args.card))
    res = run(args)
    print(
        json.dumps(
            {
                k: res[k]
                for k in (
                    "model",
                    "card",
                    "n_users",
                    "hr@10",
                    "ndcg@10",
                    "mrr@10",
                    "train_seconds",
                    "epochs",
                    "best_epoch",
                    "stop_reason",
                    "best_valid_ndcg@10",
                )
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
