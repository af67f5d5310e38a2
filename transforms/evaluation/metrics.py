"""Classification metrics, bootstrap intervals and paired differences: pure numpy.

Every metric is computed from multiplicity weights w (w[i] = how often example
i is drawn), so a resample is a weight vector, not a copied array. These are
the in-memory reference definitions; the job computes the same figures from
mergeable sufficient statistics (transforms/evaluation/combine.py), with the
interval and difference helpers below shared.

Conventions (sklearn's where it has one; sklearn itself is not a dependency):
  y          true class index, 0..C-1
  probs      (n, C) predicted probabilities, columns in vocabulary order
  prediction argmax of probs (ties: the lowest index)
  top_k      y among the k most probable (k capped at C; ties: lowest index first)
  balanced accuracy  mean recall over the classes present in y
  macro-F1   mean F1 over classes present in y or predicted; F1 = 2tp/(2tp+fp+fn)
  precision  tp/(tp+fp), None when the class is never predicted
  recall     tp/(tp+fn), None when the class has no examples
  AUROC      one-vs-rest, Mann-Whitney with ties counted half; None for a class
             with no positives or no negatives; macro AUROC = mean of the defined
  ECE        top-label confidence in `bins` equal-width bins, the last closed:
             sum over bins of n_b/n * |accuracy_b - mean confidence_b|
"""
from __future__ import annotations

import hashlib

import numpy as np

HEADLINE = ("accuracy", "top3_accuracy", "balanced_accuracy", "macro_f1", "macro_auroc", "ece")
LOWER_IS_BETTER = frozenset({"ece"})
DEFAULT_BINS = 15
DEFAULT_RESAMPLES = 1000
TOP_K = 3


def predictions(probs: np.ndarray) -> np.ndarray:
    return np.argmax(probs, axis=1)


