"""Does the fast encode path change what a model recommends? Test NDCG@10 of fine-tuned models with their histories
encoded in fp32 (the reference) and by each fast path, on the same users in the same run.

For each dataset (default amazon-beauty and amazon-office, the issue's two): a model is fine-tuned with the quality
benchmark's settings (128 tokens, the default interest horizons, LoRA lr 1e-4, head lr 5e-3) on a shorter CPU
schedule (--max-steps, --minutes, a head warm-up on at most --warmup-examples prefixes), or read from
``--models DIR/<dataset>`` when it is there (a folder saved by `interestbert finetune`). Its strategy head then
ranks the full catalogue for every test user (seen items excluded) with the histories encoded by each
``--configs PRECISION/BACKEND`` (``auto/torch`` is what `interestbert encode` and `recommend` do by default).
(The model is saved as it was after the last step, not at the best validation step, so that its adapter has moved.)
Reported per configuration: HR@10, NDCG@10, MRR@10, the difference to fp32 and whether NDCG@10 equals fp32's to 3
decimals (|difference| < 0.0005), the minimum cosine of the users' interest vectors to fp32's, and the seconds the
scoring took. (The sequence head reads item ids, not text: precision does not touch it.)

Results: ``<out>/fast_path_quality.json`` and ``<out>/fast_path_quality.md``.

    python benchmarks/fast_path_quality.py --data-dir ../shared/data --out benchmarks/results/fast_path_quality
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, HEAD_LR, LORA_LR, MAX_SEQ_LENGTH, data_dir_of, hardware  # noqa: E402
from results_io import write_report  # noqa: E402

from interestbert.encoder.cards import load_card_data  # noqa: E402
from interestbert.encoder.model import InterestEncoder  # noqa: E402
from interestbert.encoder.scoring import scorer_for  # noqa: E402
from interestbert.encoder.verbalise import Verbaliser  # noqa: E402
from interestbert.finetune.args import FinetuneArguments  # noqa: E402
from interestbert.finetune.checkpoint import checkpoint_dirs, load_trainable  # noqa: E402
from interestbert.finetune.data import leave_one_out  # noqa: E402
from interestbert.finetune.evaluate import evaluate  # noqa: E402
from interestbert.finetune.steps import Trainable  # noqa: E402
from interestbert.finetune.train import CHECKPOINTS, finetune  # noqa: E402

CONFIGS = ["fp32/torch", "auto/torch", "bf16/torch", "bf16/openvino"]
EQUAL = 0.0005  # "equal to 3 decimals"


def model_for(name: str, folder: Path, models: Path, args) -> tuple[Path, dict]:
    """The fine-tuned model of a dataset: ``models/<name>`` when it holds one, else trained now and saved there
    as it was after the last step (adapter and head), not the best validation step: on these short schedules that
    is often step 0 (the warmed-up head on the untouched encoder), and the fast path must be checked on an encoder
    whose adapter moved."""
    model_dir = models / name
    if (model_dir / "modules.json").is_file():
        return model_dir, {"trained": "read from " + str(model_dir)}
    spec = DATASETS[name]
    train_dir = models / f"{name}-training"
    results = finetune(
        FinetuneArguments(
            card=name,
            data_dir=str(folder),
            output_dir=str(train_dir),
            overwrite_output_dir=True,
            max_seq_length=MAX_SEQ_LENGTH,
            max_train_prefixes_per_user=spec["prefixes"],
            per_device_train_batch_size=32,
            max_steps=args.max_steps,
            max_time_minutes=args.minutes,
            eval_steps=args.max_steps,
            max_eval_users=300,
            head_warmup_max_examples=args.warmup_examples,
            save_steps=args.max_steps,
            early_stopping_patience=None,
            do_test=False,
            learning_rate=LORA_LR,
            head_learning_rate=HEAD_LR,
            warmup_ratio=0.1,
            disable_tqdm=True,
            seed=42,
        )
    )
    last = checkpoint_dirs(train_dir / CHECKPOINTS)[-1]
    model = InterestEncoder.from_pretrained(train_dir, max_seq_length=MAX_SEQ_LENGTH)
    load_trainable(last, Trainable(model.model, model.head))  # the module the checkpoint's names refer to
    model.save_pretrained(model_dir)
    return model_dir, {
        "trained": "here",
        "steps": results["global_step"],
        "saved": f"after step {last.name}",
        "best_validation_step": results["best_step"],
        "train_seconds": results["train_runtime_s"],
        "max_steps": args.max_steps,
        "max_minutes": args.minutes,
        "head_warmup_max_examples": args.warmup_examples,
    }


def run_dataset(name: str, data_dir: Path, models: Path, configs: list[str], args) -> dict:
    folder = data_dir_of(name, data_dir)
    data = load_card_data(name, folder)
    model_dir, training = model_for(name, folder, models, args)
    model = InterestEncoder.from_pretrained(model_dir, max_seq_length=MAX_SEQ_LENGTH)
    training["lora_B_max_abs"] = max(float(p.abs().max()) for n, p in model.model.named_parameters() if "lora_B" in n)
    model.merge_adapter()
    verbaliser = Verbaliser(data, model.tokenizer, MAX_SEQ_LENGTH)
    test = leave_one_out(verbaliser).test
    rows, vectors = {}, {}
    for config in configs:
        precision, backend = config.split("/")
        resolved = model.resolve_precision(precision, backend)
        model.encode(verbaliser.item_texts[:64], precision=precision, backend=backend)  # the export, once, untimed
        start = time.perf_counter()  # what `evaluate --precision P --backend B` does, its vectors kept
        vectors[config] = model.encode_histories(
            verbaliser, test.users, test.ends, batch_size=64, precision=precision, backend=backend
        )
        metrics = evaluate(scorer_for(model, verbaliser, "strategy"), test, interest=vectors[config])
        seconds = time.perf_counter() - start
        rows[config] = {**metrics, "resolved_precision": resolved, "score_seconds": round(seconds, 1)}
        print(name, config, {k: rows[config][k] for k in ("ndcg@10", "hr@10", "score_seconds")}, flush=True)
    reference = rows[configs[0]]
    for config in configs:
        delta = rows[config]["ndcg@10"] - reference["ndcg@10"]
        rows[config].update(
            ndcg_delta=round(delta, 6),
            equal_to_3_decimals=abs(delta) < EQUAL,
            min_cosine=float((vectors[config] * vectors[configs[0]]).sum(1).min()),
            speedup=round(reference["score_seconds"] / max(rows[config]["score_seconds"], 1e-9), 2),
        )
    return {
        "dataset": name,
        "users": len(test),
        "items": len(verbaliser.item_ids),
        "model": training,
        "interest_horizons": [list(h) for h in model.horizons],
        "reference": configs[0],
        "rows": rows,
        "hardware": hardware(),
        "threads": torch.get_num_threads(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def markdown(results: list[dict], command: str) -> str:
    lines = [
        f"# The fast path's test NDCG@10 against fp32 ({results[0]['date']})",
        "",
        f"{results[0]['hardware']}; `{command}`. Strategy head, full ranking over the catalogue, seen items "
        "excluded; every row of a dataset scores the same users with the same model, only the encoding of their "
        "histories differs.",
        "",
        "| dataset | model | precision/backend | HR@10 | NDCG@10 | MRR@10 | NDCG@10 − fp32 | equal to 3 decimals "
        "| min cosine to fp32 | scoring s | speed-up |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for res in results:
        m = res["model"]
        model = f"fine-tuned here, {m['steps']} steps (adapter moved)" if m["trained"] == "here" else m["trained"]
        for config, row in res["rows"].items():
            shown = config if not config.startswith("auto") else f"{config} (= {row['resolved_precision']})"
            lines.append(
                f"| {res['dataset']} ({res['users']:,} users) | {model} | {shown} | {row['hr@10']:.4f} | "
                f"{row['ndcg@10']:.4f} | {row['mrr@10']:.4f} | {row['ndcg_delta']:+.5f} | "
                f"{'yes' if row['equal_to_3_decimals'] else 'NO'} | {row['min_cosine']:.6f} | "
                f"{row['score_seconds']} | {row['speedup']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "fast_path_quality")
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="Fine-tuned models as MODELS/<dataset> (read when there, else trained there; default OUT/models).",
    )
    parser.add_argument("--datasets", nargs="+", default=["amazon-beauty", "amazon-office"], choices=sorted(DATASETS))
    parser.add_argument(
        "--configs",
        nargs="+",
        default=CONFIGS,
        metavar="PRECISION/BACKEND",
        help="The first is the reference (default fp32/torch).",
    )
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=20.0, help="A cap only: the last step must be reached.")
    parser.add_argument("--warmup-examples", type=int, default=5000)
    args = parser.parse_args(argv)
    models = args.models or args.out / "models"
    command = "python benchmarks/fast_path_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = [run_dataset(name, args.data_dir, models, args.configs, args) for name in args.datasets]
    write_report(
        args.out, "fast_path_quality", {"command": command, "results": results}, markdown(results, command.strip())
    )


if __name__ == "__main__":
    main()
