"""What `interestbert.finetune.train.finish` runs after the loop, besides the test metrics: the untrained base as a
zero-shot baseline, the sequence head trained on the best encoder, and the line that names the hardware."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from interestbert.encoder.hub.folder import ModelFolder
from interestbert.encoder.model import InterestEncoder
from interestbert.encoder.scoring import TextCosineScorer, scorer_for

from .evaluate import evaluate
from .run import Run


def evaluate_zero_shot(run: Run, best: InterestEncoder) -> dict:
    """The untrained base (a fresh adapter adds nothing; whole-history interest, as `interestbert evaluate` of the
    base) on test, items by the cosine to their texts: what the fine-tuning bought."""
    base = InterestEncoder.from_pretrained(
        best.base_model, max_seq_length=run.args.max_seq_length, device=str(run.accelerator.device)
    ).merge_adapter()
    # encoded by `build` for the new head: the same model and texts, reused where they were encoded in fp32
    if run.base_item_vectors is not None and base.resolve_precision(run.args.encode_precision) == "fp32":
        scorer = TextCosineScorer(
            run.verbaliser, base, item_vectors=run.base_item_vectors, batch_size=run.args.per_device_eval_batch_size
        )
    else:
        scorer = scorer_for(base, run.verbaliser, "text", batch_size=run.args.per_device_eval_batch_size)
    return evaluate(scorer, run.split.test, accelerator=run.accelerator)


def train_and_save_sequence_head(run: Run, best: InterestEncoder) -> dict:
    """On the main process: the sequence head trained on ``best``'s item text embeddings, saved beside it in
    output_dir, scored on test; returns what all_results.json gets from it."""
    from .sequence import train_sequence_head

    args, acc = run.args, run.accelerator
    out = Path(args.output_dir)
    results = {}
    if acc.is_main_process:
        vectors = best.encode(run.verbaliser.item_texts, batch_size=args.per_device_eval_batch_size)
        head, summary = train_sequence_head(
            run.verbaliser,
            run.split,
            vectors,
            args.sequence_options(),
            args.sequence_training(),
            device=str(acc.device),
            show_progress_bar=not args.disable_tqdm,
            print_fn=acc.print,
        )
        best.sequence_head = head
        ModelFolder(out).save_heads(best)  # the head's folder and config.json; the adapter files stay
        results["sequence_head"] = summary
        if args.do_test:
            results["sequence_test"] = evaluate(scorer_for(best, run.verbaliser, "sequence"), run.split.test)
    acc.wait_for_everyone()
    return results


def hardware(acc) -> str:
    if torch.cuda.is_available() and acc.device.type == "cuda":
        return f"{acc.num_processes} x {torch.cuda.get_device_name(acc.device)}"
    return (
        f"{acc.num_processes} process(es), CPU {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads"
    )
