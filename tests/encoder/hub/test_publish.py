"""Publishing: the dry run's files and card, the privacy gate, one commit through a mock Hub (no network), and a
round trip from the Hugging Face cache."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import httpx2
import numpy as np
import pytest
import torch
from helpers import tiny_args

from interestbert.encoder import InterestBertError, InterestEncoder, Verbaliser
from interestbert.encoder.hub import privacy_check
from interestbert.finetune import train as train_module
from interestbert.inference.cli import main
from interestbert.inference.publishing import publish_model

TOKEN = "hf_" + "Q7x" * 12


def cache_snapshot(repo_id: str, folder) -> None:
    """``folder`` as the cached snapshot of the Hub model ``repo_id`` (the tests' own HF_HOME), as a download
    would leave it."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / ("c" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert, synthetic_dir):
    """A tiny model fine-tuned on synthetic-shop for two steps, with test metrics. Its base is recorded by a Hub
    id (the tiny BERT, cached under that id), as a model fine-tuned from a Hub base is."""
    from interestbert.encoder.hub.folder import ModelFolder

    root = tmp_path_factory.mktemp("published")
    train_module.finetune(tiny_args(root, tiny_bert, synthetic_dir, max_steps=2, eval_steps=2, save_steps=2))
    base = f"interestbert-tests/tiny-bert-{uuid.uuid4().hex[:8]}"
    cache_snapshot(base, tiny_bert)
    folder = ModelFolder(root / "out")
    for path, key in (
        (folder.path / "adapter_config.json", "base_model_name_or_path"),
        (folder.subfolder / "config.json", "base_model"),
    ):
        config = json.loads(path.read_text())
        config[key] = base
        path.write_text(json.dumps(config))
    folder.write_card()
    return folder.path


def dry_run(trained, synthetic_dir, out):
    return publish_model(trained, "me/shop", data_dir=str(synthetic_dir), dry_run=out)


def test_the_dry_run_writes_the_model_its_data_card_and_a_hub_model_card(trained, synthetic_dir, tmp_path, capsys):
    from huggingface_hub import ModelCard

    out = tmp_path / "dry"
    assert (
        main(["publish", str(trained), "--repo-id", "me/shop", "--data-dir", str(synthetic_dir), "--dry-run", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "interestbert/data_card/README.md" in files and "README.md" in files and "all_results.json" in files
    assert {
        "adapter_model.safetensors",
        "interestbert/strategy_head/model.safetensors",
        "interestbert/config.json",
    } <= set(files)
    assert not [f for f in files if f.startswith("checkpoints/")]  # a run's optimizer states stay home
    assert all(f"  {f}" in printed for f in files) and "privacy gate passed" in printed
    assert (out / "interestbert/data_card/README.md").read_text().startswith("---")
    assert not (out / "interestbert" / "data_card" / "events.csv").exists()  # the card, never the data

    card = ModelCard.load(out / "README.md")  # the Hub's own parser
    results = json.loads((trained / "all_results.json").read_text())
    assert card.data.library_name == "sentence-transformers" and card.data.base_model_relation == "adapter"
    evals = {(r.metric_type, r.task_name): r.metric_value for r in card.data.eval_results}
    strategy = {m: v for (m, task), v in evals.items() if "strategy head" in task}
    assert strategy == {m: pytest.approx(results["test"][m], abs=1e-6) for m in ("hr@10", "ndcg@10", "mrr@10")}
    assert "me/shop" in card.text and "| popularity |" in card.text and "| base model, zero-shot |" in card.text
    assert not [task for _, task in evals if "popularity" in task or "zero-shot" in task]  # baselines: body only
    assert f"{100 * results['test_tie_share']:.1f} % of the" in card.text and "interestbert publish` read" in card.text


def test_the_privacy_gate_names_what_it_found(trained, synthetic_dir, synthetic_data, tmp_path):
    dry = tmp_path / "dry"
    dry_run(trained, synthetic_dir, dry)
    verbaliser = Verbaliser(synthetic_data, InterestEncoder.from_pretrained(trained).tokenizer, 48)
    user, event = verbaliser.users[3], verbaliser.pieces[5]
    planted = {
        "user id": ("interestbert/config.json", f'"note": "trained for {user}"', repr(user)),
        "event": ("all_results.json", f'"example": "{event}"', "verbalised event"),
        "path": ("interestbert/training_args.json", '"data_dir": "/home/alice/shop/data"', "/home/alice"),
        "token": ("modules.json", f'"auth": "{TOKEN}"', "access token"),
    }
    for what, (name, text, expected) in planted.items():
        copy = tmp_path / what.replace(" ", "-")
        shutil.copytree(dry, copy)
        target = copy / name
        target.write_text(target.read_text()[:-2] + f", {text}}}\n")
        with pytest.raises(InterestBertError, match=rf"^{name} holds .*{expected[:20]}") as err:
            privacy_check(copy, user_ids=verbaliser.users, event_texts=verbaliser.pieces, tokens=[TOKEN])
        assert TOKEN not in str(err.value)
    privacy_check(dry, user_ids=verbaliser.users, event_texts=verbaliser.pieces, tokens=[TOKEN])  # the clean one


def test_a_refused_dry_run_leaves_nothing_and_bad_input_is_one_sentence(trained, synthetic_dir, tmp_path, capsys):
    (trained / "interestbert" / "planted.json").write_text(f'{{"token": "{TOKEN}"}}\n')
    try:
        assert (
            main(
                [
                    "publish",
                    str(trained),
                    "--repo-id",
                    "me/shop",
                    "--data-dir",
                    str(synthetic_dir),
                    "--dry-run",
                    str(tmp_path / "dry"),
                ]
            )
            == 2
        )
    finally:
        (trained / "interestbert" / "planted.json").unlink()
    err = capsys.readouterr().err
    assert "interestbert/planted.json holds an access token" in err and TOKEN not in err
    assert not (tmp_path / "dry").exists()
    for argv, expected in (
        (["--repo-id", "not a repo"], "is not a Hub repo id"),
        (["--repo-id", "me/shop", "--token-env", "NO_SUCH_VAR_XYZ"], "NO_SUCH_VAR_XYZ"),
    ):
        assert main(["publish", str(trained), *argv, "--data-dir", str(synthetic_dir)]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["publish", str(tmp_path), "--repo-id", "me/shop"]) == 2
    assert "is not an interestbert model folder" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert (
        main(
            ["publish", str(trained), "--repo-id", "me/shop", "--data-dir", str(synthetic_dir), "--dry-run", str(mine)]
        )
        == 2
    )
    assert "is not empty" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep"


def test_offline_the_upload_fails_at_once_with_one_sentence(trained, synthetic_dir, capsys):
    assert main(["publish", str(trained), "--repo-id", "me/shop", "--data-dir", str(synthetic_dir)]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and err.count("\n") == 1


class MockHub:
    """Answers what a push asks (create the repo, validate the card, preupload, commit) and keeps every request."""

    def __init__(self):
        self.requests = []

    def __call__(self, request):
        self.requests.append(request)
        path = request.url.path
        if path == "/api/repos/create":
            body = json.loads(request.content)
            repo = f"{body['organization']}/{body['name']}"
            kind = "datasets/" if body.get("type") == "dataset" else ""
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{kind}{repo}", "name": repo})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if path == "/api/agent-harnesses":
            return httpx2.Response(200, json={})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(
                200,
                json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
            )
        if "/commit/" in path:
            return httpx2.Response(
                200,
                json={
                    "commitUrl": "https://huggingface.co/me/shop/commit/" + "ab" * 20,
                    "commitOid": "ab" * 20,
                    "success": True,
                },
            )
        return httpx2.Response(404, json={"error": f"unexpected {request.method} {path}"})  # 404: never retried

    def commits(self) -> list[list[dict]]:
        return [
            [json.loads(line) for line in r.content.decode().splitlines()]
            for r in self.requests
            if "/commit/" in r.url.path
        ]


@pytest.fixture()
def mock_hub(monkeypatch):
    """A `MockHub` that answers every request of ``huggingface_hub`` once ``start()`` is called (so that what a
    test loads before goes to the cache as usual)."""
    import huggingface_hub
    from huggingface_hub import constants

    hub = MockHub()

    def start():
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub)))

    hub.start = start
    yield hub
    huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)


def test_a_push_is_one_commit_of_exactly_the_dry_run_files(
    trained, synthetic_dir, tmp_path, mock_hub, monkeypatch, capsys, caplog
):
    import base64

    expected = dry_run(trained, synthetic_dir, tmp_path / "dry").files
    monkeypatch.setenv("MY_HUB_TOKEN", TOKEN)
    mock_hub.start()
    assert (
        main(
            [
                "publish",
                str(trained),
                "--repo-id",
                "me/shop",
                "--data-dir",
                str(synthetic_dir),
                "--token-env",
                "MY_HUB_TOKEN",
                "--commit-message",
                "first model",
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert "https://huggingface.co/me/shop" in printed.out and "ab" * 20 in printed.out
    (commit,) = mock_hub.commits()
    header = commit[0]["value"]
    files = {line["value"]["path"]: line["value"] for line in commit if line["key"] == "file"}
    assert header["summary"] == "first model" and sorted(files) == expected
    card = base64.b64decode(files["README.md"]["content"]).decode()
    assert (tmp_path / "dry" / "README.md").read_text() == card
    for request in mock_hub.requests:  # the token goes in the Authorization header and nowhere else
        assert TOKEN not in str(request.url) and TOKEN.encode() not in request.content
        assert request.headers.get("authorization") in (None, f"Bearer {TOKEN}")
    assert TOKEN not in printed.out + printed.err + caplog.text


def test_a_published_model_loads_from_the_hub_cache_offline(trained, synthetic_dir, synthetic_data, tmp_path):
    from sentence_transformers import SentenceTransformer

    from interestbert.encoder.scoring import scorer_for

    published = dry_run(trained, synthetic_dir, tmp_path / "dry").folder
    repo_id = f"interestbert-tests/shop-{uuid.uuid4().hex[:8]}"
    cache_snapshot(repo_id, published)

    local, hub = InterestEncoder.from_pretrained(trained), InterestEncoder.from_pretrained(repo_id)
    assert hub.head.item_ids == local.head.item_ids and hub.folder is not None
    texts = ["viewed: Bamboo watering can by SoilCraft (Gardening)", "rated 2/5: a jazz record"]
    np.testing.assert_allclose(hub.encode(texts), local.encode(texts), atol=1e-6)
    # sentence-transformers asks the repo for a config.json it does not have (the base's is used): online the Hub
    # answers 404 and the cache records the absence (.no_exist), which an offline load then relies on
    from huggingface_hub import constants

    missing = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / ".no_exist" / ("c" * 40)
    missing.mkdir(parents=True)
    (missing / "config.json").touch()
    np.testing.assert_allclose(SentenceTransformer(repo_id).encode(texts), local.encode(texts), atol=1e-6)
    verbaliser = Verbaliser(synthetic_data, local.tokenizer, local.max_seq_length)
    users = np.arange(10)
    picks = [scorer_for(e, verbaliser, "strategy").topk(users, k=5)[0] for e in (local, hub)]
    assert picks[0].tolist() == picks[1].tolist()
    with torch.no_grad():
        torch.testing.assert_close(hub.head.weight, local.head.weight)
    with pytest.raises(OSError):  # offline and not in the cache: not found (the CLI makes it one sentence)
        InterestEncoder.from_pretrained("interestbert-tests/not-published")


def test_the_commands_take_a_hub_model_id(trained, synthetic_dir, tmp_path, capsys):
    import pyarrow.parquet as pq

    repo_id = f"interestbert-tests/shop-{uuid.uuid4().hex[:8]}"
    cache_snapshot(repo_id, dry_run(trained, synthetic_dir, tmp_path / "dry").folder)
    tables = []
    for name, model in (("local", str(trained)), ("hub", repo_id)):
        out = tmp_path / f"{name}.parquet"
        assert (
            main(
                [
                    "recommend",
                    "--model",
                    model,
                    "--card",
                    "synthetic-shop",
                    "--data-dir",
                    str(synthetic_dir),
                    "--output",
                    str(out),
                    "--k",
                    "3",
                    "--limit-users",
                    "6",
                ]
            )
            == 0
        )
        tables.append(pq.read_table(out).to_pydict())
    assert tables[0]["item_id"] == tables[1]["item_id"] and len(tables[0]["item_id"]) == 18
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                "interestbert-tests/never-published",
                "--card",
                "synthetic-shop",
                "--data-dir",
                str(synthetic_dir),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "interestbert-tests/never-published" in err and err.count("\n") == 1


def test_push_to_hub_from_python_is_one_commit(trained, synthetic_data, mock_hub):
    encoder = InterestEncoder.from_pretrained(trained)
    verbaliser = Verbaliser(synthetic_data, encoder.tokenizer, encoder.max_seq_length)
    mock_hub.start()
    url = encoder.push_to_hub("me/shop", token=TOKEN, commit_message="from python", verbaliser=verbaliser)
    assert url == "https://huggingface.co/me/shop/commit/" + "ab" * 20
    (commit,) = mock_hub.commits()
    paths = {line["value"]["path"] for line in commit if line["key"] == "file"}
    assert commit[0]["value"]["summary"] == "from python"
    assert {
        "adapter_model.safetensors",
        "interestbert/strategy_head/model.safetensors",
        "README.md",
        "interestbert/data_card/README.md",
    } <= paths
    assert not [r for r in mock_hub.requests if r.method == "HEAD"]  # nothing but the push itself


def test_a_data_card_publishes_alone_and_loads_back_by_its_repo_id(synthetic_dir, tmp_path, mock_hub, capsys):
    from huggingface_hub import constants

    from interestbert.encoder import load_card, load_card_data

    assert (
        main(["cards", "publish", "synthetic-shop", "--repo-id", "me/shop-card", "--dry-run", str(tmp_path / "dry")])
        == 0
    )
    assert [p.name for p in (tmp_path / "dry").iterdir()] == ["README.md"]
    repo_id = f"interestbert-tests/card-{uuid.uuid4().hex[:8]}"
    snapshot = Path(constants.HF_HUB_CACHE) / ("datasets--" + repo_id.replace("/", "--")) / "snapshots" / ("d" * 40)
    snapshot.mkdir(parents=True)
    shutil.copy2(tmp_path / "dry" / "README.md", snapshot / "README.md")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("d" * 40)
    card = load_card(repo_id)  # offline, from the cache
    assert card.name == repo_id and card.item_text.source == load_card("synthetic-shop").item_text.source
    assert len(load_card_data(repo_id, synthetic_dir).events) == len(
        load_card_data("synthetic-shop", synthetic_dir).events
    )

    mock_hub.start()
    assert main(["cards", "publish", "synthetic-shop", "--repo-id", "me/shop-card"]) == 0
    (commit,) = mock_hub.commits()
    assert [line["value"]["path"] for line in commit if line["key"] == "file"] == ["README.md"]
    assert any("/api/datasets/me/shop-card/commit/" in str(r.url) for r in mock_hub.requests)
    assert "me/shop-card" in capsys.readouterr().out


@pytest.mark.parametrize("status, expected", [(401, "token is missing or invalid"), (403, "may not write to me/shop")])
def test_a_refusing_hub_is_one_sentence(trained, synthetic_dir, mock_hub, status, expected, capsys):
    import huggingface_hub

    def refuse(request):  # the mock Hub, but creating the repo is refused
        if request.url.path == "/api/repos/create":
            mock_hub.requests.append(request)
            return httpx2.Response(status, json={"error": "no"})
        return mock_hub(request)

    mock_hub.start()
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(refuse)))
    assert main(["publish", str(trained), "--repo-id", "me/shop", "--data-dir", str(synthetic_dir)]) == 2
    err = capsys.readouterr().err
    assert f"HTTP {status}" in err and expected in err and err.count("\n") == 1
    assert not mock_hub.commits()  # nothing half-published: no commit was made
