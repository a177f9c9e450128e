"""Fine-tune the LoRA encoder and the strategy head on a data card: a plain Accelerate loop.

Runs as ``interestbert finetune --card C --output_dir O ...`` and as ``accelerate launch -m interestbert.finetune
...`` on 1..N processes, CPU or CUDA (bf16 there). Read top to bottom, in the manner of Accelerate's
``complete_nlp_example.py``: `build` (the accelerator, `build_data` with `load_encoder`, the optimizer and the prepared
`DataLoader`), `train` (the loop: `accumulate()` for gradient accumulation, `evaluate_and_keep_best`,
`save_checkpoint`, early stopping; `skip_first_batches` on resume), `finish` (test metrics, all_results.json).
The pieces of one step live in `interestbert.finetune.steps`, the head warm-up in `interestbert.finetune.warmup`,
the zero-shot baseline and the sequence head that `finish` adds in `interestbert.finetune.after_training`.

Data order is a function of (seed, epoch) and negatives of (seed, step), so a run resumed from a checkpoint
continues exactly where it stopped and ends with the same weights as an uninterrupted one. That holds for the
checkpoint Ctrl-C writes too: the first Ctrl-C lets the step in progress finish (with its evaluation) and saves at
that step boundary; a second one stops at once and writes nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from interestbert.encoder.errors import InterestBertError, describe
from interestbert.encoder.hub.folder import RESULTS, ModelFolder
from interestbert.encoder.model import InterestEncoder
from interestbert.encoder.packaged import register_base_model
from interestbert.encoder.scoring import scorer_for

from . import checkpoint as checkpoints
from .after_training import evaluate_zero_shot, hardware, train_and_save_sequence_head
from .args import FinetuneArguments
from .evaluate import evaluate, metrics_table, popularity_scorer
from .run import CHECKPOINTS, Run, build  # noqa: F401 - part of this module's interface
from .steps import EpochOrder, Trainable, example_loader, sample_candidates, step_inputs, step_loss  # noqa: F401
from .warmup import fit_head, warm_up_head  # noqa: F401 - part of this module's interface

# ------------------------------------------------------------------------------------------------------ train


def epoch_batches(run: Run, epoch: int) -> list[np.ndarray]:
    """This process's batches (example indices) of an epoch, as the loop sees them."""
    run.order.epoch = epoch
    return [batch.cpu().numpy() for batch in run.loader]


def evaluate_validation(run: Run, interest: np.ndarray | None = None) -> dict:
    """Validation metrics of the strategy head; ``interest``: the validation histories' vectors when they are
    already known (the encoder unchanged since they were encoded)."""
    scorer = scorer_for(
        run.encoder,
        run.verbaliser,
        "strategy",
        batch_size=run.args.per_device_eval_batch_size,
        precision=run.args.encode_precision,
    )
    known = {} if interest is None else {"interest": interest}
    return evaluate(scorer, run.validation, accelerator=run.accelerator, **known)


def new_state() -> dict:
    """The trainer state (saved as a checkpoint's ``trainer_state.json``)."""
    return {
        "global_step": 0,
        "epoch": 0,
        "batches_done": 0,
        "best_metric": None,
        "best_step": None,
        "bad_evals": 0,
        "stopped_early": False,
        "log": [],
        "running_loss": None,
    }


