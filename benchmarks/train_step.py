"""Training throughput before and after the packed step, in one run, on the same batches and seed.

On one shared dataset, with the defaults of `interestbert finetune` (interest horizons ``1:0.5,4:0.3,all:0.2``, the
contrastive term on the next item's text), two identical runs (same seed, same initial weights, same batches) train
side by side, their steps interleaved: "before" encodes a step's texts as the trainer did until now, one padded
pass per interest horizon plus one for the item texts (``step_loss(..., packed=False)``); "after" is the default,
every distinct text of the step once, length-sorted into chunks. Both take whole optimizer steps (loss, backward,
clip, AdamW); every --eval-every steps both are scored on the same validation users, so the table shows whether
the packed layout learns the same curve (dropout masks differ between layouts, so curves agree within noise only).
No head warm-up: the step is what is measured. ``--variants before after "after, bf16"`` adds a third run: the
packed step under bf16 autocast (what ``--mixed_precision bf16`` runs on a CPU), worth measuring on a CPU with AMX.

    python benchmarks/train_step.py [--datasets amazon-beauty] [--steps 30] [--eval-every 10] [--variants ...]

Results: ``benchmarks/results/train_step.json`` and ``.md``. Step times are medians over the steps after the first;
compare figures of one run only.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_dir_of  # noqa: E402
from results_io import write_report  # noqa: E402

from interestbert.finetune import train as train_module  # noqa: E402
from interestbert.finetune.args import FinetuneArguments  # noqa: E402
from interestbert.finetune.steps import step_inputs  # noqa: E402

DATASETS = ("amazon-beauty", "amazon-office", "movielens-100k", "movielens-1m")
# name: (packed step, bf16 autocast). "after, bf16": the packed step under torch's bf16 autocast, as Accelerate's
# `mixed_precision="bf16"` runs it on a CPU (one process holds one Accelerator state, so it is applied here)
VARIANTS = {"before": (False, False), "after": (True, False), "after, bf16": (True, True)}


def _step(run, batch, step: int, packed: bool, bf16: bool = False) -> tuple[float, float]:
    """One whole optimizer step; its seconds and loss."""
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss, _ = train_module.step_loss(run, batch, step, packed=packed)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.module.parameters(), run.args.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, loss.item()


def measure(
    dataset: str,
    data_root: Path,
    steps: int,
    eval_every: int,
    max_seq_length: int,
    batch: int,
    eval_users: int,
    variants: list[str],
) -> dict:
    layouts = {name: VARIANTS[name][0] for name in variants}  # name: packed
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name in layouts:
            args = FinetuneArguments(
                card=dataset,
                data_dir=str(data_dir_of(dataset, data_root)),
                output_dir=f"{tmp}/{name}",
                max_seq_length=max_seq_length,
                per_device_train_batch_size=batch,
                max_steps=steps,
                head_warmup_epochs=0,
                do_test=False,
                disable_tqdm=True,
                seed=0,
                max_eval_users=eval_users,
                max_train_prefixes_per_user=4,
            )
            torch.manual_seed(0)
            runs[name] = train_module.build(args)
        first = runs[variants[0]]
        batches = train_module.epoch_batches(first, 0)[:steps]
        seconds = {name: [] for name in layouts}
        losses = {name: [] for name in layouts}
        tokens = {name: [] for name in layouts}
        curve = [{"step": 0, **{name: train_module.evaluate_validation(runs[name])["ndcg@10"] for name in layouts}}]
        for step, idx in enumerate(batches):
            ex = first.split.train.subset(np.asarray(idx))
            for name, packed in layouts.items():
                inputs = step_inputs(runs[name], ex, items=True, packed=packed)
                tokens[name].append((inputs.real_tokens, inputs.padded_tokens, len(inputs.restore)))
                runs[name].module.train()
                sec, loss = _step(runs[name], idx, step, packed, VARIANTS[name][1])
                seconds[name].append(sec)
                losses[name].append(loss)
            if (step + 1) % eval_every == 0 or step + 1 == len(batches):
                curve.append(
                    {
                        "step": step + 1,
                        **{name: train_module.evaluate_validation(runs[name])["ndcg@10"] for name in layouts},
                    }
                )
                print(
                    f"{dataset} step {step + 1}: "
                    + ", ".join(
                        f"{n} {statistics.median(seconds[n][1:] or seconds[n]):.2f} s/step, valid ndcg@10 "
                        f"{curve[-1][n]:.4f}"
                        for n in layouts
                    ),
                    flush=True,
                )
    # the step's texts, each horizon apart (what the unpacked layout encodes)
    example_tokens = statistics.mean(
        step_inputs(first, first.split.train.subset(np.asarray(idx)), items=True, packed=False).real_tokens
        for idx in batches
    )
    rows = []
    for name in layouts:
        step_s = statistics.median(seconds[name][1:] or seconds[name])  # the first step warms up
        real, padded = (statistics.mean(t[i] for t in tokens[name]) for i in (0, 1))
        rows.append(
            {
                "layout": name,
                "bf16_autocast": VARIANTS[name][1],
                "step_s": round(step_s, 3),
                "steps_per_s": round(1 / step_s, 3),
                "texts_per_step": round(statistics.mean(t[2] for t in tokens[name]), 1),
                "encoded_real_tokens_per_step": round(real),
                "encoded_padded_tokens_per_step": round(padded),
                "padding_share": round(1 - real / padded, 3),
                "training_tokens_per_s": round(example_tokens / step_s),
                "mean_loss": round(statistics.mean(losses[name]), 4),
            }
        )
    speedup = {r["layout"]: round(rows[0]["step_s"] / r["step_s"], 2) for r in rows[1:]}
    return {
        "dataset": dataset,
        "steps": len(batches),
        "batch": batch,
        "max_seq_length": max_seq_length,
        "interest_horizons": first.args.interest_horizons,
        "eval_users": eval_users,
        "training_tokens_per_step": round(example_tokens),
        "layouts": rows,
        "speedup": speedup,
        "validation_curve": curve,
        "losses": losses,
    }


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"# Training throughput: {' vs '.join(res.get('variants', list(VARIANTS)[:2]))} ({m['date']})",
        "",
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), load "
        f"{m['load_average_at_start']:.1f} at start, {m['load_average_at_end']:.1f} at the end. "
        f"`{res['command']}`",
        "",
    ]
    for r in res["runs"]:
        names = [x["layout"] for x in r["layouts"]]
        speedup = ", ".join(f"{name} {x:.2f}x" for name, x in r["speedup"].items())
        lines += [
            f"## {r['dataset']}: batch {r['batch']}, max_seq_length {r['max_seq_length']}, horizons "
            f"`{r['interest_horizons']}`, {r['steps']} steps each, interleaved",
            "",
            f"**Speed-up over {names[0]}: {speedup}** steps/s (training tokens/s: the "
            f"{r['training_tokens_per_step']:,} "
            "tokens of a step's texts, each horizon counted apart, over the step's seconds).",
            "",
            "| layout | s / step | steps/s | training tokens/s | texts encoded / step | real tokens encoded | "
            "padded tokens | padding | mean loss |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {x['layout']} | {x['step_s']:.2f} | {x['steps_per_s']:.3f} | {x['training_tokens_per_s']:,} | "
            f"{x['texts_per_step']:.0f} | {x['encoded_real_tokens_per_step']:,} | "
            f"{x['encoded_padded_tokens_per_step']:,} | {100 * x['padding_share']:.0f} % | {x['mean_loss']:.4f} |"
            for x in r["layouts"]
        ]
        lines += [
            "",
            f"Validation NDCG@10 ({r['eval_users']:,} users, full ranking), same seed and batches:",
            "",
            "| step | " + " | ".join(names) + " |",
            "| ---: |" + " ---: |" * len(names),
        ]
        lines += [f"| {c['step']} | " + " | ".join(f"{c[n]:.4f}" for n in names) + " |" for c in r["validation_curve"]]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--datasets", nargs="+", default=["amazon-beauty"], choices=sorted(DATASETS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-users", type=int, default=500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["before", "after"],
        choices=list(VARIANTS),
        help="What to compare, side by side; the first is the reference of the speed-up.",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    res = {
        "command": " ".join(["python", "benchmarks/train_step.py", *sys.argv[1:]]),
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg()[0],
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        },
        "variants": args.variants,
        "runs": [
            measure(
                d,
                args.data_dir,
                args.steps,
                args.eval_every,
                args.max_seq_length,
                args.batch,
                args.eval_users,
                args.variants,
            )
            for d in args.datasets
        ],
    }
    res["machine"]["load_average_at_end"] = os.getloadavg()[0]
    write_report(args.out, "train_step", res, markdown(res))


if __name__ == "__main__":
    main()
