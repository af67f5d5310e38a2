"""evaluate's metrics on hand-computed cases and against brute-force references (no sklearn);
the job's mergeable CombineFn against them."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from transforms.evaluation import combine as EC
from transforms.evaluation import metrics as EM

# Six examples, four classes; class 3 has no examples but is predicted once.
Y = np.array([0, 0, 1, 1, 2, 2])
PROBS = np.array([
    [0.65, 0.20, 0.10, 0.05],  # pred 0, right, confidence bin 3 of 5
    [0.30, 0.45, 0.20, 0.05],  # pred 1, wrong; true class 0 in top 3
    [0.05, 0.85, 0.05, 0.05],  # pred 1, right, bin 4
    [0.10, 0.20, 0.25, 0.45],  # pred 3, wrong; true class 1 in top 3
    [0.10, 0.10, 0.75, 0.05],  # pred 2, right, bin 3
    [0.55, 0.30, 0.05, 0.10],  # pred 0, wrong; true class 2 not in top 3
])
VOCAB = ["a", "b", "c", "d"]


def test_headline_figures_by_hand():
    h = {k: float(v[0]) for k, v in EM.headline(PROBS, Y, bins=5).items()}
    assert h["accuracy"] == pytest.approx(3 / 6)
    assert h["top3_accuracy"] == pytest.approx(5 / 6)
    assert h["balanced_accuracy"] == pytest.approx((0.5 + 0.5 + 0.5) / 3)  # recalls of a, b, c
    # F1 a .5, b .5, c 2/3, d 0 (predicted once, never true): sklearn's macro over true|predicted
    assert h["macro_f1"] == pytest.approx((0.5 + 0.5 + 2 / 3 + 0) / 4)
    assert h["macro_auroc"] == pytest.approx((7 / 8 + 5.5 / 8 + 4.5 / 8) / 3)  # d has no positives
    # bins [.4,.6): 3 wrong at mean .4833; [.6,.8): 2 right at .7; [.8,1]: 1 right at .85
    assert h["ece"] == pytest.approx((3 * (1.45 / 3) + 2 * 0.3 + 1 * 0.15) / 6)


def test_per_class_confusion_and_reliability_by_hand():
    m = EM.point_metrics(PROBS, Y, VOCAB, bins=5)
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0]]
    pc = m["per_class"]
    assert pc["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "auroc": 7 / 8})
    assert pc["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2, "auroc": 4.5 / 8})
    assert pc["d"] == {"precision": 0.0, "recall": None, "f1": 0.0, "support": 0, "auroc": None}
    bins = [b for b in m["reliability"] if b["n"]]
    assert [(b["lower"], b["n"]) for b in bins] == [(0.4, 3), (0.6, 2), (0.8, 1)]
    assert bins[0]["confidence"] == pytest.approx(1.45 / 3) and bins[0]["accuracy"] == 0.0
    assert bins[1]["confidence"] == pytest.approx(0.7) and bins[2]["accuracy"] == 1.0
    assert m["headline"]["accuracy"] == 0.5


def _auroc_pairs(scores, positive):
    """Every positive-negative pair: 1 if the positive scores higher, 1/2 on a tie."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return np.nan
    return np.mean([1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg)])


def _random_set(rng, n=60, c=5):
    logits = rng.normal(size=(n, c))
    logits = np.round(logits, 1)  # rounding makes ties, which the AUROC must count half
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, rng.integers(0, c - 1, size=n)  # the last class never true


def test_auroc_matches_all_pairs_and_weights_match_repetition():
    rng = np.random.default_rng(5)
    probs, y = _random_set(rng)
    ours = EM.auroc_ovr(probs, y)[0]
    ref = [_auroc_pairs(probs[:, c], y == c) for c in range(probs.shape[1])]
    np.testing.assert_allclose(ours, ref, equal_nan=True)
    # A resample as weights equals the resample as copied rows, for every figure.
    w = rng.integers(0, 4, size=len(y))
    weighted = EM.headline(probs, y, w[None, :].astype(float))
    copied = EM.headline(np.repeat(probs, w, axis=0), np.repeat(y, w))
    for k in EM.HEADLINE:
        np.testing.assert_allclose(weighted[k], copied[k], rtol=1e-12)


