"""Interest drift: notice when a person's recent behaviour stops looking like their earlier behaviour, and say how.

- `events`: the data model (`Event`, `History`, `DriftEvent`, `ScanResult`, `DriftConfig`) and explanations.
- `monitor`: the `DriftMonitor`, in batch (`scan`) and streaming (`update`), with its saved calibration.
- `vectors`: event texts to the vectors the monitor compares (encoded once, projected).
- `projection`: the learned "same user?" projection of event vectors, a pure fit on arrays.
- `tuning`: calibrating the threshold, picking the score's form on spliced streams, splitting users for each fit.
- `calibration`: the recipe that calibrates a monitor on a card's own users (`ensure_calibrated`).
- `streams`: renewal streams spliced from real histories and their scoring, which `tuning` and the benchmark use.

Every public name of these modules is importable from `interestbert.encoder.drift`.
"""

from .calibration import (
    CALIBRATION_EVENTS,
    CALIBRATION_USERS,
    DEFAULT_TARGET,
    MARGIN,
    PROJECTION_USERS,
    Calibration,
    ensure_calibrated,
    switch_points,
    switch_table,
)
from .events import (
    WINDOW_VECTORS,
    DriftConfig,
    DriftEvent,
    Event,
    History,
    ScanResult,
    explain,
    histories_from_verbaliser,
    sort_events,
    terms,
)
from .monitor import MAX_STREAM_USERS, MIN_DISTANCES, DriftMonitor
from .projection import (
    ACTION_VOCAB,
    ACTION_WEIGHT,
    ITEM_WEIGHT,
    ITEMS_KEY,
    MIN_ACTION_USERS,
    MIN_ITEM_USERS,
    MIN_PROJECTION_USERS,
    PROJECTION_DIM,
    PROJECTION_LOOKBACK,
)
from .tuning import (
    MIN_ALARMS_TO_CALIBRATE,
    SCORE_FORMS,
    TUNE_STREAMS,
    count_false_alarms,
    splice_design,
    split_for_tuning,
)
from .vectors import MEMO_TEXTS, EventVectors

__all__ = [
    "ACTION_VOCAB",
    "ACTION_WEIGHT",
    "CALIBRATION_EVENTS",
    "CALIBRATION_USERS",
    "DEFAULT_TARGET",
    "ITEMS_KEY",
    "ITEM_WEIGHT",
    "MARGIN",
    "MAX_STREAM_USERS",
    "MEMO_TEXTS",
    "MIN_ACTION_USERS",
    "MIN_ALARMS_TO_CALIBRATE",
    "MIN_DISTANCES",
    "MIN_ITEM_USERS",
    "MIN_PROJECTION_USERS",
    "PROJECTION_DIM",
    "PROJECTION_LOOKBACK",
    "PROJECTION_USERS",
    "SCORE_FORMS",
    "TUNE_STREAMS",
    "WINDOW_VECTORS",
    "Calibration",
    "DriftConfig",
    "DriftEvent",
    "DriftMonitor",
    "EventVectors",
    "Event",
    "History",
    "ScanResult",
    "count_false_alarms",
    "ensure_calibrated",
    "explain",
    "histories_from_verbaliser",
    "sort_events",
    "splice_design",
    "split_for_tuning",
    "switch_points",
    "switch_table",
    "terms",
]
