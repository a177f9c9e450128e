"""Fine-tune the LoRA encoder and the strategy head on a data card: a plain Accelerate loop.

Runs as ``interestbert finetune --card C --output_dir O ...`` and as ``accelerate launch -m interestbert.finetune
...`` on 1..N processes, CPU or CUDA (bf16 there). Read top to bottom: `build` (data, model, optimizer),
`train` (the loop: steps, evaluation, early stopping, checkpoints), `finish` (test metrics, all_results.json).

Data order is a function of (seed, epoch) and negatives of (seed, step), so a run resumed from a checkpoint
continues exactly where it stopped and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from interestbert.encoder.cards import load_card_data
from interestbert.encoder.errors import InterestBertError
from interestbert.encoder.head import StrategyHead
from interestbert.encoder.model import InterestEncoder, parse_horizons
from interestbert.encoder.model_folder import RESULTS, ModelFolder
from interestbert.encoder.packaged import register_base_model
from interestbert.encoder.scoring import StrategyHeadScorer, scorer_for
from interestbert.encoder.verbalise import Verbaliser

from .args import FinetuneArguments
from .checkpoint import check_config, load_checkpoint, resolve_checkpoint, save_checkpoint
from .data import Examples, Split, leave_one_out
from .evaluate import evaluate, metrics_table, popularity_scorer
from .loop import fit_epochs

CHECKPOINTS = "checkpoints"


class Trainable(nn.Module):
    """The encoder and the head as one module, so DDP sees every trained parameter in one forward."""

    def __init__(self, sentence_transformer: nn.Module, head: StrategyHead):
        super().__init__()
        self.st = sentence_transformer
        self.head = head

    def forward(self, history: list, items: dict | None = None, candidates: torch.Tensor | None = None):
        """``history``: per interest horizon, (tokens of its distinct texts, each example's row among them,
        weight); the interest is the normalised weighted sum (see `InterestEncoder.encode_histories`)."""
        if len(history) == 1:
            interest = self.st(history[0][0])["sentence_embedding"][history[0][1]]  # (batch, dim)
        else:
            interest = F.normalize(sum(weight * self.st(tokens)["sentence_embedding"][rows]
                                       for tokens, rows, weight in history), dim=-1)
        item_vectors = self.st(items)["sentence_embedding"] if items is not None else None  # (batch, dim)
        logits = self.head(interest.float(), candidates)  # (batch, n_items | n_candidates)
        return interest, item_vectors, logits


def contrastive_loss(interest: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, temperature: float):
    """InfoNCE between each history and its next item's text, the batch's other items as negatives (a repeated
    target is not its own negative)."""
    logits = interest.float() @ items.float().T / temperature  # (batch, batch)
    same = targets[:, None] == targets[None, :]
    logits = logits.masked_fill(same & ~torch.eye(len(targets), dtype=torch.bool, device=logits.device), -1e4)
    return F.cross_entropy(logits, torch.arange(len(targets), device=logits.device))


@dataclass
class Run:
    """Everything `train` needs, built once by `build`."""

    args: FinetuneArguments
    accelerator: object
    encoder: InterestEncoder
    verbaliser: Verbaliser
    split: Split
    validation: Examples
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    total_steps: int
    batches_per_epoch: int


# ------------------------------------------------------------------------------------------------------ build


def build(args: FinetuneArguments) -> Run:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from transformers import get_linear_schedule_with_warmup

    precision = args.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    # BERT's position_ids buffer must not be broadcast every step under DDP
    accelerator = Accelerator(mixed_precision=precision,
                              kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    _check_output_dir(args, accelerator)
    set_seed(args.seed)

    data = load_card_data(args.card, args.data_dir)
    empty = [i for i, t in zip(data.items["item_id"], data.items["text"]) if not t.strip()]
    if empty:
        raise InterestBertError(f"data card {data.card.name}: {len(empty)} items have no text (first: {empty[0]}); "
                                "fix `interestbert.items.text` or the items file so every item has text.")
    try:
        encoder = InterestEncoder.from_pretrained(
            args.model_name_or_path, r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
            target_modules=args.lora_target_modules, max_seq_length=args.max_seq_length,
            device=str(accelerator.device))
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InterestBertError(f"--model_name_or_path {args.model_name_or_path}: the model could not be loaded "
                                f"({first}); pass a BERT-family folder or Hub id, or a folder saved by "
                                "interestbert.") from None
    encoder.horizons = parse_horizons(args.interest_horizons)
    encoder.sequence_head = None  # a sequence head belongs to the encoder it was trained on; retrained in `finish`
    verbaliser = Verbaliser(data, encoder.tokenizer, args.max_seq_length)
    split = leave_one_out(verbaliser, args.max_train_prefixes_per_user)
    if len(split.train) == 0:
        raise InterestBertError(f"data card {data.card.name}: no training examples (users need at least 4 events); "
                                "use a card with longer histories.")
    if encoder.head is None:
        vectors = encoder.encode(verbaliser.item_texts, batch_size=args.per_device_eval_batch_size)
        encoder.head = StrategyHead(verbaliser.item_ids, vectors, popularity=split.popularity["train"],
                                    init_scale=args.head_init_scale)
    elif encoder.head.item_ids != verbaliser.item_ids:
        raise InterestBertError(f"{args.model_name_or_path} has a strategy head over another catalogue "
                                f"({encoder.head.n_items} items) than data card {data.card.name} "
                                f"({len(verbaliser.item_ids)}); start from the base model instead.")
    encoder.head.to(accelerator.device)
    validation = split.validation
    if args.max_eval_users and len(validation) > args.max_eval_users:
        pick = np.sort(np.random.default_rng(args.seed).choice(len(validation), args.max_eval_users, replace=False))
        validation = validation.subset(pick)
    warm_state = {}
    if args.head_warmup_epochs and args.resume_from_checkpoint is None:  # a resumed run loads its head anyway
        warm_state = warm_up_head(encoder, verbaliser, split.train, args, accelerator, validation)

    module = Trainable(encoder.model, encoder.head)
    lora = [p for n, p in module.st.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": lora, "lr": args.learning_rate},
        {"params": list(module.head.parameters()), "lr": args.head_learning_rate},
    ], weight_decay=args.weight_decay)
    for param, moments in warm_state.items():  # a fresh Adam would first move every head weight by ~lr
        optimizer.state[param] = moments
    global_batch = args.per_device_train_batch_size * accelerator.num_processes
    batches_per_epoch = math.ceil(len(split.train) / global_batch)
    updates_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    total_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * updates_per_epoch)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    module, optimizer = accelerator.prepare(module, optimizer)  # the scheduler steps once per update, by hand
    return Run(args, accelerator, encoder, verbaliser, split, validation, module, optimizer, scheduler, total_steps,
               batches_per_epoch)


def warm_up_head(encoder: InterestEncoder, verbaliser: Verbaliser, train: Examples, args: FinetuneArguments,
                 accelerator, validation: Examples | None = None) -> dict:
    """Fits ``A`` and ``b'`` alone on the frozen encoder's history vectors, encoded once: many cheap epochs of
    the head's cross-entropy before the expensive joint training (see `fit_head`). Every process computes the same
    result. Returns the AdamW state of each head parameter (at the kept epoch), so the joint optimizer continues
    from it."""
    cap = args.head_warmup_max_examples
    if cap is not None and len(train) > cap:
        train = train.subset(np.sort(np.random.default_rng([args.seed, 7]).choice(len(train), cap, replace=False)))
    show = not args.disable_tqdm and accelerator.is_main_process
    with torch.no_grad():
        interest = encoder.encode_histories(verbaliser, train.users, train.ends,
                                            batch_size=args.per_device_eval_batch_size, show_progress_bar=show)
        valid = None if validation is None or not len(validation) else encoder.encode_histories(
            verbaliser, validation.users, validation.ends, batch_size=args.per_device_eval_batch_size)
    optimizer, summary = fit_head(encoder, verbaliser, interest, train.targets, args.head_warmup_epochs,
                                  args.head_learning_rate, args.weight_decay, args.seed,
                                  None if valid is None else (validation, valid), args.head_warmup_patience)
    accelerator.print(f"head warm-up: {summary}")
    return {param: optimizer.state[param] for param in encoder.head.parameters()}


def fit_head(encoder: InterestEncoder, verbaliser: Verbaliser, interest, targets, epochs: int, lr: float,
             weight_decay: float = 0.0, seed: int = 0, validation: tuple[Examples, np.ndarray] | None = None,
             patience: int = 10):
    """Trains ``encoder.head`` alone on fixed interest vectors ``(n, dim)`` with AdamW, batches of 256, through the
    shared epoch loop (`interestbert.finetune.loop.fit_epochs`).

    With ``validation`` (examples and their interest vectors), NDCG@10 is measured after every epoch, the best
    epoch's head is kept, and training stops after ``patience`` epochs without improvement: the head
    overfits a small catalogue within tens of epochs. Returns the optimizer (its state at the kept epoch) and a
    one-line summary."""
    head = encoder.head
    device = head.weight.device
    interest = torch.as_tensor(interest).float().to(device)  # (n, dim)
    targets = torch.as_tensor(targets, device=device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    validate = None
    if validation is not None:
        scorer = StrategyHeadScorer(head, verbaliser)
        examples, vectors = validation
        validate = lambda: evaluate(scorer, examples, interest=vectors)["ndcg@10"]  # noqa: E731
    result = fit_epochs(head, optimizer, len(targets), lambda rows: F.cross_entropy(head(interest[rows]), targets[rows]),
                        epochs=epochs, batch_size=256, generator=torch.Generator().manual_seed(seed),
                        validate=validate, patience=patience, device=device)
    kept = "" if validate is None else \
        f", kept epoch {result.best_epoch} (validation NDCG@10 {result.best_metric:.4f})"
    return optimizer, (f"{result.epochs} epochs over {len(targets):,} frozen history vectors{kept}, "
                       f"last batch loss {result.last_loss:.4f}")


def _check_output_dir(args: FinetuneArguments, accelerator) -> None:
    out = Path(args.output_dir)
    holds_model = (out / "adapter_config.json").is_file() or (out / CHECKPOINTS).is_dir()
    if holds_model and not args.overwrite_output_dir and args.resume_from_checkpoint is None:
        raise InterestBertError(f"--output_dir {out} already holds a model or checkpoints; pass "
                                "--overwrite_output_dir to replace it, --resume_from_checkpoint latest to continue "
                                "it, or choose another folder.")
    if holds_model and args.overwrite_output_dir and args.resume_from_checkpoint is None:
        if accelerator.is_main_process:
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
            ModelFolder(out).clear()
        accelerator.wait_for_everyone()


# ------------------------------------------------------------------------------------------------------ train


def epoch_batches(run: Run, epoch: int) -> list[np.ndarray]:
    """This process's batches (example indices) of an epoch: a permutation seeded by (seed, epoch); with several
    processes it wraps around so that every process takes the same number of steps."""
    n = len(run.split.train)
    bs, world, rank = run.args.per_device_train_batch_size, run.accelerator.num_processes, run.accelerator.process_index
    order = np.random.default_rng([run.args.seed, epoch]).permutation(n)
    if world > 1:
        order = np.resize(order, run.batches_per_epoch * bs * world)
    out = []
    for b in range(run.batches_per_epoch):
        chunk = order[b * bs * world: (b + 1) * bs * world]
        out.append(chunk[rank * bs: (rank + 1) * bs] if world > 1 else chunk)
    return out


def sample_candidates(n_items: int, targets: torch.Tensor, num_negatives: int, seed: int, step: int):
    """Sampled softmax: the batch's targets plus uniform negatives, drawn from (seed, step) so that a resumed run
    draws the same ones. Returns the sorted unique candidate rows and each target's position among them."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    negatives = torch.randint(n_items, (num_negatives,), generator=gen).to(targets.device)
    candidates = torch.unique(torch.cat([targets, negatives]))  # (n_candidates,) sorted
    return candidates, torch.searchsorted(candidates, targets)


