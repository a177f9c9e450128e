"""Does training the encoder's LoRA pay for the sequence head? (issue 15, item 2: the ablation)

The sequence head scores items from ``P · text(item) + id(item)`` (`interestbert.encoder.sequence`): the encoder
enters only through the item texts' embeddings. This script trains the adapter with the objective the text-based
sequential recommenders use for their item tower, an InfoNCE of the next item on item texts (anchor: item ``t`` of
a user's training sequence; positive: item ``t+1``; negatives: every catalogue item, or the batch's other items),
then retrains the sequence head on the tuned embeddings and compares it with the head on the frozen encoder, in the
same run, with the same seeds.

To fit a CPU, only the top ``--top`` transformer layers carry a trained adapter: the layers below never change, so
their output for every item text is computed once and cached, and a step runs the top layers alone (forward and
backward) over the catalogue. The cached path is checked against the real encoder (cosine ≥ 0.9999) before
training and again after the adapter is merged.

At each time mark (``--marks``, minutes of adapter training, evaluation excluded) the sequence head is trained from
scratch on the current embeddings (`interestbert.finetune.sequence.train_sequence_head`, the product's defaults and
the quality benchmark's ``max_events``), once per seed, and scored on validation and test (full ranking,
`benchmarks/quality.py`'s split).

    python benchmarks/lora_ablation.py --data-dir ../shared/data --datasets amazon-beauty \\
        --marks 4 10 --seeds 42 43 --out benchmarks/results/lora_ablation
    python benchmarks/lora_ablation.py --data-dir ../shared/data --datasets amazon-beauty \\
        --marks 5 10 --debias logq --out benchmarks/results/lora_ablation/logq

``--debias``: against the popular next items' weight in the loss, the logQ correction of the logits or pairs drawn
uniformly over next items (`pair_sampler`).

Results: ``<out>/<dataset>.json`` per dataset and ``<out>/lora_ablation.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, MAX_SEQ_LENGTH, data_dir_of, hardware, sequence_events  # noqa: E402
from results_io import run_and_report  # noqa: E402

from interestbert.encoder.cards import load_card_data  # noqa: E402
from interestbert.encoder.model import DEFAULT_BASE_MODEL, InterestEncoder  # noqa: E402
from interestbert.encoder.scoring import SequenceHeadScorer  # noqa: E402
from interestbert.encoder.sequence import SequenceOptions  # noqa: E402
from interestbert.encoder.verbalise import Verbaliser  # noqa: E402
from interestbert.finetune.args import FinetuneArguments  # noqa: E402
from interestbert.finetune.data import leave_one_out  # noqa: E402
from interestbert.finetune.evaluate import evaluate  # noqa: E402
from interestbert.finetune.sequence import SequenceTraining, train_sequence_head, training_sequences  # noqa: E402
from interestbert.finetune.steps import _pad as pad_tokens  # noqa: E402

CHUNK_TOKENS = 4096  # padded tokens per pass of the top layers (length-sorted chunks)


def chunks(lengths: np.ndarray) -> list[np.ndarray]:
    """Positions ``0 .. len(lengths)-1`` sorted by length, cut into chunks of at most `CHUNK_TOKENS` padded
    tokens (each chunk is padded to its longest text)."""
    order = np.argsort(lengths, kind="stable")
    out, start = [], 0
    for end in range(1, len(order) + 1):
        if (end - start) * lengths[order[end - 1]] > CHUNK_TOKENS and end - 1 > start:
            out.append(order[start : end - 1])
            start = end - 1
    out.append(order[start:])
    return out


class TopLayers:
    """The encoder's top ``top`` layers over cached inputs: every item text's hidden states below them, computed
    once with the untrained weights (the adapter starts at zero and only the top layers' adapter trains)."""

    def __init__(self, encoder: InterestEncoder, texts: list[str], top: int):
        self.st = encoder.model
        self.bert = self.st[0].auto_model
        self.layers = self.bert.encoder.layer[len(self.bert.encoder.layer) - top :]
        tokenizer = encoder.tokenizer
        self.ids = tokenizer(list(texts), truncation=True, max_length=encoder.max_seq_length)["input_ids"]
        self.lengths = np.array([len(row) for row in self.ids])
        self.cache: list[torch.Tensor] = [None] * len(texts)
        self.st.eval()
        with torch.no_grad():
            for chunk in chunks(self.lengths):
                inputs = pad_tokens([self.ids[i] for i in chunk], tokenizer.pad_token_id, "cpu")
                hidden = self.bert(**inputs, output_hidden_states=True).hidden_states[-top - 1]
                for j, i in enumerate(chunk):
                    self.cache[i] = hidden[j, : self.lengths[i]].clone()

    def embed(self, rows) -> torch.Tensor:
        """Unit-norm embeddings of the texts ``rows`` (in that order): the top layers, then the mean pooling."""
        rows = np.asarray(list(rows))
        outs, order = [], []
        for chunk in chunks(self.lengths[rows]):
            items = rows[chunk]
            width = int(self.lengths[items].max())
            hidden = torch.zeros(len(items), width, self.cache[0].shape[1])
            for j, i in enumerate(items):
                hidden[j, : self.lengths[i]] = self.cache[i]
            mask = (torch.arange(width)[None, :] < torch.as_tensor(self.lengths[items])[:, None]).float()
            additive = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
            for layer in self.layers:
                hidden = layer(hidden, attention_mask=additive)
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            outs.append(F.normalize((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1))
            order.append(chunk)
        out = torch.cat(outs)
        back = torch.empty(len(rows), dtype=torch.long)
        back[torch.as_tensor(np.concatenate(order))] = torch.arange(len(rows))
        return out[back]

    def all(self) -> np.ndarray:
        self.st.eval()
        with torch.no_grad():
            return self.embed(range(len(self.cache))).numpy()


def next_item_pairs(verbaliser: Verbaliser, split) -> np.ndarray:
    """``(n, 2)`` catalogue rows (item ``t``, item ``t+1``) of every user's training sequence (before the
    validation target), repeats of the same item left out."""
    inputs, targets = training_sequences(verbaliser, split, int(np.diff(verbaliser.offsets).max()))
    keep = (inputs >= 0) & (targets >= 0)
    pairs = torch.stack([inputs[keep], targets[keep]], 1).numpy()
    return pairs[pairs[:, 0] != pairs[:, 1]]


def pair_sampler(pairs: np.ndarray, n_items: int, debias: str):
    """How a step draws its pairs: uniformly over pairs (``none``, ``logq``), or (``uniform-targets``) each pair
    with probability ∝ 1 / (its next item's count), so every next item is drawn as often as any other and the
    rare ones, where the sequence head's id vectors cannot learn, shape the text space as much as the popular
    ones. Returns the probabilities (or None) and the log popularity of every item (the logQ correction)."""
    counts = np.bincount(pairs[:, 1], minlength=n_items).astype(np.float64)
    log_q = torch.as_tensor(np.log(np.maximum(counts, 1) / counts.sum()), dtype=torch.float32)
    if debias != "uniform-targets":
        return None, log_q
    p = 1.0 / counts[pairs[:, 1]]
    return p / p.sum(), log_q


def next_item_loss(
    top: TopLayers,
    batch: np.ndarray,
    n_items: int,
    catalogue: bool,
    temperature: float,
    log_q: torch.Tensor | None = None,
):
    """InfoNCE of each pair's next item given its first: over the whole catalogue, or over the batch's other
    next items (symmetric, a repeated next item not its own negative). ``log_q`` (log popularity per item):
    the logQ correction, each candidate's logit lowered by it, so the loss rewards how much likelier the next
    item is after the first than overall (a pointwise mutual information) instead of its popularity."""
    if catalogue:
        emb = top.embed(range(n_items))
        logits = emb[torch.as_tensor(batch[:, 0])] @ emb.T / temperature
        if log_q is not None:
            logits = logits - log_q[None, :]
        return F.cross_entropy(logits, torch.as_tensor(batch[:, 1]))
    rows, where = np.unique(batch.ravel(), return_inverse=True)
    emb = top.embed(rows)
    where = torch.as_tensor(where.reshape(-1, 2))
    logits = emb[where[:, 0]] @ emb[where[:, 1]].T / temperature
    if log_q is not None:
        logits = logits - log_q[torch.as_tensor(batch[:, 1])][None, :]
    nxt = torch.as_tensor(batch[:, 1])
    same = (nxt[:, None] == nxt[None, :]) & ~torch.eye(len(batch), dtype=torch.bool)
    logits = logits.masked_fill(same, -1e4)
    labels = torch.arange(len(batch))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def sequence_rows(
    verbaliser, split, items: np.ndarray, options: SequenceOptions, seeds: list[int], minutes: float
) -> dict:
    """The sequence head trained on ``items`` once per seed: validation (best epoch) and test NDCG@10."""
    runs = {}
    for seed in seeds:
        head, log = train_sequence_head(
            verbaliser,
            split,
            items,
            options,
            SequenceTraining(seed=seed, max_minutes=minutes),
            show_progress_bar=False,
            print_fn=lambda *_: None,
        )
        prior = log.get("text_prior")  # fitted on validation after training: its score is the head's
        validation = prior["validation_ndcg@10"] if prior else log["best_validation_ndcg@10"]
        runs[str(seed)] = {
            "validation_ndcg@10": validation,
            "test_ndcg@10": round(evaluate(SequenceHeadScorer(head, verbaliser), split.test)["ndcg@10"], 5),
            "best_epoch": log["best_epoch"],
            "epochs": log["epochs"],
            "text_prior": prior,
        }
    return {
        "seeds": runs,
        **{
            f"mean_{k}": round(float(np.mean([r[k] for r in runs.values()])), 5)
            for k in ("validation_ndcg@10", "test_ndcg@10")
        },
    }


def run_dataset(name: str, data_dir: Path, args) -> dict:
    clock = time.perf_counter()
    torch.manual_seed(0)
    data = load_card_data(name, data_dir_of(name, data_dir))
    lora = FinetuneArguments(card="-", output_dir="-")
    encoder = InterestEncoder.from_pretrained(DEFAULT_BASE_MODEL, max_seq_length=MAX_SEQ_LENGTH)
    verbaliser = Verbaliser(data, encoder.tokenizer, MAX_SEQ_LENGTH)
    split = leave_one_out(verbaliser)
    options = SequenceOptions(max_events=sequence_events(name))
    frozen = encoder.encode(verbaliser.item_texts, batch_size=64)
    top = TopLayers(encoder, verbaliser.item_texts, args.top)
    check = float((top.all() * frozen).sum(1).min())
    if check < 0.9999:
        raise RuntimeError(f"{name}: the cached top layers disagree with the encoder (min cosine {check:.5f}).")
    rows = {
        "frozen encoder": {
            "minutes": 0,
            "steps": 0,
            **sequence_rows(verbaliser, split, frozen, options, args.seeds, args.sequence_minutes),
        }
    }
    print(
        f"{name}: frozen {rows['frozen encoder']['mean_validation_ndcg@10']:.4f} / "
        f"{rows['frozen encoder']['mean_test_ndcg@10']:.4f}",
        flush=True,
    )

    first = len(top.bert.encoder.layer) - args.top
    params = []
    for pname, param in top.st.named_parameters():  # the adapter of the top layers only
        param.requires_grad_(
            param.requires_grad and any(f"layer.{k}." in pname for k in range(first, first + args.top))
        )
        if param.requires_grad:
            params.append(param)
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate)
    pairs = next_item_pairs(verbaliser, split)
    probabilities, log_q = pair_sampler(pairs, split.n_items, args.debias)
    log_q = log_q if args.debias == "logq" else None
    rng = np.random.default_rng(args.seeds[0])
    marks, step, trained, curve = sorted(args.marks), 0, 0.0, []
    label = f"LoRA (top {args.top} layers), next-item InfoNCE over the {args.candidates}" + (
        f", {args.debias}" if args.debias != "none" else ""
    )
    while marks:
        started = time.perf_counter()
        top.st.train()
        batch = pairs[rng.choice(len(pairs), min(args.batch_size, len(pairs)), replace=False, p=probabilities)]
        loss = next_item_loss(top, batch, split.n_items, args.candidates == "catalogue", args.temperature, log_q)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, lora.max_grad_norm)
        optimizer.step()
        step += 1
        trained += time.perf_counter() - started
        if step % 5 == 0:
            curve.append({"step": step, "seconds": round(trained, 1), "loss": round(loss.item(), 4)})
        if trained >= marks[0] * 60:
            minutes = marks.pop(0)
            row = rows[f"{label}, {minutes:g} min"] = {
                "minutes": minutes,
                "steps": step,
                "loss": round(loss.item(), 4),
                **sequence_rows(verbaliser, split, top.all(), options, args.seeds, args.sequence_minutes),
            }
            print(
                f"{name}: {minutes:g} min, step {step}: {row['mean_validation_ndcg@10']:.4f} / "
                f"{row['mean_test_ndcg@10']:.4f}",
                flush=True,
            )
    encoder.merge_adapter()
    check = float((encoder.encode(verbaliser.item_texts, batch_size=64) * top.all()).sum(1).min())
    if check < 0.9999:
        raise RuntimeError(
            f"{name}: the merged encoder disagrees with the trained top layers (min cosine {check:.5f})."
        )
    return {
        "dataset": name,
        "users": len(split.test),
        "items": split.n_items,
        "pairs": len(pairs),
        "rows": rows,
        "curve": curve,
        "settings": {
            "top_layers": args.top,
            "candidates": args.candidates,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "temperature": args.temperature,
            "lora_r": lora.lora_r,
            "debias": args.debias,
            "sequence_max_events": options.max_events,
            "seeds": args.seeds,
        },
        "hardware": hardware(),
        "date": dt.date.today().isoformat(),
        "seconds": round(time.perf_counter() - clock),
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| dataset | encoder | adapter steps | validation NDCG@10 (mean of seeds) | test NDCG@10 | test vs frozen |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        base = r["rows"]["frozen encoder"]["mean_test_ndcg@10"]
        for label, row in r["rows"].items():
            lines.append(
                f"| {r['dataset']} ({r['users']:,} users, {r['items']:,} items) | {label} | {row['steps']} | "
                f"{row['mean_validation_ndcg@10']:.4f} | {row['mean_test_ndcg@10']:.4f} | "
                f"{row['mean_test_ndcg@10'] / base:.3f}x |"
            )
    notes = [
        f"- {r['dataset']}: {r['hardware']}, {r['date']}, {r['pairs']:,} next-item pairs, settings "
        f"{r['settings']}, `{r.get('command', '')}`"
        for r in results
    ]
    return "\n".join(lines + [""] + notes) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "lora_ablation"))
    parser.add_argument("--datasets", nargs="+", default=["amazon-beauty"], choices=list(DATASETS))
    parser.add_argument(
        "--marks",
        type=float,
        nargs="+",
        default=[4.0, 10.0],
        help="Minutes of adapter training after which the sequence head is retrained and scored.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43], help="Seeds of the sequence head.")
    parser.add_argument("--top", type=int, default=2, help="Top layers whose adapter trains.")
    parser.add_argument("--candidates", choices=["catalogue", "batch"], default="catalogue")
    parser.add_argument(
        "--debias",
        choices=["none", "logq", "uniform-targets"],
        default="none",
        help="Against the popular next items' weight: the logQ correction of the logits, or pairs "
        "drawn uniformly over next items (`pair_sampler`).",
    )
    parser.add_argument("--batch-size", type=int, default=2048, help="Next-item pairs per step.")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--sequence-minutes", type=float, default=10.0, help="Time cap of each sequence head.")
    parser.add_argument("--report-only", action="store_true", help="Rebuild the report from the saved JSON files.")
    args = parser.parse_args(argv)
    out = Path(args.out)
    command = "python benchmarks/lora_ablation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run_and_report(
        out,
        "lora_ablation",
        args.datasets,
        lambda name: run_dataset(name, Path(args.data_dir), args),
        command,
        markdown,
        DATASETS,
        args.report_only,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
