"""Time before the first training step, with the encodings that train nothing in fp32 vs at `--encode_precision
auto` (bf16 where the hardware computes it), in one run, on the same data and seed.

`interestbert finetune` encodes before it trains: the catalogue's item texts (a new head's start) and the histories of
up to `--head_warmup_max_examples` (20,000) training prefixes and of the validation users (the head warm-up), then
fits the head alone. `build` does all of that; this script times it for each precision (the order alternates
per repeat) and scores the warmed-up head on the validation users, so the table shows what the faster encodings cost
in quality (nothing, if the two NDCG@10 agree to the noise of bf16).

    python benchmarks/before_training.py --data-dir ../shared/data [--datasets amazon-beauty] [--repeats 1]

Results: ``<out>/before_training.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, data_dir_of, hardware  # noqa: E402
from results_io import write_report  # noqa: E402

from interestbert.encoder.backends import resolve_precision  # noqa: E402
from interestbert.finetune import train as train_module  # noqa: E402
from interestbert.finetune.args import FinetuneArguments  # noqa: E402

PRECISIONS = ("fp32", "auto")


def measure(dataset: str, data_dir: Path, repeats: int) -> dict:
    spec = DATASETS[dataset]
    runs = {p: [] for p in PRECISIONS}
    for r in range(repeats):
        for precision in PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]:
            with tempfile.TemporaryDirectory() as tmp:
                args = FinetuneArguments(
                    card=dataset,
                    data_dir=str(data_dir_of(dataset, data_dir)),
                    output_dir=tmp,
                    max_seq_length=128,
                    max_train_prefixes_per_user=spec["prefixes"],
                    disable_tqdm=True,
                    encode_precision=precision,
                    seed=42,
                )
                start = time.perf_counter()
                run = train_module.build(args)
                seconds = time.perf_counter() - start
                ndcg = train_module.evaluate_validation(run, run.validation_interest)["ndcg@10"]
                runs[precision].append({"seconds": round(seconds, 1), "valid_ndcg@10": round(ndcg, 4)})
                print(dataset, precision, runs[precision][-1], flush=True)
    best = {p: min(x["seconds"] for x in v) for p, v in runs.items()}
    return {
        "dataset": dataset,
        "auto_is": resolve_precision("auto")[0],
        "runs": runs,
        "head_warmup_max_examples": FinetuneArguments.head_warmup_max_examples,
        "speedup": round(best["fp32"] / best["auto"], 2),
    }


def markdown(res: dict) -> str:
    lines = [
        f"# Before the first training step: fp32 vs `--encode_precision auto` ({res['date'][:10]})",
        "",
        f"{res['hardware']}; `{res['command']}`. Seconds of `build` (data, item vectors, the head warm-up's "
        "encodings and its fit), best of the repeats; validation NDCG@10 of the warmed-up head.",
        "",
        "| dataset | fp32 | auto | speed-up | valid NDCG@10 fp32 | valid NDCG@10 auto |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in res["results"]:
        runs = r["runs"]
        lines.append(
            f"| {r['dataset']} | {min(x['seconds'] for x in runs['fp32'])} s | "
            f"{min(x['seconds'] for x in runs['auto'])} s (= {r['auto_is']}) | {r['speedup']:.2f}x | "
            f"{runs['fp32'][0]['valid_ndcg@10']:.4f} | {runs['auto'][0]['valid_ndcg@10']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "before_training")
    parser.add_argument("--datasets", nargs="+", default=["amazon-beauty"], choices=sorted(DATASETS))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    res = {
        "command": "python benchmarks/before_training.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "hardware": hardware(),
        "threads": torch.get_num_threads(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "results": [measure(d, args.data_dir, args.repeats) for d in args.datasets],
    }
    write_report(args.out, "before_training", res, markdown(res))


if __name__ == "__main__":
    main()
