"""Deterministic generator of the embedded default dataset "synthetic-shop".

A fake online shop with 12 clearly different product categories. Each user's
history is a run of *segments*: within a segment ~85 % of events come from the
segment's main category and ~15 % from a per-user background category that
never changes (noise). Between segments the main category switches; every true
switch is written to ``switches.csv`` so switch detectors can be scored. About
15 % of users never switch (controls). Two weaker signals keep simple baselines
honest: items are drawn by Zipf-like popularity within a category, and
consecutive picks prefer the sub-line (noun group) of the previous pick.

Files (UTF-8 CSV with a header line):

* ``items.csv``: ``item_id,title,category,brand,price``
* ``events.csv``: ``user_id,item_id,timestamp,action``, grouped by user, in time order
* ``switches.csv``: ``user_id,event_index,timestamp,from_category,to_category``;
  ``event_index`` is the 0-based position in the user's history of the first
  event after the switch, ``timestamp`` that event's time.

The same seed always gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_write

DEFAULT_SEED = 0

# category: (adjectives, nouns, brands, typical price). Nouns double as sub-lines.
_VOCAB = {
    "Gardening": (
        "Ergonomic,Heavy-duty,Stainless,Compact,Organic,Weatherproof,Telescopic,Bamboo",
        "pruning shears,trowel,watering can,seed tray,hose reel,garden kneeler,compost bin,plant labels,hedge trimmer,raised bed",
        "GreenThumb,RootWise,Bloomfield,SoilCraft,Verdant,Hedgehog Tools",
        25.0,
    ),
    "Thriller Books": (
        "Gripping,Dark,Twisty,Bestselling,Chilling,Signed,Hardcover,Paperback",
        "spy novel,detective mystery,legal thriller,psychological thriller,heist story,crime saga,police procedural,conspiracy thriller,cold-case mystery,techno-thriller",
        "Nightshade Press,Blackwood,Cipher Books,Raven House,Redline,Midnight Ink",
        15.0,
    ),
    "Running": (
        "Lightweight,Breathable,Reflective,Cushioned,Seamless,Waterproof,Trail-ready,Carbon-plated",
        "running shoes,race socks,hydration vest,GPS watch,split shorts,compression tights,headlamp,energy gel pack,running cap,foam roller",
        "Stride,Pacer,Velocita,Trailhawk,Kilometer,Fleetfoot",
        60.0,
    ),
    "Coffee": (
        "Single-origin,Dark-roast,Hand-ground,Fair-trade,Barista-grade,Decaf,Washed,Honey-processed",
        "espresso beans,pour-over kettle,burr grinder,French press,moka pot,milk frother,AeroPress filters,cold-brew jar,tamper,cupping spoons",
        "Crema Co,BeanVault,Roastery 9,Morning Ritual,Kaldi,Percolate",
        20.0,
    ),
    "Baking": (
        "Non-stick,Silicone,Professional,Enamelled,Heavy-gauge,Marble,Cast-iron,Artisan",
        "loaf tin,piping bag set,stand mixer,rolling pin,proofing basket,cake turntable,pastry cutter,baking sheet,sourdough starter,bench scraper",
        "FlourPower,Crumb & Co,Oven Lovin,Proofed,Whisk Works,Golden Crust",
        25.0,
    ),
    "Camping": (
        "Ultralight,Insulated,Waterproof,Four-season,Packable,Rugged,Windproof,Solar-powered",
        "dome tent,sleeping bag,camp stove,trekking poles,bivy sack,camping lantern,dry bag,sleeping pad,camp chair,water filter",
        "Basecamp,TrailNest,Summit Gear,Pinecone,Wildway,Ridgeline",
        70.0,
    ),
    "Photography": (
        "Full-frame,Weather-sealed,Prime,Carbon-fibre,Mirrorless,Fast,Vintage,Stabilised",
        "camera body,50mm lens,tripod,camera strap,ND filter,flash unit,memory card,lens hood,camera bag,remote shutter",
        "Aperture,Lumina,ShutterCraft,Focal Point,Exposure Lab,Prism Optics",
        150.0,
    ),
    "Board Games": (
        "Cooperative,Strategic,Deluxe,Family,Two-player,Legacy,Tabletop,Collector's",
        "deck-builder,dungeon crawler,worker-placement game,trivia game,party game,chess set,card game,war game,puzzle game,dice game",
        "Meeple House,Rolling Dice,Tabletop Titans,Gamewright,Cardboard Castle,Pawnshop Games",
        35.0,
    ),
    "Skincare": (
        "Hydrating,Fragrance-free,Vitamin C,Soothing,Exfoliating,Overnight,Mineral,Hyaluronic",
        "face serum,day cream,cleansing balm,sheet mask,eye cream,toner,sunscreen SPF 50,lip balm,face oil,clay mask",
        "Dewdrop,Glow Theory,PureSkin,Petal & Pine,Aura Labs,Calm Botanics",
        22.0,
    ),
    "Jazz Records": (
        "Remastered,Live,Vintage,180g,First-press,Deluxe,Limited,Mono",
        "bebop LP,big-band album,cool-jazz LP,swing compilation,hard-bop record,bossa nova LP,fusion album,piano-trio LP,vocal-jazz album,free-jazz record",
        "Blue Tone,Vinyl Vault,Smoky Room,Bluebird,Night Owl,Brass Monkey",
        28.0,
    ),
    "Yoga": (
        "Eco,Non-slip,Extra-thick,Cork,Travel,Organic-cotton,Premium,Foldable",
        "yoga mat,yoga block,stretch strap,bolster,meditation cushion,yoga wheel,mat bag,yoga towel,balance pad,eye pillow",
        "Lotus Flow,Namaste,ZenPath,Sattva,Breathwork,Asana Lab",
        30.0,
    ),
    "Cycling": (
        "Aero,Carbon,Tubeless,Clip-in,Gravel,Lightweight,Reflective,Puncture-proof",
        "road helmet,bike lights,saddle,cycling jersey,bike pump,chain lube,bar tape,bike lock,cycling gloves,bottle cage",
        "Spokesman,Velo Works,Cadence,Freewheel,Chainline,Peloton Parts",
        45.0,
    ),
}
_ACTIONS = ["viewed", "added to cart", "bought", "rated 1/5", "rated 2/5", "rated 3/5", "rated 4/5", "rated 5/5"]
_ACTION_P = [0.55, 0.13, 0.22, 0.005, 0.005, 0.015, 0.03, 0.045]  # ratings skew high
_MIN_SEGMENT = 8  # shortest segment, so every switch has context on both sides
_CONTROL_SHARE = 0.15  # users who never switch
_NOISE = 0.15  # share of background-category events
_STICKY = 0.5  # chance to stay on the previous pick's sub-line
_ZIPF = 1.0  # popularity exponent within a category
_YEAR_2024 = (1704067200, 1735689600)  # [2024-01-01, 2025-01-01) UTC
_GAP_MEAN = (3 * 3600, 3 * 86400)  # per-user mean gap: 3 hours .. 3 days


@dataclass
class _Catalog:
    """Items plus the per-category lookups the user model samples from."""

    rows: list  # items.csv rows, by item index
    item_cat: np.ndarray  # category index of each item
    item_sub: np.ndarray  # sub-line of each item within its category
    item_w: np.ndarray  # Zipf popularity weight within its category
    members: list  # per category: item indices, most popular first


def _check_int(name: str, value, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` should be an integer >= {minimum}{why}, got {value!r}.")


def _build_catalog(rng: np.random.Generator, n_items: int) -> _Catalog:
    """Spread items evenly over categories, with unique titles and Zipf popularity."""
    width = max(5, len(str(n_items - 1)))
    item_cat = rng.permutation(np.arange(n_items) % len(_VOCAB))  # interleave ids
    item_sub, item_w = np.zeros(n_items, int), np.zeros(n_items)
    rows, members = [None] * n_items, []
    for c, (name, (adjs, nouns, brands, base)) in enumerate(_VOCAB.items()):
        adjs, nouns, brands = adjs.split(","), nouns.split(","), brands.split(",")
        idx = rng.permutation(np.flatnonzero(item_cat == c))  # popularity order
        combos = rng.permutation(len(adjs) * len(nouns))
        n_sub = int(rng.integers(2, 4))
        for rank, i in enumerate(idx):
            a, n = divmod(int(combos[rank % len(combos)]), len(nouns))
            variant = rank // len(combos)  # only once all adjective-noun pairs are used
            title = f"{adjs[a]} {nouns[n]}" + (f" v{variant + 1}" if variant else "")
            brand = brands[int(rng.integers(len(brands)))]
            rows[i] = [f"I{i:0{width}d}", title, name, brand, f"{base * rng.lognormal(0, 0.4):.2f}"]
            item_sub[i], item_w[i] = n % n_sub, (rank + 1.0) ** -_ZIPF
        members.append(idx)
    return _Catalog(rows, item_cat, item_sub, item_w, members)


def _segments(rng: np.random.Generator, n_events: int) -> tuple[int, list]:
    """Draw a background category and [(start, main category), ...] segments."""
    order = rng.permutation(len(_VOCAB))
    background, mains_pool = int(order[0]), [int(c) for c in order[1:]]
    n_switch = 0 if rng.random() < _CONTROL_SHARE else 1 + int(rng.poisson(0.7))
    n_switch = min(n_switch, n_events // _MIN_SEGMENT - 1)
    # Spread the slack beyond the minimum lengths randomly over the segments.
    cuts = np.sort(rng.integers(0, n_events - _MIN_SEGMENT * (n_switch + 1) + 1, size=n_switch))
    starts = [0] + [int(cut) + _MIN_SEGMENT * (k + 1) for k, cut in enumerate(cuts)]
    mains = [mains_pool[int(rng.integers(len(mains_pool)))]]
    for _ in range(n_switch):  # a switch always lands on a different main category
        choices = [c for c in mains_pool if c != mains[-1]]
        mains.append(choices[int(rng.integers(len(choices)))])
    return background, list(zip(starts, mains))


def _pick(rng: np.random.Generator, cat: _Catalog, used: np.ndarray, c: int, prev_sub) -> int:
    """Draw an unused item of category `c` by popularity, often on the previous sub-line."""
    members = cat.members[c]
    w = cat.item_w[members] * ~used[members]
    if prev_sub is not None and rng.random() < _STICKY:
        same = w * (cat.item_sub[members] == prev_sub)
        w = same if same.sum() > 0 else w
    if w.sum() == 0:  # the user has seen the whole category: most popular unused item
        return int(np.argmax(cat.item_w * ~used))
    cum = np.cumsum(w)
    return int(members[min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(members) - 1)])


def _user(rng: np.random.Generator, cat: _Catalog, user_id: str, n_events: int, events: list, switches: list) -> None:
    """Append one user's events and true switches to the output row lists."""
    names = list(_VOCAB)
    background, segments = _segments(rng, n_events)
    gaps = 1 + np.floor(rng.exponential(np.exp(rng.uniform(*np.log(_GAP_MEAN))), n_events - 1))
    times = int(rng.integers(*_YEAR_2024)) + np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)
    actions = rng.choice(len(_ACTIONS), size=n_events, p=_ACTION_P)
    used = np.zeros(len(cat.rows), bool)
    bounds = [s for s, _ in segments[1:]] + [n_events]
    for k, ((start, main), end) in enumerate(zip(segments, bounds)):
        if k:
            switches.append([user_id, start, int(times[start]), names[segments[k - 1][1]], names[main]])
        # Noise never takes the first event (keeps the switch point sharp) nor a third
        # of the segment (keeps the main category a clear majority).
        noisy = np.zeros(end - start, bool)
        n_noisy = min(int(rng.binomial(end - start - 1, _NOISE)), (end - start - 1) // 3)
        noisy[1 + rng.choice(end - start - 1, size=n_noisy, replace=False)] = True
        prev_sub = None
        for t in range(start, end):
            c = background if noisy[t - start] else main
            item = _pick(rng, cat, used, c, prev_sub if c == main else None)
            used[item] = True
            if c == main and cat.item_cat[item] == main:
                prev_sub = cat.item_sub[item]
            events.append([user_id, cat.rows[item][0], int(times[t]), _ACTIONS[actions[t]]])


_EVENTS_HEADER = ["user_id", "item_id", "timestamp", "action"]
_SWITCHES_HEADER = ["user_id", "event_index", "timestamp", "from_category", "to_category"]


class _Rows:
    """A CSV file that `_user` appends rows to, as it would to a list."""

    def __init__(self, f, header: list):
        self.writer = csv.writer(f, lineterminator="\n")
        self.writer.writerow(header)
        self.n = 0

    def append(self, row: list) -> None:
        self.writer.writerow(row)
        self.n += 1


def _write_csv(path: str, header: list, rows: list) -> None:
    """Writes a CSV through `atomic_write` (a temporary sibling, fsync, rename): no half-written file is left."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)

    atomic_write(path, write)


def generate(
    output_dir: str | os.PathLike,
    *,
    seed: int = DEFAULT_SEED,
    n_users: int = 2000,
    n_items: int = 1500,
    min_events: int = 20,
    max_events: int = 120,
) -> dict:
    """Write ``events.csv``, ``items.csv`` and ``switches.csv`` into `output_dir`.

    Args:
        output_dir: Folder to write into; created if missing. Existing files are replaced.
        seed: Seed for ``np.random.default_rng``; the same seed gives byte-identical files.
        n_users: Number of users.
        n_items: Number of items, spread evenly over the 12 categories (at least 240).
        min_events: Shortest user history (at least 20: two segments of 8+ events).
        max_events: Longest user history (between `min_events` and `n_items`).

    Returns:
        Row counts: ``{"users": ..., "items": ..., "events": ..., "switches": ...}``.

    Raises:
        ValueError: If an argument is out of range; the message quotes the value.
    """
    _check_int("seed", seed, 0)
    _check_int("n_users", n_users, 1)
    _check_int("n_items", n_items, 20 * len(_VOCAB), f" ({len(_VOCAB)} categories x 20 items)")
    _check_int("min_events", min_events, 2 * _MIN_SEGMENT + 4, f" (two segments of {_MIN_SEGMENT}+ events)")
    _check_int("max_events", max_events, min_events, " (`min_events`)")
    if max_events > n_items:
        raise ValueError(
            f"`max_events` should be at most `n_items` ({n_items}) since users never repeat an item, "
            f"got {max_events!r}."
        )
    rng = np.random.default_rng(seed)
    cat = _build_catalog(rng, n_items)
    width = max(4, len(str(n_users - 1)))
    os.makedirs(output_dir, exist_ok=True)
    out = os.fspath(output_dir)
    _write_csv(os.path.join(out, "items.csv"), ["item_id", "title", "category", "brand", "price"], cat.rows)
    counts = {}

    def write(events_tmp: Path, switches_tmp: Path) -> None:  # rows go to disk as they are made: memory stays flat
        with (
            open(events_tmp, "w", encoding="utf-8", newline="") as fe,
            open(switches_tmp, "w", encoding="utf-8", newline="") as fs,
        ):
            events, switches = _Rows(fe, _EVENTS_HEADER), _Rows(fs, _SWITCHES_HEADER)
            for u, n_events in enumerate(rng.integers(min_events, max_events + 1, size=n_users)):
                _user(rng, cat, f"U{u:0{width}d}", int(n_events), events, switches)
            counts.update(events=events.n, switches=switches.n)

    atomic_write(
        os.path.join(out, "switches.csv"),
        lambda switches_tmp: atomic_write(
            os.path.join(out, "events.csv"), lambda events_tmp: write(events_tmp, switches_tmp)
        ),
    )
    return {"users": n_users, "items": n_items, **counts}


def main(argv=None) -> int:
    """Command line: ``python -m interestbert.encoder.cards.synthetic OUT_DIR [--seed S] [--n-users N]
    [--n-items M]``."""
    parser = argparse.ArgumentParser(
        prog="python -m interestbert.encoder.cards.synthetic",
        description="Write the synthetic-shop dataset (items, events, true switches).",
    )
    parser.add_argument("output_dir", help="folder for items.csv, events.csv and switches.csv")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--n-users", type=int, default=2000)
    parser.add_argument("--n-items", type=int, default=1500)
    args = parser.parse_args(argv)
    try:
        counts = generate(args.output_dir, seed=args.seed, n_users=args.n_users, n_items=args.n_items)
    except ValueError as err:
        parser.error(str(err))
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