def train(run: Run) -> dict:
    """The loop. Returns the trainer state (steps, best metric, log)."""
    args, acc = run.args, run.accelerator
    state = new_state()
    if args.resume_from_checkpoint:
        path = checkpoints.resolve_checkpoint(args.resume_from_checkpoint, Path(args.output_dir) / CHECKPOINTS)
        checkpoints.check_config(path, args.result_config())
        state.update(checkpoints.load_checkpoint(path, acc.unwrap_model(run.module), run.optimizer, run.scheduler, acc))
        acc.print(f"resumed from {path} at step {state['global_step']}")
    started = time.perf_counter()
    bar = tqdm(
        total=run.total_steps,
        initial=state["global_step"],
        desc="finetune",
        unit="step",
        disable=args.disable_tqdm or not acc.is_main_process,
    )
    run.module.train()
    last_eval_step = None
    if state["global_step"] == 0 and args.head_warmup_epochs and not state["log"]:
        # the warmed-up head is a candidate too (joint steps may only make it worse), on the warm-up's encodings
        evaluate_and_keep_best(run, state, started, interest=run.validation_interest)
        last_eval_step = 0
    with _stop_at_step_boundary(acc) as stop_requested:
        try:
            while state["global_step"] < run.total_steps and not state["stopped_early"]:
                for parts in train_epoch(run, state):
                    bar.update(1)
                    if state["global_step"] % args.logging_steps == 0:
                        bar.set_postfix(
                            loss=f"{state['running_loss']:.4f}", **{k: f"{v:.3f}" for k, v in parts.items()}
                        )
                    if state["global_step"] % args.eval_steps == 0:
                        evaluate_and_keep_best(run, state, started)
                        last_eval_step = state["global_step"]
                    if state["global_step"] % args.save_steps == 0:
                        save_checkpoint(run, state)
                    out_of_time = (
                        args.max_time_minutes is not None and time.perf_counter() - started > 60 * args.max_time_minutes
                    )
                    state["stopped_early"] |= out_of_time
                    if stop_requested():  # a whole step done (and its evaluation): a clean state to resume from
                        bar.close()
                        path = save_checkpoint(run, state)
                        stop_requested.saved = True
                        acc.print(
                            f"interrupted after step {state['global_step']}; checkpoint saved to {path} (at a "
                            "step boundary, so a resumed run ends with an uninterrupted run's weights). Resume "
                            "with the same command plus --resume_from_checkpoint latest."
                        )
                        raise KeyboardInterrupt
                    if state["stopped_early"] or state["global_step"] >= run.total_steps:
                        break
        except KeyboardInterrupt:
            bar.close()
            if not stop_requested.saved:
                last = checkpoints.checkpoint_dirs(Path(args.output_dir) / CHECKPOINTS)
                acc.print(
                    f"stopped at once during step {state['global_step'] + 1}; no checkpoint of an unfinished "
                    "step is written"
                    + (
                        f": resume from {last[-1]} with the same command plus --resume_from_checkpoint latest."
                        if last
                        else "."
                    )
                )
            raise
    bar.close()
    if last_eval_step != state["global_step"]:
        evaluate_and_keep_best(run, state, started)
    state["train_runtime"] = time.perf_counter() - started
    return state


class _StopRequest:
    """Whether Ctrl-C asked the loop to stop (on every process, when several train)."""

    def __init__(self, accelerator):
        self.accelerator, self.count, self.saved = accelerator, 0, False

    def __call__(self) -> bool:
        stop = self.count > 0
        if self.accelerator.num_processes > 1:  # every process stops after the same step
            flag = torch.tensor([float(stop)], device=self.accelerator.device)
            stop = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
        return stop


@contextlib.contextmanager
def _stop_at_step_boundary(accelerator):
    """While training: the first Ctrl-C (SIGINT) only asks the loop to stop after the step in progress (and its
    evaluation and checkpoint), so the Ctrl-C checkpoint is a clean training state; a second one stops at once,
    without a checkpoint. Outside the main thread signals cannot be caught, and Ctrl-C stops at once."""
    request = _StopRequest(accelerator)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        request.count += 1
        if request.count > 1:
            raise KeyboardInterrupt
        accelerator.print(
            "\nCtrl-C: stopping after the step in progress and saving a checkpoint; press Ctrl-C again "
            "to stop at once, without one."
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)


def train_epoch(run: Run, state: dict):
    """The optimizer updates of the rest of the current epoch: yields each update's loss parts after it is done
    (``state`` updated); a resumed run skips the batches its checkpoint had consumed. At the epoch's end the
    state moves to the next epoch."""
    acc = run.accelerator
    run.order.epoch = state["epoch"]
    loader = run.loader if state["batches_done"] == 0 else acc.skip_first_batches(run.loader, state["batches_done"])
    pending = 0  # micro-batches of the update in progress
    for batch in loader:
        with acc.accumulate(run.module):  # no gradient sync, optimizer or scheduler step until the last micro-batch
            loss, parts = step_loss(run, batch, state["global_step"])
            acc.backward(loss)  # divided by gradient_accumulation_steps
            if acc.sync_gradients and run.args.max_grad_norm > 0:
                acc.clip_grad_norm_(run.module.parameters(), run.args.max_grad_norm)
            run.optimizer.step()
            if acc.sync_gradients:
                run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
        pending += 1
        if not acc.sync_gradients:
            continue
        state["global_step"] += 1
        state["batches_done"] += pending  # a checkpoint resumes at a whole update
        pending = 0
        loss = loss.item()
        state["running_loss"] = loss if state["running_loss"] is None else 0.9 * state["running_loss"] + 0.1 * loss
        yield parts
    state["epoch"] += 1
    state["batches_done"] = 0


