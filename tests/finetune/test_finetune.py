"""Fine-tuning: metrics, the split, the strategy head, learning, exact resume, refusals, DDP on two CPU processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import tiny_args
from safetensors.torch import load_file

from interestbert.encoder import InterestBertError
from interestbert.encoder.scoring import seen_rows
from interestbert.finetune import train as train_module
from interestbert.finetune.data import leave_one_out

# ---------------------------------------------------------------------------------------------------- split


def test_leave_one_out_split(synthetic_data, tiny_bert):
    from transformers import AutoTokenizer

    from interestbert.encoder import Verbaliser

    v = Verbaliser(synthetic_data, AutoTokenizer.from_pretrained(str(tiny_bert)), 64)
    split = leave_one_out(v)
    n = v.n_events
    assert len(split.test) == len(split.validation) == len(v.users)
    assert len(split.train) == int((n - 3).sum())
    u = 5
    row = np.flatnonzero(split.test.users == u)[0]
    items = v.event_items[v.offsets[u] : v.offsets[u + 1]]
    assert split.test.ends[row] == n[u] - 1 and split.test.targets[row] == items[-1]
    assert split.validation.targets[row] == items[-2]
    assert sorted(split.train.targets[split.train.users == u]) == sorted(items[1:-2])
    assert split.popularity["test"].sum() == int((n - 1).sum())
    assert split.popularity["train"].sum() == int((n - 2).sum())
    last2 = leave_one_out(v, max_train_prefixes_per_user=2)
    assert len(last2.train) == 2 * len(v.users)
    assert set(last2.train.ends[last2.train.users == u]) == {n[u] - 4, n[u] - 3}
    test = split.test.subset([row])
    seen = seen_rows(v, test.users, test.ends, keep=test.targets)[0]
    assert items[-1] not in seen and set(seen) == set(items[:-1]) - {items[-1]}


def test_users_with_fewer_than_three_events_are_skipped_and_counted(tmp_path, tiny_bert):
    from helpers import write_card
    from transformers import AutoTokenizer

    from interestbert.encoder import Verbaliser, load_card_data

    data = load_card_data(write_card(tmp_path), tmp_path / "data")  # u1: 3 events, u2: 1 event
    split = leave_one_out(Verbaliser(data, AutoTokenizer.from_pretrained(str(tiny_bert)), 32))
    assert split.skipped_users == 1 and len(split.test) == 1 and len(split.train) == 0


# ---------------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def learnable_card(tmp_path_factory):
    """A shop where each user stays in one of four categories: the next item's category is learnable from the
    history text, popularity is flat."""
    from helpers import write_card

    folder = tmp_path_factory.mktemp("learnable")
    nouns = {
        "garden": ["pruning shears", "trowel", "watering can", "seed tray", "compost bin"],
        "coffee": ["espresso beans", "burr grinder", "moka pot", "milk frother", "tamper"],
        "camping": ["dome tent", "sleeping bag", "camp stove", "dry bag", "lantern"],
        "yoga": ["yoga mat", "yoga block", "bolster", "stretch strap", "eye pillow"],
    }
    adjectives = ["compact", "organic", "deluxe"]
    items, by_cat = ["id\tname\tcategory"], {}
    for cat, words in nouns.items():
        for noun in words:
            for adj in adjectives:
                item = f"{cat[:2]}{len(items)}"
                items.append(f"{item}\t{adj} {noun}\t{cat}")
                by_cat.setdefault(cat, []).append(item)
    rng = np.random.default_rng(0)
    events = ["user\titem\tts\trating"]
    for u in range(80):
        cat = list(nouns)[u % 4]
        for t, item in enumerate(rng.permutation(by_cat[cat])[:10]):
            events.append(f"u{u}\t{item}\t{1000 + t}\t5")
    card = write_card(folder, events="\n".join(events) + "\n", items="\n".join(items) + "\n")
    return card, folder / "data"


def test_loss_goes_down_and_ndcg_rises(tmp_path, tiny_bert, learnable_card):
    """The head warm-up learns the categories from frozen vectors; the joint loop then lowers the loss further
    and raises validation NDCG@10 again (the tiny random BERT alone learns too slowly to test reliably)."""
    card, data_dir = learnable_card
    # no early stop in the warm-up: on 80 validation users its NDCG@10 can dip for 10+ epochs and recover (where
    # depends on the CPU's float rounding); keeping the best epoch is tested below
    args = tiny_args(
        tmp_path,
        tiny_bert,
        data_dir,
        card=str(card),
        max_steps=80,
        eval_steps=20,
        save_steps=1000,
        max_train_prefixes_per_user=None,
        head_init_scale=1.0,
        learning_rate=2e-3,
        head_learning_rate=2e-2,
        head_warmup_epochs=30,
        head_warmup_patience=30,
    )
    untrained = train_module.evaluate_validation(train_module.build(replace(args, head_warmup_epochs=0)))["ndcg@10"]
    run = train_module.build(args)
    warmed = train_module.evaluate_validation(run)["ndcg@10"]
    assert warmed > untrained + 0.1, (untrained, warmed)
    batches = train_module.epoch_batches(run, 0)[:8]
    first_losses = [train_module.step_loss(run, b, 0)[0].item() for b in batches]
    state = train_module.train(run)
    last_losses = [train_module.step_loss(run, b, 0)[0].item() for b in batches]
    assert np.mean(last_losses) < np.mean(first_losses) - 0.15
    assert state["best_metric"] > warmed + 0.1, (warmed, state["log"])
    results = train_module.finish(run, state)
    saved = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert saved["test"]["n"] == 80 and saved["popularity_test"]["n"] == 80
    assert results["test"]["ndcg@10"] > results["popularity_test"]["ndcg@10"] + 0.1


def test_head_warm_up_lowers_the_head_loss_deterministically(tmp_path, tiny_bert, synthetic_dir):
    args = tiny_args(tmp_path, tiny_bert, synthetic_dir, head_learning_rate=5e-2)
    run = train_module.build(args)
    train = run.split.train
    interest = torch.as_tensor(run.encoder.encode_histories(run.verbaliser, train.users, train.ends))
    targets = torch.as_tensor(run.split.train.targets)

    def head_loss() -> float:
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(run.encoder.head(interest), targets).item()

    before = head_loss()
    train_module.warm_up_head(
        run.encoder,
        run.verbaliser,
        run.split.train,
        replace(args, head_warmup_epochs=20),
        run.accelerator,
        run.validation,
    )
    after = head_loss()
    assert after < before - 0.2, (before, after)
    again = train_module.build(replace(args, head_warmup_epochs=20, output_dir=str(tmp_path / "again")))
    torch.testing.assert_close(again.encoder.head.weight, run.encoder.head.weight)


def test_joint_head_learning_rate_zero_holds_the_warmed_up_head_while_the_adapter_trains(
    tmp_path, tiny_bert, synthetic_dir
):
    args = tiny_args(tmp_path, tiny_bert, synthetic_dir, head_warmup_epochs=5, max_steps=3, eval_steps=3, do_test=False)
    held = train_module.build(replace(args, joint_head_learning_rate=0.0))
    default = train_module.build(replace(args, output_dir=str(tmp_path / "default")))
    # the warm-up still runs at --head_learning_rate: both start from the same fitted head
    torch.testing.assert_close(held.encoder.head.weight, default.encoder.head.weight)
    warmed = held.encoder.head.weight.detach().clone(), held.encoder.head.bias.detach().clone()
    adapter = {n: p.detach().clone() for n, p in held.module.st.named_parameters() if p.requires_grad}
    train_module.train(held)
    train_module.train(default)
    assert torch.equal(held.encoder.head.weight, warmed[0]) and torch.equal(held.encoder.head.bias, warmed[1])
    assert not torch.equal(default.encoder.head.weight, warmed[0])
    moved = [n for n, p in held.module.st.named_parameters() if p.requires_grad and not torch.equal(p, adapter[n])]
    assert moved, "the adapter did not train"
    assert replace(args, joint_head_learning_rate=1e-3).joint_head_rate() == 1e-3 and args.joint_head_rate() == 2e-2
    with pytest.raises(ValueError, match="joint_head_learning_rate"):
        replace(args, joint_head_learning_rate=-1.0)


def test_head_warm_up_keeps_its_best_validation_epoch(tmp_path, tiny_bert, synthetic_dir, capsys):
    args = tiny_args(tmp_path, tiny_bert, synthetic_dir, head_learning_rate=5e-2, head_warmup_epochs=60)
    run = train_module.build(args)
    printed = capsys.readouterr().out
    match = re.search(r"head warm-up: (\d+) epochs .* kept epoch (\d+) \(validation NDCG@10 ([0-9.]+)\)", printed)
    assert match, printed
    done, kept, ndcg = int(match[1]), int(match[2]), float(match[3])
    assert kept <= done <= 60 and (done == 60 or done - kept == args.head_warmup_patience)
    # the head left behind is the kept epoch's: its validation NDCG@10 is the one printed
    assert train_module.evaluate_validation(run)["ndcg@10"] == pytest.approx(ndcg, abs=1e-4)


def test_head_warm_up_encodes_at_most_its_cap(tmp_path, tiny_bert, synthetic_dir, capsys):
    args = tiny_args(tmp_path, tiny_bert, synthetic_dir, head_warmup_epochs=2, head_warmup_max_examples=50)
    run = train_module.build(args)
    assert len(run.split.train) > 50
    assert "2 epochs over 50 frozen history vectors" in capsys.readouterr().out
    with pytest.raises(ValueError, match="head_warmup_max_examples"):
        replace(args, head_warmup_max_examples=0)
    with pytest.raises(ValueError, match="head_warmup_patience"):
        replace(args, head_warmup_patience=0)


def test_sampled_softmax_candidates_hold_the_targets_and_repeat_per_step():
    targets = torch.tensor([5, 17, 5, 990])
    candidates, labels = train_module.sample_candidates(1000, targets, 64, seed=1, step=3)
    assert torch.equal(candidates[labels], targets)
    assert len(candidates) <= 68 and torch.equal(candidates, torch.unique(candidates))
    again, _ = train_module.sample_candidates(1000, targets, 64, seed=1, step=3)
    other, _ = train_module.sample_candidates(1000, targets, 64, seed=1, step=4)
    assert torch.equal(candidates, again) and not torch.equal(candidates, other)


def test_training_with_a_sampled_softmax(tmp_path, tiny_bert, synthetic_dir, capsys):
    args = tiny_args(
        tmp_path,
        tiny_bert,
        synthetic_dir,
        full_softmax_max_items=100,
        num_negatives=64,
        max_steps=3,
        eval_steps=3,
        do_test=False,
    )
    run = train_module.build(args)
    assert "more than --full_softmax_max_items 100: the head trains with a sampled softmax" in capsys.readouterr().out
    loss, parts = train_module.step_loss(run, train_module.epoch_batches(run, 0)[0], step=0)
    assert torch.isfinite(loss) and parts["ce"] < np.log(600)  # a softmax over ~80 candidates, not all 600
    assert train_module.train(run)["global_step"] == 3


@contextlib.contextmanager
def interrupt_at_step(monkeypatch, step: int, signals: int = 0):
    """Stops training in step ``step + 1`` (after ``step`` completed steps): with ``signals=0`` a KeyboardInterrupt
    raised as the step starts; else that many real SIGINTs (Ctrl-C) sent in the middle of its first micro-batch,
    after its forward pass has drawn dropout masks from the RNG."""
    real = train_module.step_loss

    def interrupted(run, batch, at):
        if at == step and not signals:
            raise KeyboardInterrupt
        out = real(run, batch, at)
        if at == step and not interrupted.sent:
            interrupted.sent = True
            for _ in range(signals):
                signal.raise_signal(signal.SIGINT)  # to this thread (os.kill may wake a library's worker)
        return out

    interrupted.sent = False
    monkeypatch.setattr(train_module, "step_loss", interrupted)
    try:
        yield
    finally:
        monkeypatch.setattr(train_module, "step_loss", real)


def assert_same_weights(a_dir, b_dir):
    a = load_file(str(a_dir / "trainable.safetensors"))
    b = load_file(str(b_dir / "trainable.safetensors"))
    assert a.keys() == b.keys() and len(a) > 4
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert any(v.abs().max() > 1e-4 for k, v in a.items() if "lora_B" in k), "the adapter moved from its zero start"
    state_a = json.loads((a_dir / "trainer_state.json").read_text())
    state_b = json.loads((b_dir / "trainer_state.json").read_text())
    assert state_a["best_step"] == state_b["best_step"] and state_a["best_metric"] == state_b["best_metric"]


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path, tiny_bert, synthetic_dir, monkeypatch):
    options = dict(gradient_accumulation_steps=2, do_test=False)
    train_module.finetune(tiny_args(tmp_path / "a", tiny_bert, synthetic_dir, **options))

    with interrupt_at_step(monkeypatch, 8), pytest.raises(KeyboardInterrupt):
        train_module.finetune(tiny_args(tmp_path / "b", tiny_bert, synthetic_dir, **options))
    checkpoints = tmp_path / "b" / "out" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-6"]  # none of the unfinished step 9
    # resume from the regular step-6 checkpoint: steps 7..12 run again
    train_module.finetune(
        tiny_args(
            tmp_path / "b",
            tiny_bert,
            synthetic_dir,
            **options,
            resume_from_checkpoint=str(checkpoints / "checkpoint-6"),
        )
    )
    assert_same_weights(tmp_path / "a" / "out" / "checkpoints" / "checkpoint-12", checkpoints / "checkpoint-12")


def in_a_fresh_process(test) -> bool:
    """Runs ``test`` again in a new pytest process and checks it passed there; True inside that process. Real
    signals are sent in one: a library loaded by an earlier test of this session (OpenVINO's runtime) can turn a
    SIGINT into a segmentation fault of the whole test run."""
    if os.environ.get("INTERESTBERT_FRESH_PROCESS") == test.__name__:
        return True
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::{test.__name__}"],
        env={**os.environ, "INTERESTBERT_FRESH_PROCESS": test.__name__},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return False


def test_ctrl_c_checkpoint_resumes_to_the_weights_of_an_uninterrupted_run(
    tmp_path, tiny_bert, synthetic_dir, monkeypatch, capsys
):
    """A real SIGINT in the middle of step 9 (after its forward drew dropout masks): the step and its evaluation
    finish, the checkpoint is step 9's, and the resumed run ends bitwise where an uninterrupted one does."""
    if not in_a_fresh_process(test_ctrl_c_checkpoint_resumes_to_the_weights_of_an_uninterrupted_run):
        return
    options = dict(gradient_accumulation_steps=2, do_test=False)
    # Python's own handler, or SIG_IGN where the test run was started in the background by a shell without job control
    before = signal.getsignal(signal.SIGINT)
    train_module.finetune(tiny_args(tmp_path / "a", tiny_bert, synthetic_dir, **options))
    with interrupt_at_step(monkeypatch, 8, signals=1), pytest.raises(KeyboardInterrupt):
        train_module.finetune(tiny_args(tmp_path / "b", tiny_bert, synthetic_dir, **options))
    out = capsys.readouterr().out
    assert "interrupted after step 9" in out and "--resume_from_checkpoint latest" in out
    checkpoints = tmp_path / "b" / "out" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-6", "checkpoint-9"]
    assert signal.getsignal(signal.SIGINT) is before  # training's handler is gone, the one before it is back
    train_module.finetune(
        tiny_args(tmp_path / "b", tiny_bert, synthetic_dir, **options, resume_from_checkpoint="latest")
    )
    assert_same_weights(tmp_path / "a" / "out" / "checkpoints" / "checkpoint-12", checkpoints / "checkpoint-12")


def test_second_ctrl_c_stops_at_once_without_a_checkpoint(tmp_path, tiny_bert, synthetic_dir, monkeypatch, capsys):
    if not in_a_fresh_process(test_second_ctrl_c_stops_at_once_without_a_checkpoint):
        return
    with interrupt_at_step(monkeypatch, 3, signals=2), pytest.raises(KeyboardInterrupt):
        train_module.finetune(tiny_args(tmp_path, tiny_bert, synthetic_dir, save_steps=2, do_test=False))
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["checkpoint-2"]
    out = capsys.readouterr().out
    assert "stopped at once during step 4" in out and "checkpoint-2" in out


def test_resume_refuses_another_configuration(tmp_path, tiny_bert, synthetic_dir):
    train_module.finetune(tiny_args(tmp_path, tiny_bert, synthetic_dir, max_steps=6, do_test=False))
    other = tiny_args(
        tmp_path, tiny_bert, synthetic_dir, max_steps=6, learning_rate=1e-4, resume_from_checkpoint="latest"
    )
    with pytest.raises(InterestBertError, match=r"learning_rate: checkpoint 0.002, now 0.0001"):
        train_module.finetune(other)


def test_output_dir_with_a_model_is_refused_unless_overwritten(tmp_path, tiny_bert, synthetic_dir, capsys):
    args = tiny_args(tmp_path, tiny_bert, synthetic_dir, max_steps=2, eval_steps=2, do_test=False)
    train_module.finetune(args)
    assert (
        train_module.main(
            [
                "--card",
                "synthetic-shop",
                "--data_dir",
                str(synthetic_dir),
                "--output_dir",
                args.output_dir,
                "--model_name_or_path",
                str(tiny_bert),
                "--max_steps",
                "2",
            ]
        )
        == 2
    )
    assert "--overwrite_output_dir" in capsys.readouterr().err
    train_module.finetune(
        tiny_args(
            tmp_path, tiny_bert, synthetic_dir, max_steps=2, eval_steps=2, do_test=False, overwrite_output_dir=True
        )
    )


def test_unloadable_model_is_one_sentence(tmp_path, synthetic_dir, capsys):
    code = train_module.main(
        [
            "--card",
            "synthetic-shop",
            "--data_dir",
            str(synthetic_dir),
            "--output_dir",
            str(tmp_path / "o"),
            "--model_name_or_path",
            str(tmp_path / "no-such-model"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --model_name_or_path") and err.count("\n") == 1


def test_model_folder_loads_with_its_head_and_as_sentence_transformer(tmp_path, tiny_bert, synthetic_dir):
    from sentence_transformers import SentenceTransformer

    from interestbert.encoder import InterestEncoder

    train_module.finetune(tiny_args(tmp_path, tiny_bert, synthetic_dir, max_steps=4, eval_steps=4, do_test=False))
    folder = tmp_path / "out"
    model = InterestEncoder.from_pretrained(folder)
    assert model.head is not None and model.head.n_items == 600
    text = ["viewed: Bamboo watering can by SoilCraft (Gardening)"]
    np.testing.assert_allclose(SentenceTransformer(str(folder)).encode(text), model.encode(text), atol=1e-5)
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt")) and not list(folder.rglob("*.pkl"))


def test_evaluate_command_prints_model_and_popularity(tmp_path, tiny_bert, synthetic_dir, capsys, monkeypatch):
    from interestbert.inference.cli import main

    monkeypatch.setenv("INTERESTBERT_CACHE", str(tmp_path / "cache"))  # the OpenVINO export below

    train_module.finetune(tiny_args(tmp_path, tiny_bert, synthetic_dir, max_steps=4, eval_steps=4, do_test=False))
    code = main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "out"),
            "--card",
            "synthetic-shop",
            "--data-dir",
            str(synthetic_dir),
            "--split",
            "validation",
            "--k",
            "5",
            "10",
            "--output",
            str(tmp_path / "m.json"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| interestbert (fine-tuned) |" in out and "| popularity |" in out and "NDCG@5" in out
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["popularity"]["n"] == 120 and 0 <= saved["interestbert (fine-tuned)"]["ndcg@10"] <= 1
    assert (saved["precision"], saved["backend"]) == ("fp32", "torch")  # the default: the model's own numbers
    # the fast path, as a user checks it on their own data: the histories in bf16 by OpenVINO, the same ranking
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "out"),
                "--card",
                "synthetic-shop",
                "--data-dir",
                str(synthetic_dir),
                "--split",
                "validation",
                "--precision",
                "bf16",
                "--backend",
                "openvino",
                "--output",
                str(tmp_path / "bf16.json"),
            ]
        )
        == 0
    )
    assert "histories encoded in bf16 by openvino" in capsys.readouterr().out
    fast = json.loads((tmp_path / "bf16.json").read_text())
    assert (fast["precision"], fast["backend"]) == ("bf16", "openvino")
    assert fast["interestbert (fine-tuned)"]["ndcg@10"] == pytest.approx(
        saved["interestbert (fine-tuned)"]["ndcg@10"], abs=0.02
    )