def in_top_k(probs: np.ndarray, y: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Boolean: the true class is among the k most probable (stable ties)."""
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (order == y[:, None]).any(axis=1)


def _weights(w, n):
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    return w[None, :] if w.ndim == 1 else w


def confusion(y, pred, n_classes, w=None) -> np.ndarray:
    """(B, C, C) weighted confusion matrices, rows true, columns predicted
    (B = 1 for a single weight vector)."""
    w = _weights(w, len(y))
    cell = np.asarray(y) * n_classes + np.asarray(pred)
    onehot = np.zeros((len(y), n_classes * n_classes))
    onehot[np.arange(len(y)), cell] = 1.0
    return (w @ onehot).reshape(-1, n_classes, n_classes)


def _div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def per_class_from_confusion(cm: np.ndarray) -> dict:
    """precision, recall, f1, support: (B, C) arrays, NaN where undefined."""
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    return {"precision": _div(tp, predicted), "recall": _div(tp, support),
            "f1": _div(2 * tp, support + predicted), "support": support}


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(a)
    count = ok.sum(axis=1)
    return np.where(count > 0, np.where(ok, a, 0).sum(axis=1) / np.maximum(count, 1), np.nan)


def auroc_ovr(probs, y, w=None) -> np.ndarray:
    """(B, C) one-vs-rest AUROC per class, NaN where a class lacks positives or negatives."""
    n, n_classes = probs.shape
    w = _weights(w, n)
    out = np.full((w.shape[0], n_classes), np.nan)
    for c in range(n_classes):
        score = probs[:, c]
        order = np.argsort(score, kind="stable")
        s, pos = score[order], (np.asarray(y)[order] == c)
        ws = w[:, order]
        wpos, wneg = ws * pos, ws * ~pos
        # Group equal scores: a positive beats the negatives of lower groups
        # and ties with half of its own group's negatives.
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        neg_in_group = np.add.reduceat(wneg, starts, axis=1)
        pos_in_group = np.add.reduceat(wpos, starts, axis=1)
        neg_below = np.cumsum(neg_in_group, axis=1) - neg_in_group
        wins = (pos_in_group * (neg_below + 0.5 * neg_in_group)).sum(axis=1)
        total = pos_in_group.sum(axis=1) * neg_in_group.sum(axis=1)
        out[:, c] = _div(wins, total)
    return out


def calibration(probs, y, w=None, bins: int = DEFAULT_BINS) -> dict:
    """Reliability bins and ECE of the top-label confidence; arrays (B, bins) and (B,)."""
    n = len(y)
    w = _weights(w, n)
    conf = probs.max(axis=1)
    correct = (predictions(probs) == np.asarray(y)).astype(np.float64)
    index = np.minimum((conf * bins).astype(int), bins - 1)
    onehot = np.zeros((n, bins))
    onehot[np.arange(n), index] = 1.0
    count = w @ onehot
    sum_conf = w @ (onehot * conf[:, None])
    sum_correct = w @ (onehot * correct[:, None])
    total = count.sum(axis=1)
    ece = _div(np.abs(sum_correct - sum_conf).sum(axis=1), total)
    return {"count": count, "confidence": _div(sum_conf, count), "accuracy": _div(sum_correct, count),
            "ece": ece}


def headline(probs, y, w=None, bins: int = DEFAULT_BINS) -> dict:
    """HEADLINE figures as (B,) arrays (NaN where undefined, e.g. an empty set)."""
    y = np.asarray(y)
    n, n_classes = probs.shape
    w = _weights(w, n)
    pred = predictions(probs)
    total = w.sum(axis=1)
    cm = confusion(y, pred, n_classes, w)
    pc = per_class_from_confusion(cm)
    present = pc["support"] > 0
    used = present | (cm.sum(axis=1) > 0)
    recall = np.where(present, pc["recall"], np.nan)
    f1 = np.where(used, np.nan_to_num(pc["f1"]), np.nan)
    return {
        "accuracy": _div(w @ (pred == y).astype(np.float64), total),
        "top3_accuracy": _div(w @ in_top_k(probs, y).astype(np.float64), total),
        "balanced_accuracy": _nanmean_rows(recall),
        "macro_f1": _nanmean_rows(f1),
        "macro_auroc": _nanmean_rows(auroc_ovr(probs, y, w)),
        "ece": calibration(probs, y, w, bins)["ece"],
    }


def _interval(samples: np.ndarray, level: float = 0.95):
    ok = samples[~np.isnan(samples)]
    if not len(ok):
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(ok, [tail, 100 - tail])
    return [float(lo), float(hi)]


def _num(x):
    x = float(x)
    return None if np.isnan(x) else x


def point_metrics(probs, y, vocabulary, bins: int = DEFAULT_BINS) -> dict:
    """Every figure on the whole set (no intervals): headline, per class, confusion, reliability."""
    y = np.asarray(y)
    n_classes = probs.shape[1]
    cm = confusion(y, predictions(probs), n_classes)
    pc = per_class_from_confusion(cm)
    auc = auroc_ovr(probs, y)[0]
    cal = calibration(probs, y, None, bins)
    return {
        "headline": {k: _num(v[0]) for k, v in headline(probs, y, None, bins).items()},
        "per_class": {c: {"precision": _num(pc["precision"][0, i]), "recall": _num(pc["recall"][0, i]),
                          "f1": _num(pc["f1"][0, i]), "support": int(pc["support"][0, i]),
                          "auroc": _num(auc[i])}
                      for i, c in enumerate(vocabulary)},
        "confusion_matrix": cm[0].astype(int).tolist(),
        "reliability": [{"lower": b / bins, "upper": (b + 1) / bins, "n": int(cal["count"][0, b]),
                         "confidence": _num(cal["confidence"][0, b]), "accuracy": _num(cal["accuracy"][0, b])}
                        for b in range(bins)],
    }


def with_intervals(point: dict, boot: dict) -> dict:
    """{figure: {"value", "ci95"}} from headline() on the set and bootstrap() draws."""
    return {k: {"value": _num(point[k][0]), "ci95": _interval(boot[k])} for k in HEADLINE}


def paired_differences(point_a: dict, point_b: dict, boot_a: dict, boot_b: dict) -> dict:
    """{figure: {"value", "ci95", "significant", "better"}} for a - b over paired
    draws; `better` is "a" or "b" when the interval excludes zero (lower ECE is better)."""
    out = {}
    for k in HEADLINE:
        value = _num(point_a[k][0] - point_b[k][0])
        ci = _interval(boot_a[k] - boot_b[k])
        significant = ci is not None and (ci[0] > 0 or ci[1] < 0)
        better = None
        if significant:
            better = "a" if (ci[0] > 0) != (k in LOWER_IS_BETTER) else "b"
        out[k] = {"value": value, "ci95": ci, "significant": significant, "better": better}
    return out


def fingerprint(keys) -> str:
    """sha256 of the sorted example keys, newline-joined: the identity of an evaluation set."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()
