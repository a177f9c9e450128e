"""Where a fine-tuning step spends its time: the baseline ("before") half of the training-throughput work.

On one shared dataset, with the defaults of `interestbert finetune` (interest horizons ``1:0.5,4:0.3,all:0.2``, the
contrastive term on the next item's text) and a fixed seed, it times --steps whole optimizer steps (`step_loss`,
backward, clip, AdamW) and, on the same batches, each encoder pass of a step on its own: one forward + backward per
interest horizon and one for the item texts. For every pass it counts the real tokens and the padded tokens the
forward computes, so the table says how much of a step is each horizon, the item texts, and padding.

    python benchmarks/train_step.py [--dataset amazon-beauty] [--steps 8] [--max-seq-length 128]

Results: ``benchmarks/results/train_step.json`` and ``.md``. Timings are medians over the steps, on this machine's
threads; compare figures of one run only.
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
from interestbert.finetune.steps import history_inputs  # noqa: E402

DATASETS = {"amazon-beauty": "amazon-beauty-10core", "amazon-office": "amazon-office-2014-5core",
            "movielens-100k": "ml-100k", "movielens-1m": "ml-1m"}


def _pass(st, tokens: dict) -> tuple[float, int, int]:
    """Seconds of one forward + backward of ``tokens`` through the encoder (a surrogate loss), real and padded
    tokens."""
    start = time.perf_counter()
    emb = st(tokens)["sentence_embedding"]
    emb.sum().backward()
    seconds = time.perf_counter() - start
    return seconds, int(tokens["attention_mask"].sum()), int(tokens["attention_mask"].numel())


def measure(dataset: str, data_root: Path, steps: int, max_seq_length: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        args = FinetuneArguments(card=dataset, data_dir=str(data_root / DATASETS[dataset]), output_dir=tmp,
                                 max_seq_length=max_seq_length, per_device_train_batch_size=batch,
                                 max_steps=steps, eval_steps=10**9, save_steps=10**9, head_warmup_epochs=0,
                                 do_test=False, disable_tqdm=True, seed=0, max_eval_users=10,
                                 max_train_prefixes_per_user=4)
        run = train_module.build(args)
        batches = train_module.epoch_batches(run, 0)[:steps]
        st = run.module.st
        whole, parts = [], {}
        for step, idx in enumerate(batches):
            start = time.perf_counter()
            loss, _ = train_module.step_loss(run, idx, step)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(run.module.parameters(), 1.0)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
            whole.append(time.perf_counter() - start)
            ex = run.split.train.subset(np.asarray(idx))
            for (events, _), (tokens, _, _) in zip(run.encoder.horizons, history_inputs(run, ex)):
                parts.setdefault(f"horizon {events or 'all'}", []).append(_pass(st, tokens))
            item_texts = [run.verbaliser.item_texts[i] for i in ex.targets.tolist()]
            items = dict(run.encoder.tokenizer(item_texts, padding=True, truncation=True,
                                               max_length=args.max_item_length, return_tensors="pt"))
            parts.setdefault("item texts", []).append(_pass(st, items))
            run.optimizer.zero_grad(set_to_none=True)
    rows = []
    total_pass = sum(statistics.median(s for s, _, _ in v) for v in parts.values())
    for name, values in parts.items():
        seconds = statistics.median(s for s, _, _ in values)
        real, padded = sum(r for _, r, _ in values), sum(p for _, _, p in values)
        rows.append({"pass": name, "median_s": round(seconds, 3), "share_of_passes": round(seconds / total_pass, 3),
                     "real_tokens_per_step": round(real / len(values)),
                     "padded_tokens_per_step": round(padded / len(values)),
                     "padding_share": round(1 - real / padded, 3)})
    step_s = statistics.median(whole[1:] or whole)  # the first step warms up
    real = sum(r["real_tokens_per_step"] for r in rows)
    return {"dataset": dataset, "steps": steps, "batch": batch, "max_seq_length": max_seq_length,
            "interest_horizons": args.interest_horizons, "step_s": round(step_s, 3),
            "steps_per_s": round(1 / step_s, 3), "real_tokens_per_s": round(real / step_s),
            "passes_s": round(total_pass, 3), "passes": rows}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# One fine-tuning step, part by part ({m['date']})", "",
             f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), load "
             f"{m['load_average_at_start']:.1f} at start. `{res['command']}`", ""]
    for r in res["runs"]:
        lines += [f"## {r['dataset']}: batch {r['batch']}, max_seq_length {r['max_seq_length']}, horizons "
                  f"`{r['interest_horizons']}`", "",
                  f"Whole step (median of {r['steps'] - 1}): {r['step_s']:.2f} s = {r['steps_per_s']:.2f} steps/s, "
                  f"{r['real_tokens_per_s']:,} real tokens/s; the passes below, timed alone on the same batches, sum "
                  f"to {r['passes_s']:.2f} s.", "",
                  "| pass (forward + backward) | median s | share of passes | real tokens / step | padded tokens / "
                  "step | padding |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {p['pass']} | {p['median_s']:.3f} | {100 * p['share_of_passes']:.0f} % | "
                  f"{p['real_tokens_per_step']:,} | {p['padded_tokens_per_step']:,} | {100 * p['padding_share']:.0f} % |"
                  for p in r["passes"]]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--datasets", nargs="+", default=["amazon-beauty"], choices=sorted(DATASETS))
    parser.add_argument("--steps", type=int, default=8)
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
           "runs": [measure(d, args.data_dir, args.steps, args.max_seq_length, args.batch) for d in args.datasets]}
    res["machine"]["load_average_at_end"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "train_step.json", res)
    atomic_write_text(args.out / "train_step.md", markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
