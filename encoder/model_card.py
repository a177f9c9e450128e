"""The generated model card (``README.md`` of a saved model), in the manner of sentence-transformers'
``model_card.py``: a dataclass of what is known about the model and a Jinja template.

`ModelFolder` renders it from what the folder holds (``interestbert/config.json``, ``training_args.json``,
``all_results.json``, the drift calibration), so the card is always the folder's own description: never the base
model's card. The YAML front matter follows the Hub: ``library_name``, ``base_model``, ``base_model_relation:
adapter``, ``tags``, ``datasets``, ``license`` and, once test metrics exist, ``model-index``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

PROTOCOL = ("leave-one-out in time (each user's last event is the test target, the second-last the validation "
            "target), full ranking over every item of the catalogue, the items the user has already seen excluded "
            "(the target itself is kept)")
TAGS = ["sentence-transformers", "feature-extraction", "peft", "lora", "recommendation", "user-modeling",
        "interest-drift", "interestbert"]
# all_results.json key -> the row's name in the card (each is a full-ranking evaluation of the test split)
RESULT_ROWS = {"sequence_test": "sequence head", "test": "strategy head", "zero_shot_test": "base model, zero-shot",
               "popularity_test": "popularity"}
BASELINES = ("base model, zero-shot", "popularity")  # beside the model's rows in the body, not in model-index
METRICS = (("hr@10", "HR@10"), ("ndcg@10", "NDCG@10"), ("mrr@10", "MRR@10"))

TEMPLATE = """---
{{ front_matter }}---

# {{ card.title }}

An [interestbert](https://pypi.org/project/interestbert/) model: `{{ card.base_model }}` with a LoRA adapter
(r {{ card.lora.r }}, alpha {{ card.lora.lora_alpha }}) that turns a person's verbalised behaviour history into a
{{ card.embedding_dim }}-dimensional vector of their current interests{% if card.parts %}, with {{ card.parts | join(", ") }}{% endif %}.
Histories are cut to {{ card.max_seq_length }} tokens, newest events kept; the interest vector is the
normalised sum of the embeddings of the newest events' texts at these horizons: {{ card.horizons }}.

## Usage

With sentence-transformers (the folder is a plain sentence-transformers model with a PEFT adapter):

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{{ card.model_id }}")
vectors = model.encode(["bought: pruning shears\\nviewed: watering can"])
```

With PEFT and transformers (mean pooling, then normalise):

```python
from peft import PeftModel
from transformers import AutoModel

model = PeftModel.from_pretrained(AutoModel.from_pretrained("{{ card.base_model }}"), "{{ card.model_id }}")
```

With interestbert (the heads, the drift monitor and the verbaliser of a data card):

```python
from interestbert.encoder import InterestEncoder

encoder = InterestEncoder.from_pretrained("{{ card.model_id }}")
```

```bash
interestbert recommend --model {{ card.model_id }} --card CARD --data-dir DATA --output recs.parquet
```

## Training

{% if card.training %}Fine-tuned on the data card `{{ card.dataset }}`: {{ card.training_summary }}.

| argument | value |
| --- | --- |
{% for key, value in card.training.items() %}| `{{ key }}` | `{{ value }}` |
{% endfor %}{% else %}Not fine-tuned: the base model with a fresh LoRA adapter (the adapter adds exactly zero).
{% endif %}
## Evaluation

Protocol: {{ protocol }}.{% if card.tie_share is not none %} {{ "%.1f" | format(100 * card.tie_share) }} % of the
users' last events share their timestamp with the event before (their order is the data file's).{% endif %}

{% if card.results %}Test split of `{{ card.dataset }}`{% if card.test_users %}, {{ "{:,}".format(card.test_users) }} users{% endif %}:

| scorer | HR@10 | NDCG@10 | MRR@10 |
| --- | ---: | ---: | ---: |
{% for name, m in card.results.items() %}| {{ name }} | {{ "%.4f" | format(m["hr@10"]) }} | {{ "%.4f" | format(m["ndcg@10"]) }} | {{ "%.4f" | format(m["mrr@10"]) }} |
{% endfor %}{% else %}No evaluation is recorded in this folder yet (`interestbert evaluate` measures one).
{% endif %}{% if card.drift %}
Drift monitor: calibrated to {{ card.drift.target }} false alarms per 1,000 events (window {{ card.drift.window }},
stride {{ card.drift.stride }}, threshold {{ "%.4f" | format(card.drift.threshold) }}).
{% endif %}
## Limitations

- The heads score only the catalogue they were trained on; a new item gets a row from its text alone (cold start).
- Numbers hold for the data card and protocol above; another domain needs its own fine-tuning and evaluation.
- Histories are text: what the verbaliser does not write (prices left out, events older than the token budget)
  the model does not see.

## Privacy

The training data are people's behaviour. This folder holds no user id, no event and no verbalised history of
the training data: only model weights, the item catalogue (item ids and the texts of items, which are the
catalogue, not anyone's behaviour), aggregate metrics and options. A sequence head also holds how many training
events each item has (its text prior and popularity bias use them): counts over everyone, not anyone's
events.{% if card.published %} Before it was published, `interestbert publish` read every file against the
training data and found none of its user ids (those of at least 4 characters that are not plain numbers: shorter
or numeric ids cannot be told from numbers), none of its verbalised events, no absolute local path and no token.
The data card it was trained with is in `interestbert/data_card/README.md` (the card only: the data is not
published).{% endif %}
"""


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
        meta = {"library_name": "sentence-transformers", "base_model": self.base_model,
                "base_model_relation": "adapter", "license": self.license, "tags": list(TAGS),
                "pipeline_tag": "feature-extraction"}
        if self.dataset_id:
            meta["datasets"] = [self.dataset_id]
        results = {name: m for name, m in self.results.items() if name not in BASELINES}
        if results and self.dataset:
            meta["model-index"] = [{"name": self.model_id, "results": [{
                "task": {"type": "recommendation", "name": f"next-item recommendation ({name}, full ranking)"},
                "dataset": {"type": self.dataset_id or self.dataset, "name": self.dataset, "split": "test"},
                "metrics": [{"type": key, "name": label, "value": round(float(m[key]), 6)} for key, label in METRICS],
            } for name, m in results.items()]}]
        return meta

    def render(self) -> str:
        from jinja2 import Environment

        env = Environment(keep_trailing_newline=True, autoescape=False)  # noqa: S701 - Markdown, not HTML
        text = yaml.safe_dump(self.front_matter(), sort_keys=False, allow_unicode=True)
        return env.from_string(TEMPLATE).render(card=self, front_matter=text, protocol=PROTOCOL)