@pytest.mark.slow
def test_two_cpu_processes_under_accelerate_launch(tmp_path, tiny_bert, synthetic_dir):
    """The DDP path (gloo, two processes): trains, evaluates on shards, saves once from the main process."""
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
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
        "interestbert.finetune",
        "--card",
        "synthetic-shop",
        "--data_dir",
        str(synthetic_dir),
        "--output_dir",
        str(out),
        "--model_name_or_path",
        str(tiny_bert),
        "--max_seq_length",
        "48",
        "--max_train_prefixes_per_user",
        "4",
        "--per_device_train_batch_size",
        "8",
        "--max_steps",
        "6",
        "--eval_steps",
        "3",
        "--save_steps",
        "3",
        "--disable_tqdm",
        "--max_eval_users",
        "40",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["processes"] == 2 and results["global_step"] == 6
    assert results["test"]["n"] == 120  # every user scored once across the two shards
    assert proc.stdout.count("best model (step") == 1  # printed (and saved) by the main process only
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-6"]
    assert {p.name for p in (out / "checkpoints" / "checkpoint-6").glob("rng_state_*.safetensors")} == {
        "rng_state_0.safetensors",
        "rng_state_1.safetensors",
    }


def test_a_packed_step_encodes_each_text_once_and_computes_the_unpacked_loss(tmp_path, tiny_bert, synthetic_dir):
    """One length-sorted pass over the step's distinct texts gives the loss and gradients of one pass per horizon
    (dropout off), with fewer padded tokens, and every distinct text in exactly one chunk."""
    args = tiny_args(
        tmp_path, tiny_bert, synthetic_dir, interest_horizons="1:0.5,4:0.3,all:0.2", per_device_train_batch_size=16
    )
    run = train_module.build(args)
    run.module.eval()  # no dropout: both layouts must then agree to float noise
    batch = train_module.epoch_batches(run, 0)[0]
    ex = run.split.train.subset(np.asarray(batch))
    packed, unpacked = train_module.step_inputs(run, ex), train_module.step_inputs(run, ex, packed=False)
    assert len(unpacked.chunks) == 4  # three horizons and the item texts
    assert packed.padded_tokens < unpacked.padded_tokens
    texts = [run.verbaliser.texts_for_indices(ex.users, ex.ends, e) for e, _ in run.encoder.horizons]
    distinct = {(t, args.max_seq_length) for group in texts for t in group}
    distinct |= {(run.verbaliser.item_texts[i], args.max_item_length) for i in ex.targets.tolist()}
    assert sum(len(c["input_ids"]) for c in packed.chunks) == len(distinct) == len(packed.restore)
    assert packed.real_tokens < unpacked.real_tokens  # a short history's 4-event and whole texts are one text
    for chunk in packed.chunks:  # sorted, so a chunk's rows are nearly as long as its longest
        lengths = chunk["attention_mask"].sum(1)
        assert lengths.max() == chunk["attention_mask"].shape[1] and bool((lengths[1:] >= lengths[:-1]).all())
    grads = []
    for layout in (True, False):
        run.module.zero_grad(set_to_none=True)
        loss, parts = train_module.step_loss(run, batch, 0, packed=layout)
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in run.module.parameters() if p.grad is not None]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    assert len(grads[0][1]) == len(grads[1][1]) > 2
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_encodings_reused_before_the_first_update_are_the_ones_encoding_gives(
    tmp_path, tiny_bert, synthetic_dir, precision
):
    """The warm-up's validation vectors (scored again at step 0) and the base model's item vectors (the new head's
    start, the zero-shot baseline's items) are what encoding them again gives, at `encode_precision`; after an
    update they are not."""
    from interestbert.finetune.after_training import evaluate_zero_shot

    args = tiny_args(tmp_path, tiny_bert, synthetic_dir, head_warmup_epochs=3, encode_precision=precision)
    run = train_module.build(args)
    same = dict(batch_size=args.per_device_eval_batch_size, precision=precision)  # bf16 depends on the batching
    again = run.encoder.encode_histories(run.verbaliser, run.validation.users, run.validation.ends, **same)
    np.testing.assert_allclose(run.validation_interest, again, atol=1e-5)
    assert train_module.evaluate_validation(run, run.validation_interest) == train_module.evaluate_validation(run)
    base = run.encoder.encode(run.verbaliser.item_texts, **same)
    np.testing.assert_allclose(run.base_item_vectors, base, atol=1e-5)
    fp32 = run.encoder.encode_histories(run.verbaliser, run.validation.users, run.validation.ends)
    gap = np.abs(run.validation_interest - fp32).max()
    assert gap < 1e-5 if precision == "fp32" else 1e-4 < gap  # bf16 did run in bf16 ...
    assert (run.validation_interest * fp32).sum(1).min() > 0.99  # ... close to fp32
    cached = evaluate_zero_shot(run, run.encoder)
    run.base_item_vectors = None
    assert evaluate_zero_shot(run, run.encoder) == cached
    # a run from a saved model (its head trained) keeps no base item vectors, and one without warm-up no vectors
    state = train_module.train(
        train_module.build(replace(args, max_steps=1, eval_steps=1, output_dir=str(tmp_path / "one")))
    )
    saved = train_module.build(
        replace(args, model_name_or_path=str(tmp_path / "one"), head_warmup_epochs=0, output_dir=str(tmp_path / "two"))
    )
    assert state["global_step"] == 1 and saved.base_item_vectors is None and saved.validation_interest is None