def test_accuracy_and_top3_match_plain_loops():
    rng = np.random.default_rng(8)
    probs, y = _random_set(rng, n=40)
    h = EM.headline(probs, y)
    assert h["accuracy"][0] == pytest.approx(np.mean([np.argmax(p) == t for p, t in zip(probs, y)]))
    top3 = [t in sorted(range(len(p)), key=lambda i: (-p[i], i))[:3] for p, t in zip(probs, y)]
    assert h["top3_accuracy"][0] == pytest.approx(np.mean(top3))


def _keys(n, prefix="k"):
    return [f"{prefix}{i}" for i in range(n)]


def test_bootstrap_is_seeded_and_brackets_the_value():
    rng = np.random.default_rng(1)
    probs, y = _random_set(rng, n=200)
    a = EC.bootstrap([probs], y, _keys(200), 1000, seed=0)[0]
    b = EC.bootstrap([probs], y, _keys(200), 1000, seed=0)[0]
    c = EC.bootstrap([probs], y, _keys(200), 1000, seed=1)[0]
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in EM.HEADLINE)
    assert not np.array_equal(a["accuracy"], c["accuracy"])
    assert len(a["accuracy"]) == 1000
    out = EM.with_intervals(EM.headline(probs, y), a)
    for k in ("accuracy", "macro_f1", "ece"):
        lo, hi = out[k]["ci95"]
        assert lo < out[k]["value"] < hi and hi - lo < 0.3
    # ~sqrt(p(1-p)/n) for a proportion: the interval's width is about 4 standard errors
    p = out["accuracy"]["value"]
    assert out["accuracy"]["ci95"][1] - out["accuracy"]["ci95"][0] == pytest.approx(
        3.92 * np.sqrt(p * (1 - p) / 200), rel=0.2)


def test_a_model_against_itself_differs_by_zero_and_is_never_better():
    rng = np.random.default_rng(2)
    probs, y = _random_set(rng, n=80)
    point = EM.headline(probs, y)
    boot_a, boot_b = EC.bootstrap([probs, probs.copy()], y, _keys(80), 1000, seed=3)
    diff = EM.paired_differences(point, point, boot_a, boot_b)
    for k in EM.HEADLINE:
        assert diff[k]["value"] == 0.0 and diff[k]["ci95"] == [0.0, 0.0]
        assert not diff[k]["significant"] and diff[k]["better"] is None


def test_paired_difference_finds_the_better_model():
    rng = np.random.default_rng(4)
    n, c = 300, 4
    y = rng.integers(0, c, size=n)
    good = np.full((n, c), 0.1)
    good[np.arange(n), y] = 0.7  # always right, calibrated-ish
    bad = rng.dirichlet(np.ones(c), size=n)  # chance
    boot_g, boot_b = EC.bootstrap([good, bad], y, _keys(n), 1000, seed=0)
    diff = EM.paired_differences(EM.headline(good, y), EM.headline(bad, y), boot_g, boot_b)
    assert diff["accuracy"]["better"] == "a" and diff["accuracy"]["ci95"][0] > 0
    reverse = EM.paired_differences(EM.headline(bad, y), EM.headline(good, y), boot_b, boot_g)
    assert reverse["accuracy"]["better"] == "b" and reverse["accuracy"]["ci95"][1] < 0


def test_ece_lower_is_better():
    y = np.zeros(100, dtype=int)
    right_confident = np.tile([0.95, 0.05], (100, 1))  # right 100% at .95: ECE .05
    right_unsure = np.tile([0.55, 0.45], (100, 1))     # right 100% at .55: ECE .45
    boot = EC.bootstrap([right_confident, right_unsure], y, _keys(100), 1000, seed=0)
    diff = EM.paired_differences(EM.headline(right_confident, y), EM.headline(right_unsure, y), *boot)
    assert diff["ece"]["value"] == pytest.approx(-0.4)
    assert diff["ece"]["better"] == "a" and diff["accuracy"]["better"] is None


def test_undefined_figures_are_none_not_nan():
    y = np.array([1, 1])
    probs = np.array([[0.2, 0.8], [0.4, 0.6]])
    m = EM.point_metrics(probs, y, ["x", "y"])
    assert m["headline"]["macro_auroc"] is None  # one class only: no negatives
    assert m["per_class"]["x"]["precision"] is None and m["per_class"]["x"]["f1"] is None
    assert m["headline"]["accuracy"] == 1.0