def history_inputs(run: Run, ex: Examples) -> list:
    """`Trainable`'s history input for examples: per interest horizon, the tokens of its distinct texts (each
    tokenised once), each example's row among them, and the horizon's weight."""
    out = []
    for events, weight in run.encoder.horizons:
        texts, rows = np.unique(np.asarray(run.verbaliser.texts_for_indices(ex.users, ex.ends, events), dtype=object),
                                return_inverse=True)
        tokens = run.encoder.tokenizer(texts.tolist(), padding=True, truncation=True,
                                       max_length=run.args.max_seq_length, return_tensors="pt").to(run.accelerator.device)
        out.append((dict(tokens), torch.as_tensor(rows.reshape(-1), device=run.accelerator.device), weight))
    return out


def step_loss(run: Run, batch: np.ndarray, step: int) -> tuple[torch.Tensor, dict]:
    args, device = run.args, run.accelerator.device
    ex = run.split.train.subset(batch)
    tok = run.encoder.tokenizer
    history = history_inputs(run, ex)
    targets = torch.as_tensor(ex.targets, device=device)
    items = None
    if args.contrastive_weight > 0:
        item_texts = [run.verbaliser.item_texts[i] for i in ex.targets.tolist()]
        items = tok(item_texts, padding=True, truncation=True, max_length=args.max_item_length,
                    return_tensors="pt").to(device)
    candidates, labels = None, targets
    if run.split.n_items > args.full_softmax_max_items:
        candidates, labels = sample_candidates(run.split.n_items, targets, args.num_negatives, args.seed, step)
    with run.accelerator.autocast():
        interest, item_vectors, logits = run.module(history, dict(items) if items is not None else None,
                                                    candidates)
    ce = F.cross_entropy(logits.float(), labels)
    loss = args.ce_weight * ce
    parts = {"ce": ce.item()}
    if item_vectors is not None:
        con = contrastive_loss(interest, item_vectors, targets, args.temperature)
        loss = loss + args.contrastive_weight * con
        parts["contrastive"] = con.item()
    return loss, parts


