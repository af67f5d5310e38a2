"""The dataset plan: which cases and images exist and what each one is.

Everything here is decided up front from the seed alone (cheap, sequential),
so that rendering each image afterwards depends only on (seed, image index)
and its plan entry, and could run in parallel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from beam_jobs.sample_data.catalog import (
    COMMON_CONDITIONS,
    DUPLICATES,
    NONE,
    RARE_CONDITION,
    SHOT_TYPES,
    UNLABELED_FRACTION,
    defect_counts,
)

N_TONES = 10
# Images per case as in SCIN (39% one, 16% two, 45% three).
_IMAGES_PER_CASE_P = (0.39, 0.16, 0.45)
_SHOT_TYPE_P = (0.5, 0.3, 0.2)
# Defects whose pixels show the case's skin (low_information only sometimes).
_SKIN_DEFECTS = frozenset({NONE, "dim_textured", "too_dark", "too_bright", "blurry", "corrupt"})
# dim_textured images pinned to dark tones so every run shows dark skin that
# is dim but acceptable.
_DIM_PINNED_TONES = (10, 9, 8)


@dataclass(frozen=True)
class ImagePlan:
    """One image file: identity, defect class and (for skin images) Monk tone."""

    index: int
    case_index: int
    image_id: str
    defect: str
    tone: int | None
    shot_type: str
    duplicate_of: int | None = None
    # How a phone stored it: "jpeg" (sRGB, untagged), "p3_jpeg" (Display P3
    # pixels with the profile embedded, as iPhones write JPEG) or "heic" (P3 HEIC).
    container: str = "jpeg"
    # The case's primary condition ("" = unlabelled): it selects the lesion pattern.
    condition: str = ""

    @property
    def path(self) -> str:
        """The SCIN-style path, relative to the output directory."""
        return f"dataset/images/{self.image_id}.{'heic' if self.container == 'heic' else 'jpg'}"


@dataclass(frozen=True)
class CasePlan:
    """One case: its person's Monk tone, its images and the dermatologists'
    differential (per dermatologist, (condition, confidence) pairs; empty when
    the case is unlabelled)."""

    index: int
    case_id: str
    tone: int
    image_indices: tuple[int, ...]
    differential: tuple[tuple[tuple[str, int], ...], ...]

    @property
    def condition(self) -> str:
        """The primary (highest-weighted) condition, or "" when unlabelled."""
        return self.differential[0][0][0] if self.differential else ""


@dataclass(frozen=True)
class DatasetPlan:
    """All cases and images of one generated dataset."""

    seed: int
    cases: tuple[CasePlan, ...]
    images: tuple[ImagePlan, ...]


def plan_dataset(n_cases: int, seed: int) -> DatasetPlan:
    """Decide the cases, images, defects, tones, duplicates and labels for a run."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    sizes = rng.choice((1, 2, 3), size=n_cases, p=_IMAGES_PER_CASE_P)
    case_of = np.repeat(np.arange(n_cases), sizes).tolist()
    members: list[list[int]] = [[] for _ in range(n_cases)]
    for i, c in enumerate(case_of):
        members[c].append(i)

    counts = defect_counts(len(case_of))
    labels = [d for d, n in counts.items() for _ in range(n)]
    labels = [labels[k] for k in rng.permutation(len(labels))]
    duplicate_of = _place_duplicates(labels, case_of, members, rng)

    skin = [d in _SKIN_DEFECTS or (d == "low_information" and rng.random() < 0.5) for d in labels]
    tones = _assign_case_tones(labels, skin, case_of, duplicate_of, members, rng)
    image_tone = [
        tones[case_of[duplicate_of.get(i, i)]] if (skin[i] or i in duplicate_of) else None
        for i in range(len(labels))
    ]

    ids = _image_ids(labels, duplicate_of, rng)
    case_ids = _unique_ids(rng, n_cases, exclude=set(ids))
    shots = rng.choice(len(SHOT_TYPES), size=len(labels), p=_SHOT_TYPE_P)
    containers = _containers(labels, duplicate_of, seed)
    differentials = _differentials(n_cases, rng)
    primary = [d[0][0][0] if d else "" for d in differentials]
    images = tuple(
        ImagePlan(i, case_of[i], ids[i], labels[i], image_tone[i], SHOT_TYPES[shots[i]], duplicate_of.get(i),
                  containers[i], primary[case_of[i]])
        for i in range(len(labels))
    )
    cases = tuple(
        CasePlan(c, case_ids[c], tones[c], tuple(members[c]), differentials[c]) for c in range(n_cases)
    )
    return DatasetPlan(seed, cases, images)