def test_fingerprint_ignores_order():
    assert EM.fingerprint(["b", "a"]) == EM.fingerprint(["a", "b"]) != EM.fingerprint(["a", "c"])


def _elements(probs_by_role, y, keys):
    return [(k, int(t), None, {r: p[i] for r, p in probs_by_role.items()}) for i, (k, t) in enumerate(zip(keys, y))]


def test_slice_combine_equals_the_reference_figures():
    """The job's sufficient statistics give the in-memory reference's figures
    (confidence sums are fixed point: ECE and bin confidences agree to 1e-9;
    scores on a 1e-3 grid keep the 1e-4 AUROC histogram exact)."""
    rng = np.random.default_rng(11)
    probs, y = _random_set(rng, n=300)
    probs = np.round(probs, 3)
    vocab = [f"c{i}" for i in range(probs.shape[1])]
    fn = EC.SliceMetricsFn(["model"], vocab, EM.DEFAULT_BINS, 1000, 0)
    ours = EC.combine_locally(fn, _elements({"model": probs}, y, _keys(300)))["overall"]["model"]
    ref = EM.point_metrics(probs, y, vocab)
    assert ours["confusion_matrix"] == ref["confusion_matrix"]
    assert ours["per_class"] == ref["per_class"]  # counts and AUROC: exactly
    assert [(b["n"], b["accuracy"]) for b in ours["reliability"]] == [(b["n"], b["accuracy"]) for b in ref["reliability"]]
    for a, b in zip(ours["reliability"], ref["reliability"]):
        assert (a["confidence"] is None) == (b["confidence"] is None)
        if a["confidence"] is not None:
            assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-9)
    for k in EM.HEADLINE:
        if k == "ece":
            assert ours["headline"][k] == pytest.approx(ref["headline"][k], abs=1e-9)
        else:
            assert ours["headline"][k] == ref["headline"][k], k
    # The histogram's AUROC agrees with all pairs on the tied scores of the hand set too.
    hand = EC.combine_locally(EC.SliceMetricsFn(["m"], VOCAB, 5, 1000, 0), _elements({"m": PROBS}, Y, _keys(6)))
    assert hand["overall"]["m"]["per_class"]["a"]["auroc"] == 7 / 8


def test_slice_combine_does_not_depend_on_bundles_or_merge_order():
    """Partial accumulators over any split of the input, merged in any order,
    equal one accumulator over all of it: bit for bit, bootstrap included."""
    rng = np.random.default_rng(12)
    probs, y = _random_set(rng, n=90)
    other = np.roll(probs, 1, axis=1)
    els = _elements({"model": probs, "compare": other}, y, _keys(90))
    fn = EC.SliceMetricsFn(["model", "compare"], [f"c{i}" for i in range(5)], EM.DEFAULT_BINS, 1000, 7)
    whole = fn.create_accumulator()
    for e in els:
        whole = fn.add_input(whole, e)
    order = rng.permutation(len(els))
    parts = []
    for chunk in np.array_split(order, [5, 40, 41, 70]):  # uneven bundles, shuffled examples
        acc = fn.create_accumulator()
        for i in chunk:
            acc = fn.add_input(acc, els[i])
        parts.append(acc)
    parts.append(fn.create_accumulator())  # an empty bundle
    merged = fn.merge_accumulators([fn.merge_accumulators(parts[:2]), fn.merge_accumulators(parts[2:][::-1])])
    assert merged[0] == whole[0] == 90
    for r in ("model", "compare"):
        assert np.array_equal(merged[2][r], whole[2][r]) and np.array_equal(merged[3][r], whole[3][r])
    a, b = fn.extract_output(merged), fn.extract_output(whole)
    for r in ("model", "compare"):
        for k in EM.HEADLINE:
            assert np.array_equal(a["boot"][r][k], b["boot"][r][k], equal_nan=True)
    assert a["overall"] == b["overall"]


def test_poisson_weights_depend_on_seed_and_key_only():
    w = EC.poisson_weights("case-1", 0, 1000)
    assert np.array_equal(w, EC.poisson_weights("case-1", 0, 1000))
    assert not np.array_equal(w, EC.poisson_weights("case-2", 0, 1000))
    assert not np.array_equal(w, EC.poisson_weights("case-1", 1, 1000))
    assert w.mean() == pytest.approx(1.0, abs=0.1) and w.var() == pytest.approx(1.0, abs=0.15)