def evaluate_validation(run: Run) -> dict:
    scorer = scorer_for(run.encoder, run.verbaliser, "strategy", batch_size=run.args.per_device_eval_batch_size)
    return evaluate(scorer, run.validation, accelerator=run.accelerator)


def train(run: Run) -> dict:
    """The loop. Returns the trainer state (steps, best metric, log)."""
    args, acc = run.args, run.accelerator
    out = Path(args.output_dir)
    config = args.result_config()
    state = {"global_step": 0, "epoch": 0, "batches_done": 0, "best_metric": None, "best_step": None,
             "bad_evals": 0, "stopped_early": False, "log": []}
    if args.resume_from_checkpoint:
        path = resolve_checkpoint(args.resume_from_checkpoint, out / CHECKPOINTS)
        check_config(path, config)
        state = load_checkpoint(path, acc.unwrap_model(run.module), run.optimizer, run.scheduler, acc)
        acc.print(f"resumed from {path} at step {state['global_step']}")

    def checkpoint() -> Path:
        return save_checkpoint(out / CHECKPOINTS, state["global_step"], acc.unwrap_model(run.module), run.optimizer,
                               run.scheduler, state, config, args.save_total_limit, acc)

    def evaluate_and_keep_best() -> None:
        metrics = evaluate_validation(run)
        score = metrics["ndcg@10"]
        improved = state["best_metric"] is None or score > state["best_metric"]
        if improved:
            state.update(best_metric=score, best_step=state["global_step"], bad_evals=0)
            if acc.is_main_process:
                run.encoder.save_pretrained(out)
                ModelFolder(out).save_training_args(args.to_dict())
            acc.wait_for_everyone()
        else:
            state["bad_evals"] += 1
        entry = {"step": state["global_step"], "epoch": round(state["global_step"] / max(1, updates_per_epoch), 3),
                 "loss": round(running_loss, 4), **{f"valid_{k}": v for k, v in metrics.items()}}
        state["log"].append(entry)
        acc.print(f"step {entry['step']} | epoch {entry['epoch']} | loss {entry['loss']:.4f} | valid ndcg@10 "
                  f"{score:.4f} hr@10 {metrics['hr@10']:.4f} mrr@10 {metrics['mrr@10']:.4f} | best "
                  f"{state['best_metric']:.4f} (step {state['best_step']}) | {time.perf_counter() - started:.0f} s")
        if args.early_stopping_patience and state["bad_evals"] >= args.early_stopping_patience:
            state["stopped_early"] = True

    updates_per_epoch = math.ceil(run.batches_per_epoch / args.gradient_accumulation_steps)
    started = time.perf_counter()
    running_loss = float("nan")
    bar = tqdm(total=run.total_steps, initial=state["global_step"], desc="finetune", unit="step",
               disable=args.disable_tqdm or not acc.is_main_process)
    run.module.train()
    last_eval_step = None
    if state["global_step"] == 0 and args.head_warmup_epochs and not state["log"]:
        evaluate_and_keep_best()  # the warmed-up head is a candidate too: joint steps may only make it worse
        last_eval_step = 0
    try:
        while state["global_step"] < run.total_steps and not state["stopped_early"]:
            batches = epoch_batches(run, state["epoch"])
            while state["batches_done"] < len(batches) and state["global_step"] < run.total_steps:
                group = batches[state["batches_done"]: state["batches_done"] + args.gradient_accumulation_steps]
                for j, batch in enumerate(group):
                    sync = j == len(group) - 1
                    with nullcontext() if sync else acc.no_sync(run.module):
                        loss, parts = step_loss(run, batch, state["global_step"])
                        acc.backward(loss / len(group))
                if args.max_grad_norm > 0:
                    acc.clip_grad_norm_(run.module.parameters(), args.max_grad_norm)
                run.optimizer.step()
                run.scheduler.step()
                run.optimizer.zero_grad(set_to_none=True)
                state["global_step"] += 1
                state["batches_done"] += len(group)
                running_loss = loss.item() if math.isnan(running_loss) else 0.9 * running_loss + 0.1 * loss.item()
                bar.update(1)
                if state["global_step"] % args.logging_steps == 0:
                    bar.set_postfix(loss=f"{running_loss:.4f}", **{k: f"{v:.3f}" for k, v in parts.items()})
                if state["global_step"] % args.eval_steps == 0:
                    evaluate_and_keep_best()
                    last_eval_step = state["global_step"]
                if state["global_step"] % args.save_steps == 0:
                    checkpoint()
                out_of_time = (args.max_time_minutes is not None
                               and time.perf_counter() - started > 60 * args.max_time_minutes)
                if state["stopped_early"] or out_of_time:
                    state["stopped_early"] = True
                    break
            if state["batches_done"] >= len(batches):
                state["epoch"] += 1
                state["batches_done"] = 0
    except KeyboardInterrupt:
        bar.close()
        path = checkpoint()
        acc.print(f"interrupted at step {state['global_step']}; checkpoint saved to {path}. Resume with the same "
                  f"command plus --resume_from_checkpoint latest.")
        raise
    bar.close()
    if last_eval_step != state["global_step"]:
        evaluate_and_keep_best()
    state["train_runtime"] = time.perf_counter() - started
    return state


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
        "skipped_users": run.split.skipped_users,
        "processes": acc.num_processes,
        "hardware": _hardware(acc),
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