# Shares of phone containers among rendered images that are not duplicates or
# their originals (duplicates are made from the original's bytes).
CONTAINER_P = {"jpeg": 0.8, "p3_jpeg": 0.1, "heic": 0.1}
_CONTAINER_DEFECTS = frozenset({"none", "dim_textured", "too_dark", "too_bright", "blurry",
                                "not_skin", "corrupt"})


def _containers(labels: list[str], duplicate_of: dict[int, int], seed: int) -> list[str]:
    """Each image's container, from its own random stream so other plan draws stay put."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    draws = rng.choice(list(CONTAINER_P), size=len(labels), p=list(CONTAINER_P.values()))
    originals = set(duplicate_of.values())
    return [str(c) if d in _CONTAINER_DEFECTS and i not in originals and i not in duplicate_of else "jpeg"
            for i, (d, c) in enumerate(zip(labels, draws))]


def _place_duplicates(
    labels: list[str], case_of: list[int], members: list[list[int]], rng: np.random.Generator
) -> dict[int, int]:
    """Choose a `none` original for every duplicate slot: alternately in the
    same case and in another case. Returns {duplicate index: original index};
    may swap labels between slots so a same-case original exists."""
    used: set[int] = set()
    pool = [i for i in rng.permutation(len(labels)).tolist() if labels[i] == NONE]
    duplicate_of: dict[int, int] = {}
    turn = {kind: 0 for kind in DUPLICATES}
    for i in [k for k, d in enumerate(labels) if d in DUPLICATES]:
        kind = labels[i]
        same_case = turn[kind] % 2 == 0
        turn[kind] += 1
        if same_case and not _case_nones(labels, members[case_of[i]], used):
            moved = _swap_into_case_with_none(labels, members, used, i, rng)
            i = i if moved is None else moved
        own = [j for j in _case_nones(labels, members[case_of[i]], used) if j != i]
        if same_case and own:
            original = own[int(rng.integers(len(own)))]
        else:
            original = _next_original(pool, labels, case_of, used, case_of[i])
        if original is None:  # more duplicates than originals (tiny runs)
            labels[i] = NONE
            continue
        used.add(original)
        duplicate_of[i] = original
    return duplicate_of


def _case_nones(labels: list[str], case_members: list[int], used: set[int]) -> list[int]:
    """Unused `none` images of one case."""
    return [j for j in case_members if labels[j] == NONE and j not in used]


def _swap_into_case_with_none(
    labels: list[str], members: list[list[int]], used: set[int], dup: int, rng: np.random.Generator
) -> int | None:
    """Move duplicate label ``dup`` onto a slot of another case that still has
    an unused `none` original (cases tried in random order); return the slot,
    or None if there is no such case."""
    for case in rng.permutation(len(members)):
        case_members = members[case]
        nones = _case_nones(labels, case_members, used)
        if dup in case_members or not nones:
            continue
        slots = [
            slot for slot in case_members
            if labels[slot] not in DUPLICATES and slot not in used and (labels[slot] != NONE or len(nones) > 1)
        ]
        if slots:
            slot = slots[int(rng.integers(len(slots)))]
            labels[dup], labels[slot] = labels[slot], labels[dup]
            return slot
    return None


def _next_original(
    pool: list[int], labels: list[str], case_of: list[int], used: set[int], avoid_case: int
) -> int | None:
    """Next unused `none` image from the shuffled pool outside ``avoid_case``."""
    for k, j in enumerate(pool):
        if labels[j] == NONE and j not in used and case_of[j] != avoid_case:
            del pool[k]
            return j
    return None


def _assign_case_tones(
    labels: list[str],
    skin: list[bool],
    case_of: list[int],
    duplicate_of: dict[int, int],
    members: list[list[int]],
    rng: np.random.Generator,
) -> list[int]:
    """Give every case one Monk tone so that images per tone are equal (+-1)
    overall and among `none` images.

    A case "owns" its skin images plus the duplicates of its originals (they
    show the same person). Greedy balancing, largest cases first, then cases
    without `none` images even out the overall counts.
    """
    n_cases = len(members)
    n_none = [0] * n_cases
    n_toned = [0] * n_cases
    for i, d in enumerate(labels):
        owner = case_of[duplicate_of.get(i, i)]
        if i in duplicate_of or skin[i]:
            n_toned[owner] += 1
        n_none[owner] += d == NONE
    tones = [0] * n_cases
    none_per_tone = [0] * (N_TONES + 1)
    all_per_tone = [0] * (N_TONES + 1)

    def give(case: int, tone: int) -> None:
        tones[case] = tone
        none_per_tone[tone] += n_none[case]
        all_per_tone[tone] += n_toned[case]

    dim_cases = list(dict.fromkeys(case_of[i] for i, d in enumerate(labels) if d == "dim_textured"))
    pinned = set(dim_cases[: len(_DIM_PINNED_TONES)])
    for case, tone in zip(dim_cases, _DIM_PINNED_TONES):
        give(case, tone)
    tie = rng.random(n_cases)
    rest = sorted((c for c in range(n_cases) if not tones[c]), key=lambda c: (-n_none[c], -n_toned[c], tie[c]))
    for case in rest:
        order = rng.permutation(N_TONES) + 1
        if n_none[case]:
            tone = min(order, key=lambda t: (none_per_tone[t], all_per_tone[t]))
        else:
            tone = min(order, key=lambda t: all_per_tone[t])
        give(case, int(tone))
    _rebalance(tones, n_none, n_toned, pinned)
    return tones


def _rebalance(tones: list[int], n_none: list[int], n_toned: list[int], pinned: set[int]) -> None:
    """Local search after the greedy pass: move a case to another tone, or swap
    two cases' tones, while that lowers the spread of per-tone counts. Cases
    with the same (tone, none count, toned count) are interchangeable, so
    each step only compares a handful of distinct moves."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for c in range(len(tones)):
        if c not in pinned and n_toned[c]:
            groups.setdefault((tones[c], n_none[c], n_toned[c]), []).append(c)
    none_n = np.zeros(N_TONES + 1, np.int64)
    all_n = np.zeros(N_TONES + 1, np.int64)
    for c, t in enumerate(tones):
        none_n[t] += n_none[c]
        all_n[t] += n_toned[c]
    current = _spread_cost(none_n, all_n)
    while True:
        best = None
        keys = [k for k, cases in groups.items() if cases]
        for src in keys:
            for tone in range(1, N_TONES + 1):
                if tone == src[0]:
                    continue
                for partner in [None] + [k for k in keys if k[0] == tone]:
                    dn = src[1] - (partner[1] if partner else 0)
                    da = src[2] - (partner[2] if partner else 0)
                    if dn == da == 0:
                        continue
                    nn, aa = none_n.copy(), all_n.copy()
                    nn[src[0]] -= dn
                    nn[tone] += dn
                    aa[src[0]] -= da
                    aa[tone] += da
                    trial = _spread_cost(nn, aa)
                    if trial < current and (best is None or trial < best[0]):
                        best = (trial, src, tone, partner, nn, aa)
        if best is None:
            return
        current, src, tone, partner, none_n, all_n = best
        _retone(groups, tones, src, tone)
        if partner:
            _retone(groups, tones, partner, src[0])


