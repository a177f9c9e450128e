"""Shared fixtures: a tiny random BERT built in code, the shared real data, and an isolated Hugging Face cache.

Nothing here downloads: the hub is switched off, the Hugging Face cache is a fresh temporary folder (so a test
that registers the packaged model there never touches the user's own cache), and the tiny BERT and its WordPiece
vocabulary are built from words of the synthetic-shop vocabulary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# Before anything imports huggingface_hub: its constants read these once.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="interestbert-tests-hf-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("INTERESTBERT_SHARED_DATA", REPO.parent / "shared" / "data"))

REAL_CARDS = {
    # card name: (users, items with events, catalogue, events), as ../shared/data/README.md counts them
    "movielens-100k": (943, 1682, 1682, 100_000),
    "movielens-1m": (2999, 3615, 3883, 487_650),
    "amazon-beauty": (1340, 733, 733, 28_798),
    "amazon-office": (4905, 2420, 2420, 53_258),
}


def shared_data_dir(card: str) -> Path:
    """The data of a shipped card under ../shared/data (the folder its card names as ``data_folder``); skips the
    test on a user's machine that lacks it, fails in CI."""
    from interestbert.encoder.cards import load_card

    path = SHARED_DATA / load_card(card).data_folder
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the real data at {path} (../shared/data beside the project).")
        pytest.skip(f"needs the real datasets at {path} (../shared/data beside the project), absent here")
    return path


def _tiny_corpus() -> list[str]:
    from interestbert.encoder.cards import synthetic

    words = [repr(synthetic._VOCAB), " ".join(synthetic._ACTIONS)]  # the shop's own vocabulary
    words += [
        "viewed bought added to cart rated 1/5 2/5 3/5 4/5 5/5 by the of and a",
        "Toy Story (1995), Animation, Children's, Comedy: rated 4/5",
    ]
    return words


def _tiny_vocab() -> dict[str, int]:
    """The corpus's words, characters and ``##`` characters, sorted: the same ids in every process (the WordPiece
    trainer breaks ties with a per-process random hash, so a trained vocabulary, and the random BERT over it, varied
    from run to run)."""
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalise, split = BertNormalizer(lowercase=True), BertPreTokenizer()
    words = sorted({w for line in _tiny_corpus() for w, _ in split.pre_tokenize_str(normalise.normalize_str(line))})
    chars = sorted({c for w in words for c in w})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *words]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A folder holding a random 2-layer BERT (hidden 32) and a WordPiece tokenizer built in code (~0.5 s)."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    wp = BertWordPieceTokenizer(_tiny_vocab(), lowercase=True)
    tokenizer = BertTokenizerFast(
        tokenizer_object=wp._tokenizer,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny_encoder(tiny_bert):
    """A fresh InterestEncoder on the tiny BERT, with LoRA B made non-zero so the adapter changes the output."""
    import torch

    from interestbert.encoder import InterestEncoder

    encoder = InterestEncoder.from_pretrained(str(tiny_bert), lora_dropout=0.0, max_seq_length=64)
    torch.manual_seed(1)
    for name, p in encoder.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    return encoder


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """synthetic-shop files for a small, fixed shop (seed 0, 120 users)."""
    from interestbert.encoder.cards import synthetic

    folder = tmp_path_factory.mktemp("synthetic-shop")
    synthetic.generate(folder, seed=0, n_users=120, n_items=600)
    return folder


@pytest.fixture(scope="session")
def synthetic_data(synthetic_dir):
    from interestbert.encoder import load_card_data

    return load_card_data("synthetic-shop", synthetic_dir)


@pytest.fixture()
def live(tiny_encoder, synthetic_data):
    """A model with both heads and two interest horizons on the synthetic shop, its drift monitor on the encoder."""
    import numpy as np
    import torch

    from interestbert.encoder import StrategyHead, Verbaliser
    from interestbert.encoder.drift import DriftConfig, DriftMonitor
    from interestbert.encoder.sequence import SequenceHead, SequenceOptions
    from interestbert.inference.live import LiveRecommender

    verbaliser = Verbaliser(synthetic_data, tiny_encoder.tokenizer, 64)
    vectors = tiny_encoder.encode(verbaliser.item_texts)
    rng = np.random.default_rng(0)
    tiny_encoder.head = StrategyHead(verbaliser.item_ids, vectors, popularity=rng.integers(0, 50, len(vectors)))
    torch.manual_seed(0)
    head = SequenceHead(
        verbaliser.item_ids,
        vectors,
        popularity=rng.integers(0, 50, len(vectors)),
        options=SequenceOptions(dim=8, layers=1, heads=2, dropout=0.0, max_events=12),
    ).eval()
    with torch.no_grad():
        head.item.normal_(0, 0.5)
    tiny_encoder.sequence_head = head
    tiny_encoder.horizons = ((3, 0.4), (None, 0.6))
    monitor = DriftMonitor(
        tiny_encoder.encode,
        DriftConfig(window=4, stride=2, threshold=0.02, alpha_max=0.6, centre=False),
        separator=verbaliser.separator,
    )
    return LiveRecommender.from_card_data(tiny_encoder, synthetic_data, monitor, verbaliser=verbaliser)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port (no persistence), for the session."""
    from helpers import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have redis-server (.ci/run installs it with apt-get).")
        pytest.skip("needs redis-server (apt-get install redis-server), absent here")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.time() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