def train_and_save_sequence_head(run: Run, best: InterestEncoder) -> dict:
    """On the main process: the sequence head trained on ``best``'s item text embeddings, saved beside it in
    output_dir, scored on test; returns what all_results.json gets from it."""
    from .sequence import train_sequence_head

    args, acc = run.args, run.accelerator
    out = Path(args.output_dir)
    results = {}
    if acc.is_main_process:
        vectors = best.encode(run.verbaliser.item_texts, batch_size=args.per_device_eval_batch_size)
        head, summary = train_sequence_head(run.verbaliser, run.split, vectors, args.sequence_options(),
                                            args.sequence_training(), device=str(acc.device),
                                            show_progress_bar=not args.disable_tqdm, print_fn=acc.print)
        best.sequence_head = head
        ModelFolder(out).save_heads(best)  # the head's folder and config.json; the adapter files stay
        results["sequence_head"] = summary
        if args.do_test:
            results["sequence_test"] = evaluate(scorer_for(best, run.verbaliser, "sequence"), run.split.test)
    acc.wait_for_everyone()
    return results


def finetune(args: FinetuneArguments) -> dict:
    """Builds, trains and evaluates; returns what all_results.json holds."""
    run = build(args)
    state = train(run)
    return finish(run, state)


def _hardware(acc) -> str:
    if torch.cuda.is_available() and acc.device.type == "cuda":
        return f"{acc.num_processes} x {torch.cuda.get_device_name(acc.device)}"
    return f"{acc.num_processes} process(es), CPU {platform.processor() or platform.machine()}, " \
           f"{torch.get_num_threads()} threads"


def parse_args(argv=None) -> FinetuneArguments:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(FinetuneArguments, prog="interestbert finetune",
                              description="Fine-tune the LoRA encoder and strategy head on a data card.")
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
    except InterestBertError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