def _spread_cost(none_n: np.ndarray, all_n: np.ndarray) -> int:
    """Sum of squared deviations from the mean of per-tone counts (times
    N_TONES, to stay an exact integer); `none` counts weigh 4x."""
    def sq(x: np.ndarray) -> int:
        return int(N_TONES * (x[1:] ** 2).sum() - x[1:].sum() ** 2)
    return 4 * sq(none_n) + sq(all_n)


def _retone(groups: dict, tones: list[int], key: tuple[int, int, int], tone: int) -> None:
    """Give one case of group ``key`` the tone ``tone``."""
    case = groups[key].pop()
    tones[case] = tone
    groups.setdefault((tone, key[1], key[2]), []).append(case)


def _image_ids(labels: list[str], duplicate_of: dict[int, int], rng: np.random.Generator) -> list[str]:
    """SCIN-style signed 64-bit ids; a duplicate's path sorts after its original's."""
    ids = _unique_ids(rng, len(labels), exclude=set())
    taken = set(ids)
    for dup, original in duplicate_of.items():
        while f"{ids[dup]}.jpg" <= f"{ids[original]}.jpg":  # paths share the directory prefix
            candidate = str(int(rng.integers(-(2**63), 2**63 - 1, dtype=np.int64)))
            if candidate not in taken:
                taken.discard(ids[dup])
                taken.add(candidate)
                ids[dup] = candidate
    return ids


