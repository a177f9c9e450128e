"""The generated model card (``README.md`` of a saved model), in the manner of sentence-transformers'
``model_card.py``: a dataclass of what is known about the model and a Jinja template (``model_card.md`` beside
this file).

`ModelFolder` renders it from what the folder holds (``interestbert/config.json``, ``training_args.json``,
``all_results.json``, the drift calibration), so the card is always the folder's own description: never the base
model's card. The YAML front matter follows the Hub: ``library_name``, ``base_model``, ``base_model_relation:
adapter``, ``tags``, ``datasets``, ``license`` and, once test metrics exist, ``model-index``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROTOCOL = (
    "leave-one-out in time (each user's last event is the test target, the second-last the validation "
    "target), full ranking over every item of the catalogue, the items the user has already seen excluded "
    "(the target itself is kept)"
)
TAGS = [
    "sentence-transformers",
    "feature-extraction",
    "peft",
    "lora",
    "recommendation",
    "user-modeling",
    "interest-drift",
    "interestbert",
]
# all_results.json key -> the row's name in the card (each is a full-ranking evaluation of the test split)
RESULT_ROWS = {
    "sequence_test": "sequence head",
    "test": "strategy head",
    "zero_shot_test": "base model, zero-shot",
    "popularity_test": "popularity",
}
BASELINES = ("base model, zero-shot", "popularity")  # beside the model's rows in the body, not in model-index
METRICS = (("hr@10", "HR@10"), ("ndcg@10", "NDCG@10"), ("mrr@10", "MRR@10"))

TEMPLATE = Path(__file__).with_name("model_card.md")  # the Jinja template of the card, beside this file


@dataclass
class ModelCardData:
    """What the generated card says about a model (see `ModelFolder.write_card`)."""

    model_id: str = "path/to/model"
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    lora: dict = field(default_factory=dict)
    embedding_dim: int = 0
    max_seq_length: int = 0
    horizons: str = "all:1"
    parts: list[str] = field(default_factory=list)
    dataset: str | None = None
    dataset_id: str | None = None
    license: str = "apache-2.0"
    training: dict = field(default_factory=dict)
    training_summary: str = ""
    results: dict[str, dict] = field(default_factory=dict)
    test_users: int | None = None
    drift: dict | None = None
    tie_share: float | None = None
    published: bool = False  # rendered for `interestbert publish`, after its privacy gate

    @property
    def title(self) -> str:
        return f"interestbert: {self.base_model} + LoRA" + (f" on {self.dataset}" if self.dataset else "")

    def front_matter(self) -> dict:
        meta = {
            "library_name": "sentence-transformers",
            "base_model": self.base_model,
            "base_model_relation": "adapter",
            "license": self.license,
            "tags": list(TAGS),
            "pipeline_tag": "feature-extraction",
        }
        if self.dataset_id:
            meta["datasets"] = [self.dataset_id]
        results = {name: m for name, m in self.results.items() if name not in BASELINES}
        if results and self.dataset:
            meta["model-index"] = [
                {
                    "name": self.model_id,
                    "results": [
                        {
                            "task": {
                                "type": "recommendation",
                                "name": f"next-item recommendation ({name}, full ranking)",
                            },
                            "dataset": {"type": self.dataset_id or self.dataset, "name": self.dataset, "split": "test"},
                            "metrics": [
                                {"type": key, "name": label, "value": round(float(m[key]), 6)} for key, label in METRICS
                            ],
                        }
                        for name, m in results.items()
                    ],
                }
            ]
        return meta

    def render(self) -> str:
        from jinja2 import Environment

        env = Environment(keep_trailing_newline=True, autoescape=False)  # noqa: S701 - Markdown, not HTML
        text = yaml.safe_dump(self.front_matter(), sort_keys=False, allow_unicode=True)
        return env.from_string(TEMPLATE.read_text(encoding="utf-8")).render(
            card=self, front_matter=text, protocol=PROTOCOL
        )
