"""A bounded memo of text vectors for answering one person at a time.

A live service encodes the same texts again and again: an event's text (item x action) recurs across people and
across the drift monitor's windows, and a short interest horizon's text recurs until a new event arrives. With
`InterestEncoder.text_cache` set to a `VectorCache`, `InterestEncoder.encode` looks each text up first and
encodes only the ones it has not seen, in one call; the least recently used texts are dropped beyond
``max_texts``. Entries are keyed by the encode options and the weights' version, so a changed model (training,
merging) never answers from the old one's vectors.

Batch jobs leave it unset: a text then gets the vector of the batch it came in. A vector encoded alone and one
encoded in a padded batch agree to float rounding (cosine 1 to ~1e-6), not bit for bit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import numpy as np

DEFAULT_TEXTS = 50_000  # ~77 MB of float32 vectors at dim 384


class VectorCache:
    """Text -> unit vector, least recently used dropped beyond ``max_texts`` (thread-safe).

    Example:
        >>> cache = VectorCache(max_texts=2)
        >>> cache.encode(["a", "b"], "fp32", lambda texts: np.ones((len(texts), 3), np.float32)).shape
        (2, 3)
        >>> cache.stats()["misses"], cache.stats()["texts"]
        (2, 2)
    """

    def __init__(self, max_texts: int = DEFAULT_TEXTS):
        if max_texts < 1:
            raise ValueError(f"`max_texts` should be at least 1, got {max_texts}.")
        self.max_texts = int(max_texts)
        self._rows: OrderedDict[tuple[Hashable, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def encode(self, texts: Sequence[str], key: Hashable, compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """The vectors of ``texts`` (``(len(texts), dim)``), ``compute`` called once on the distinct texts not held
        under ``key``."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if (key, t) not in self._rows))
        fresh = compute(missing) if missing else None
        with self._lock:
            if missing:
                for text, row in zip(missing, np.asarray(fresh, dtype=np.float32)):
                    self._rows[(key, text)] = row
            rows = []
            for text in texts:
                row = self._rows.get((key, text))
                if row is None:  # dropped by another thread meanwhile: take the fresh one
                    row = np.asarray(fresh, dtype=np.float32)[missing.index(text)]
                else:
                    self._rows.move_to_end((key, text))
                rows.append(row)
            self.misses += len(missing)
            self.hits += len(texts) - len(missing)
            while len(self._rows) > self.max_texts:
                self._rows.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, 0), np.float32)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def stats(self) -> dict:
        """Texts held, their limit, and the lookups that found (hits) or encoded (misses) a text."""
        return {"texts": len(self._rows), "max_texts": self.max_texts, "hits": self.hits, "misses": self.misses}