def _unique_ids(rng: np.random.Generator, n: int, exclude: set[str]) -> list[str]:
    """``n`` distinct decimal strings of random signed 64-bit ints, none in ``exclude``."""
    out: list[str] = []
    seen = set(exclude)
    while len(out) < n:
        for value in rng.integers(-(2**63), 2**63 - 1, size=n - len(out), dtype=np.int64):
            text = str(int(value))
            if text not in seen:
                seen.add(text)
                out.append(text)
    return out


def _differentials(n_cases: int, rng: np.random.Generator) -> list[tuple]:
    """Dermatologist labels per case: empty for ~37.5% of cases; otherwise 1-3
    dermatologists who each list the case's primary condition first (highest
    confidence) and up to two other common conditions."""
    names = [name for name, _ in COMMON_CONDITIONS]
    n_labelled = n_cases - round(UNLABELED_FRACTION * n_cases)
    labelled = sorted(int(c) for c in rng.permutation(n_cases)[:n_labelled])
    n_rare = 2 if len(labelled) >= 20 else min(1, len(labelled))
    # Fixed quotas (largest remainder) rather than independent draws, so the
    # skew of the class distribution holds for every seed.
    shares = [w * (len(labelled) - n_rare) for _, w in COMMON_CONDITIONS]
    quota = [int(x) for x in shares]
    for k in sorted(range(len(shares)), key=lambda k: int(shares[k]) - shares[k])[: len(labelled) - n_rare - sum(quota)]:
        quota[k] += 1
    pool = [RARE_CONDITION] * n_rare + [name for name, q in zip(names, quota) for _ in range(q)]
    primary = dict(zip(labelled, (pool[k] for k in rng.permutation(len(pool)))))
    out: list[tuple] = [() for _ in range(n_cases)]
    for c, main in primary.items():
        others = [n for n in names if n != main]
        derms = []
        for _ in range(int(rng.choice((1, 2, 3), p=(0.25, 0.3, 0.45)))):
            top = int(rng.integers(3, 6))
            extra = rng.choice(len(others), size=int(rng.integers(0, 3)), replace=False)
            seconds = sorted(((others[k], int(rng.integers(1, top + 1))) for k in extra), key=lambda e: -e[1])
            derms.append(((main, top), *seconds))
        out[c] = tuple(derms)
    return out