def test_training_interest_equals_the_encoders_interest(tmp_path, tiny_bert, synthetic_dir):
    """The interest the loss sees is the one evaluation, `encode` and `recommend` use (`encode_histories`)."""
    args = tiny_args(tmp_path, tiny_bert, synthetic_dir, interest_horizons="1:0.6,all:0.4")
    run = train_module.build(args)
    assert run.encoder.horizons == ((1, 0.6), (None, 0.4))
    ex = run.split.train.subset(slice(0, 24))
    run.module.eval()
    with torch.no_grad():
        interest, _, _ = run.module(train_module.step_inputs(run, ex, items=False))
    expected = run.encoder.encode_histories(run.verbaliser, ex.users, ex.ends)
    np.testing.assert_allclose(interest.numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="EVENTS:WEIGHT"):
        replace(args, interest_horizons="newest:1")


def test_a_checkpoint_from_before_encode_precision_resumes_as_fp32(tmp_path, tiny_bert, synthetic_dir):
    """Checkpoints written before `encode_precision` existed were made with fp32 encodings: they resume under
    ``--encode_precision fp32`` and are refused, with the option named, under ``auto``."""
    from interestbert.encoder.errors import InterestBertError
    from interestbert.finetune.checkpoint import check_config

    config = tiny_args(tmp_path, tiny_bert, synthetic_dir, encode_precision="fp32").result_config()
    (tmp_path / "training_config.json").write_text(
        json.dumps({k: v for k, v in config.items() if k != "encode_precision"})
    )
    check_config(tmp_path, config)
    with pytest.raises(InterestBertError, match="encode_precision: checkpoint 'fp32', now 'auto'"):
        check_config(tmp_path, dict(config, encode_precision="auto"))


def test_a_checkpoint_resumes_whether_or_not_the_text_prior_is_fitted(tmp_path, tiny_bert, synthetic_dir):
    """The sequence head's text prior is fitted after training: a checkpoint from before the option existed, or
    made with it off, resumes with it on (and the option is not what tells checkpoints apart)."""
    from interestbert.finetune.checkpoint import check_config

    on = tiny_args(tmp_path, tiny_bert, synthetic_dir).result_config()
    off = tiny_args(tmp_path, tiny_bert, synthetic_dir, sequence_text_prior=False).result_config()
    assert "sequence_text_prior" not in on and on == off
    (tmp_path / "training_config.json").write_text(json.dumps(off))
    check_config(tmp_path, on)
