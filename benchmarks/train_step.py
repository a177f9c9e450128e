"""Training throughput before and after the packed step, in one run, on the same batches and seed.

On one shared dataset, with the defaults of `interestbert finetune` (interest horizons ``1:0.5,4:0.3,all:0.2``, the
contrastive term on the next item's text), two identical runs (same seed, same initial weights, same batches) train
side by side, their steps interleaved: "before" encodes a step's texts as the trainer did until now, one padded
pass per interest horizon plus one for the item texts (``step_loss(..., packed=False)``); "after" is the default,
every distinct text of the step once, length-sorted into chunks. Both take whole optimizer steps (loss, backward,
clip, AdamW); every --eval-every steps both are scored on the same validation users, so the table shows whether
the packed layout learns the same curve (dropout masks differ between layouts, so curves agree within noise only).
No head warm-up: the step is what is measured.

    python benchmarks/train_step.py [--datasets amazon-beauty] [--steps 30] [--eval-every 10]

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
from results_io import write_json  # noqa: E402

from interestbert.encoder.files import atomic_write_text  # noqa: E402
from interestbert.finetune import train as train_module  # noqa: E402
from interestbert.finetune.args import FinetuneArguments  # noqa: E402
from interestbert.finetune.steps import step_inputs  # noqa: E402

DATASETS = {"amazon-beauty": "amazon-beauty-10core", "amazon-office": "amazon-office-2014-5core",
            "movielens-100k": "ml-100k", "movielens-1m": "ml-1m"}
LAYOUTS = {"before": False, "after": True}  # packed


def _step(run, batch, step: int, packed: bool) -> tuple[float, float]:
    """One whole optimizer step; its seconds and loss."""
    start = time.perf_counter()
    loss, _ = train_module.step_loss(run, batch, step, packed=packed)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.module.parameters(), run.args.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, loss.item()


def measure(dataset: str, data_root: Path, steps: int, eval_every: int, max_seq_length: int, batch: int,
            eval_users: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name in LAYOUTS:
            args = FinetuneArguments(card=dataset, data_dir=str(data_root / DATASETS[dataset]),
                                     output_dir=f"{tmp}/{name}", max_seq_length=max_seq_length,
                                     per_device_train_batch_size=batch, max_steps=steps, head_warmup_epochs=0,
                                     do_test=False, disable_tqdm=True, seed=0, max_eval_users=eval_users,
                                     max_train_prefixes_per_user=4)
            torch.manual_seed(0)
            runs[name] = train_module.build(args)
        batches = train_module.epoch_batches(runs["after"], 0)[:steps]
        seconds = {name: [] for name in LAYOUTS}
        losses = {name: [] for name in LAYOUTS}
        tokens = {name: [] for name in LAYOUTS}
        curve = [{"step": 0, **{name: train_module.evaluate_validation(runs[name])["ndcg@10"] for name in LAYOUTS}}]
        for step, idx in enumerate(batches):
            ex = runs["after"].split.train.subset(np.asarray(idx))
            for name, packed in LAYOUTS.items():
                inputs = step_inputs(runs[name], ex, items=True, packed=packed)
                tokens[name].append((inputs.real_tokens, inputs.padded_tokens, len(inputs.restore)))
                runs[name].module.train()
                sec, loss = _step(runs[name], idx, step, packed)
                seconds[name].append(sec)
                losses[name].append(loss)
            if (step + 1) % eval_every == 0 or step + 1 == len(batches):
                curve.append({"step": step + 1, **{name: train_module.evaluate_validation(runs[name])["ndcg@10"]
                                                   for name in LAYOUTS}})
                print(f"{dataset} step {step + 1}: " + ", ".join(
                    f"{n} {statistics.median(seconds[n][1:] or seconds[n]):.2f} s/step, valid ndcg@10 "
                    f"{curve[-1][n]:.4f}" for n in LAYOUTS), flush=True)
    example_tokens = statistics.mean(r for r, _, _ in tokens["before"])  # the step's texts, each horizon apart
    rows = []
    for name in LAYOUTS:
        step_s = statistics.median(seconds[name][1:] or seconds[name])  # the first step warms up
        real, padded = (statistics.mean(t[i] for t in tokens[name]) for i in (0, 1))
        rows.append({"layout": name, "step_s": round(step_s, 3), "steps_per_s": round(1 / step_s, 3),
                     "texts_per_step": round(statistics.mean(t[2] for t in tokens[name]), 1),
                     "encoded_real_tokens_per_step": round(real), "encoded_padded_tokens_per_step": round(padded),
                     "padding_share": round(1 - real / padded, 3),
                     "training_tokens_per_s": round(example_tokens / step_s),
                     "mean_loss": round(statistics.mean(losses[name]), 4)})
    speedup = rows[0]["step_s"] / rows[1]["step_s"]
    return {"dataset": dataset, "steps": len(batches), "batch": batch, "max_seq_length": max_seq_length,
            "interest_horizons": runs["after"].args.interest_horizons, "eval_users": eval_users,
            "training_tokens_per_step": round(example_tokens), "layouts": rows, "speedup": round(speedup, 2),
            "validation_curve": curve, "losses": losses}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Training throughput: one pass per horizon (before) vs the packed step (after) ({m['date']})", "",
             f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), load "
             f"{m['load_average_at_start']:.1f} at start, {m['load_average_at_end']:.1f} at the end. "
             f"`{res['command']}`", ""]
    for r in res["runs"]:
        lines += [f"## {r['dataset']}: batch {r['batch']}, max_seq_length {r['max_seq_length']}, horizons "
                  f"`{r['interest_horizons']}`, {r['steps']} steps each, interleaved", "",
                  f"**Speed-up: {r['speedup']:.2f}x** steps/s (training tokens/s: the {r['training_tokens_per_step']:,} "
                  "tokens of a step's texts, each horizon counted apart, over the step's seconds).", "",
                  "| layout | s / step | steps/s | training tokens/s | texts encoded / step | real tokens encoded | "
                  "padded tokens | padding | mean loss |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {x['layout']} | {x['step_s']:.2f} | {x['steps_per_s']:.3f} | {x['training_tokens_per_s']:,} | "
                  f"{x['texts_per_step']:.0f} | {x['encoded_real_tokens_per_step']:,} | "
                  f"{x['encoded_padded_tokens_per_step']:,} | {100 * x['padding_share']:.0f} % | {x['mean_loss']:.4f} |"
                  for x in r["layouts"]]
        lines += ["", f"Validation NDCG@10 ({r['eval_users']:,} users, full ranking), same seed and batches:", "",
                  "| step | before | after |", "| ---: | ---: | ---: |"]
        lines += [f"| {c['step']} | {c['before']:.4f} | {c['after']:.4f} |" for c in r["validation_curve"]]
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
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    res = {"command": " ".join(["python", "benchmarks/train_step.py", *sys.argv[1:]]),
           "machine": {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
                       "torch_threads": torch.get_num_threads(), "load_average_at_start": os.getloadavg()[0],
                       "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")},
           "runs": [measure(d, args.data_dir, args.steps, args.eval_every, args.max_seq_length, args.batch,
                            args.eval_users) for d in args.datasets]}
    res["machine"]["load_average_at_end"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "train_step.json", res)
    atomic_write_text(args.out / "train_step.md", markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