def evaluate_and_keep_best(run: Run, state: dict, started: float, interest: np.ndarray | None = None) -> None:
    """Validation metrics (``interest`` as in `evaluate_validation`); the best model so far is saved to
    output_dir (with the training args); early stopping counts evaluations without improvement."""
    args, acc = run.args, run.accelerator
    metrics = evaluate_validation(run, interest)
    score = metrics["ndcg@10"]
    if state["best_metric"] is None or score > state["best_metric"]:
        state.update(best_metric=score, best_step=state["global_step"], bad_evals=0)
        if acc.is_main_process:
            run.encoder.save_pretrained(args.output_dir)
            ModelFolder(args.output_dir).save_training_args(args.to_dict())
        acc.wait_for_everyone()
    else:
        state["bad_evals"] += 1
    loss = float("nan") if state["running_loss"] is None else state["running_loss"]
    entry = {
        "step": state["global_step"],
        "epoch": round(state["global_step"] / max(1, run.updates_per_epoch), 3),
        "loss": round(loss, 4),
        **{f"valid_{k}": v for k, v in metrics.items()},
    }
    state["log"].append(entry)
    acc.print(
        f"step {entry['step']} | epoch {entry['epoch']} | loss {entry['loss']:.4f} | valid ndcg@10 "
        f"{score:.4f} hr@10 {metrics['hr@10']:.4f} mrr@10 {metrics['mrr@10']:.4f} | best "
        f"{state['best_metric']:.4f} (step {state['best_step']}) | {time.perf_counter() - started:.0f} s"
    )
    if args.early_stopping_patience and state["bad_evals"] >= args.early_stopping_patience:
        state["stopped_early"] = True


def save_checkpoint(run: Run, state: dict) -> Path:
    return checkpoints.save_checkpoint(
        Path(run.args.output_dir) / CHECKPOINTS,
        state["global_step"],
        run.accelerator.unwrap_model(run.module),
        run.optimizer,
        run.scheduler,
        state,
        run.args.result_config(),
        run.args.save_total_limit,
        run.accelerator,
    )


# ------------------------------------------------------------------------------------------------------ finish


def finish(run: Run, state: dict) -> dict:
    """Scores the best model (from output_dir) and popularity on the test split; writes all_results.json."""
    args, acc = run.args, run.accelerator
    out = Path(args.output_dir)
    acc.wait_for_everyone()
    best = InterestEncoder.from_pretrained(out, device=str(acc.device)).merge_adapter()
    results = {
        "card": run.verbaliser.card.name,  # its name: never a local path
        "best_step": state["best_step"],
        "global_step": state["global_step"],
        "stopped_early": state["stopped_early"],
        "train_runtime_s": round(state.get("train_runtime", 0.0), 1),
        "train_examples": len(run.split.train),
        "test_tie_share": run.tie_share,  # test targets that share their timestamp with the event before
        "skipped_users": run.split.skipped_users,
        "processes": acc.num_processes,
        "hardware": hardware(acc),
        "best_validation": {"ndcg@10": state["best_metric"], "users": len(run.validation)},
        "log": state["log"],
    }
    rows = {}
    if args.do_test:
        test = run.split.test
        scorer = scorer_for(best, run.verbaliser, "strategy", batch_size=args.per_device_eval_batch_size)
        results["test"] = evaluate(scorer, test, accelerator=acc)
        rows["interestbert fine-tuned"] = results["test"]
        if args.eval_on_test_baselines:
            results["popularity_test"] = evaluate(popularity_scorer(run.verbaliser, run.split, "test"), test)
            rows["popularity"] = results["popularity_test"]
            results["zero_shot_test"] = evaluate_zero_shot(run, best)
            rows["base model, zero-shot"] = results["zero_shot_test"]
    if args.sequence_head:
        results.update(train_and_save_sequence_head(run, best))
        if "sequence_test" in results:
            rows["interestbert sequence head"] = results["sequence_test"]
    if acc.is_main_process:
        ModelFolder(out).save_results(results)
        if rows:
            acc.print(f"\ntest split, {len(run.split.test):,} users, full ranking, seen items excluded:")
            acc.print(metrics_table(rows))
        acc.print(f"best model (step {state['best_step']}) in {out}; metrics in {out / RESULTS}")
    return results


def finetune(args: FinetuneArguments) -> dict:
    """Builds, trains and evaluates; returns what all_results.json holds."""
    run = build(args)
    state = train(run)
    return finish(run, state)


def parse_args(argv=None) -> FinetuneArguments:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        FinetuneArguments,
        prog="interestbert finetune",
        description="Fine-tune the LoRA encoder and strategy head on a data card.",
    )
    if argv is not None and len(argv) == 1 and str(argv[0]).endswith(".json"):
        (args,) = parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    else:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def main(argv=None) -> int:
    """Entry point of ``accelerate launch -m interestbert.finetune`` and ``interestbert finetune``."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        args = parse_args(argv)
    except ValueError as err:  # an option out of range (FinetuneArguments.__post_init__)
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        finetune(args)
        from accelerate import PartialState

        if PartialState().is_main_process:  # so that SentenceTransformer(output_dir) resolves the base offline
            register_base_model(args.output_dir)
    except KeyboardInterrupt:
        return 130
    except (InterestBertError, OSError, UnicodeError, MemoryError, ValueError, RecursionError) as err:
        message = describe(err)
        if args.debug or message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
