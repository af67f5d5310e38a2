"""evaluate's metrics as a mergeable Beam CombineFn: sufficient statistics per slice.

Every figure evaluate reports is a function of sums over examples, so a slice
is one accumulator that merges by addition, whatever the number of workers:

  confusion matrix   C x C counts (accuracy, balanced accuracy, macro-F1, per class P/R/F1)
  top-3              one count of hits
  reliability bins   per bin: count, sum of confidence, sum of correct (ECE)
  AUROC              per class, histograms of its score over positives and negatives

All sums are int64 (confidence in fixed point, units of 2**-32), so they are
exact and the same in any order of addition: a rerun, or another split of the
input into bundles, gives bit-identical figures.

AUROC choice: histograms, not gathered scores. Exact AUROC needs every (score,
label) pair, i.e. memory growing with the slice; a histogram is fixed-size and
exact except for a positive and a negative whose different scores fall in the
same bin (counted as a tie, 1/2): the error is at most
sum_b pos_b * neg_b / (2 * P * N). At POINT_AUROC_BINS = 10,000 bins (width
1e-4) scores that differ by 1e-4 or more are ordered exactly. The bootstrap's
AUROC uses BOOTSTRAP_AUROC_BINS = 50 bins (width 0.02): it is the accumulator's
largest part (R x C x 2 x bins), and it only sets the interval's width.

Bootstrap: the Poisson bootstrap. Example k gets, for each of R resamples, a
Poisson(1) weight drawn from a generator seeded by (seed, sha256(k)), so the
weights depend only on the seed and the key, not on which worker sees the
example or in what order; each resample's statistics are the weight-scaled
sums (an R x S int64 matrix per model). Both models' rows use the example's
same weights, so per-resample differences give the paired interval. An
example has the same weights in every slice it belongs to (unlike the former
per-slice multinomial streams); each slice's intervals are still a valid
bootstrap of that slice, with its size Poisson-distributed around n instead of fixed.
"""
from __future__ import annotations

import hashlib
from collections import Counter

import apache_beam as beam
import numpy as np

from transforms.evaluation import metrics as EM

POINT_AUROC_BINS = 10_000
BOOTSTRAP_AUROC_BINS = 50
FIXED = 2.0 ** 32  # confidence in integer units of 2**-32


class Layout:
    """Column offsets of one statistics vector: [confusion C*C | top-k hits |
    bin counts | bin confidence sums | bin correct sums | AUROC histograms C*2*auc_bins]."""

    def __init__(self, n_classes: int, bins: int, auc_bins: int):
        self.c, self.bins, self.auc_bins = n_classes, bins, auc_bins
        self.top = n_classes * n_classes
        self.count = self.top + 1
        self.conf = self.count + bins
        self.correct = self.conf + bins
        self.auc = self.correct + bins
        self.size = self.auc + n_classes * 2 * auc_bins

    def columns(self, y: int, probs: np.ndarray):
        """(columns, values) one example adds: all columns distinct."""
        c = self.c
        pred = int(np.argmax(probs))
        conf = float(probs.max())
        b = min(int(conf * self.bins), self.bins - 1)
        hit = int(EM.in_top_k(probs[None, :], np.array([y]))[0])
        sbin = np.minimum((probs * self.auc_bins).astype(np.int64), self.auc_bins - 1)
        auc_cols = self.auc + (np.arange(c) * 2 + (np.arange(c) == y)) * self.auc_bins + sbin
        cols = np.concatenate([[y * c + pred, self.top, self.count + b, self.conf + b, self.correct + b], auc_cols])
        vals = np.concatenate([[1, hit, 1, int(round(conf * FIXED)), int(pred == y)], np.ones(c, dtype=np.int64)])
        return cols.astype(np.int64), vals.astype(np.int64)


def _auroc(stats: np.ndarray, lay: Layout) -> np.ndarray:
    h = stats[:, lay.auc:].reshape(len(stats), lay.c, 2, lay.auc_bins).astype(np.float64)
    neg, pos = h[:, :, 0], h[:, :, 1]
    neg_below = np.cumsum(neg, axis=2) - neg
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=2)
    return EM._div(wins, pos.sum(axis=2) * neg.sum(axis=2))


def _parts(stats: np.ndarray, lay: Layout) -> dict:
    s = stats.astype(np.float64)
    b = lay.bins
    return {"cm": s[:, :lay.top].reshape(-1, lay.c, lay.c), "top": s[:, lay.top],
            "count": s[:, lay.count:lay.count + b], "conf": s[:, lay.conf:lay.conf + b] / FIXED,
            "correct": s[:, lay.correct:lay.correct + b]}


def headline_from_stats(stats: np.ndarray, lay: Layout) -> dict:
    """HEADLINE figures as (B,) arrays from B statistics rows (NaN where undefined);
    the same definitions as evaluation_metrics.headline()."""
    p = _parts(np.atleast_2d(stats), lay)
    cm = p["cm"]
    total = cm.sum(axis=(1, 2))
    pc = EM.per_class_from_confusion(cm)
    present = pc["support"] > 0
    used = present | (cm.sum(axis=1) > 0)
    return {
        "accuracy": EM._div(np.trace(cm, axis1=1, axis2=2), total),
        "top3_accuracy": EM._div(p["top"], total),
        "balanced_accuracy": EM._nanmean_rows(np.where(present, pc["recall"], np.nan)),
        "macro_f1": EM._nanmean_rows(np.where(used, np.nan_to_num(pc["f1"]), np.nan)),
        "macro_auroc": EM._nanmean_rows(_auroc(np.atleast_2d(stats), lay)),
        "ece": EM._div(np.abs(p["correct"] - p["conf"]).sum(axis=1), total),
    }


def point_metrics_from_stats(stats: np.ndarray, lay: Layout, vocabulary) -> dict:
    """evaluation_metrics.point_metrics() from one statistics vector."""
    stats = np.atleast_2d(stats)
    p = _parts(stats, lay)
    pc = EM.per_class_from_confusion(p["cm"])
    auc = _auroc(stats, lay)[0]
    num, bins = EM._num, lay.bins
    conf, acc = EM._div(p["conf"], p["count"])[0], EM._div(p["correct"], p["count"])[0]
    return {
        "headline": {k: num(v[0]) for k, v in headline_from_stats(stats, lay).items()},
        "per_class": {c: {"precision": num(pc["precision"][0, i]), "recall": num(pc["recall"][0, i]),
                          "f1": num(pc["f1"][0, i]), "support": int(pc["support"][0, i]), "auroc": num(auc[i])}
                      for i, c in enumerate(vocabulary)},
        "confusion_matrix": p["cm"][0].astype(int).tolist(),
        "reliability": [{"lower": b / bins, "upper": (b + 1) / bins, "n": int(p["count"][0, b]),
                         "confidence": num(conf[b]), "accuracy": num(acc[b])} for b in range(bins)],
    }


def poisson_weights(key: str, seed: int, resamples: int) -> np.ndarray:
    """The example's Poisson(1) weight in each resample: a function of (seed, key) only."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest]).poisson(1.0, resamples).astype(np.int64)


class SliceMetricsFn(beam.CombineFn):
    """(key, label_id, source, {role: probs}) per example of one slice -> that
    slice's figures: {"n", "sources", "point": {role: headline}, "boot": {role:
    {figure: (R,) array}}, "overall": {role: point metrics}}.

    Accumulator: [n, sources Counter, {role: point vector}, {role: R x S matrix}],
    int64, created on the first example (an empty bundle costs nothing).
    Per role: S = C*C + 1 + 3*bins + C*2*50 columns, e.g. 5 classes, 15 bins:
    571 columns, 4.6 MB at R = 1,000; plus C*2*10,000 for the point AUROC.
    """

    def __init__(self, roles, vocabulary, bins: int, resamples: int, seed: int):
        self.roles, self.vocabulary = list(roles), list(vocabulary)
        self.bins, self.resamples, self.seed = bins, resamples, seed

    def _layouts(self):
        c = len(self.vocabulary)
        return Layout(c, self.bins, POINT_AUROC_BINS), Layout(c, self.bins, BOOTSTRAP_AUROC_BINS)

    def create_accumulator(self):
        return [0, Counter(), None, None]

    def add_input(self, acc, element):
        key, label_id, source, probs = element
        point_lay, boot_lay = self._layouts()
        if acc[2] is None:
            acc[2] = {r: np.zeros(point_lay.size, np.int64) for r in self.roles}
            acc[3] = {r: np.zeros((self.resamples, boot_lay.size), np.int64) for r in self.roles}
        acc[0] += 1
        if source:
            acc[1][source] += 1
        w = poisson_weights(key, self.seed, self.resamples)
        for r in self.roles:
            p = np.asarray(probs[r], dtype=np.float64)
            cols, vals = point_lay.columns(label_id, p)
            acc[2][r][cols] += vals
            cols, vals = boot_lay.columns(label_id, p)
            acc[3][r][:, cols] += np.outer(w, vals)
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for a in accumulators:
            out[0] += a[0]
            out[1].update(a[1])
            if a[2] is None:
                continue
            if out[2] is None:
                out[2] = {r: v.copy() for r, v in a[2].items()}
                out[3] = {r: v.copy() for r, v in a[3].items()}
            else:
                for r in self.roles:
                    out[2][r] += a[2][r]
                    out[3][r] += a[3][r]
        return out

    def extract_output(self, acc):
        point_lay, boot_lay = self._layouts()
        if acc[2] is None:
            return {"n": 0, "sources": {}, "point": {}, "boot": {}, "overall": {}}
        return {"n": acc[0], "sources": dict(sorted(acc[1].items())),
                "point": {r: headline_from_stats(acc[2][r], point_lay) for r in self.roles},
                "boot": {r: headline_from_stats(acc[3][r], boot_lay) for r in self.roles},
                "overall": {r: point_metrics_from_stats(acc[2][r], point_lay, self.vocabulary)
                            for r in self.roles}}


def combine_locally(fn: SliceMetricsFn, elements) -> dict:
    """The CombineFn over elements in one process (tests, small sets)."""
    acc = fn.create_accumulator()
    for e in elements:
        acc = fn.add_input(acc, e)
    return fn.extract_output(fn.merge_accumulators([acc]))


def bootstrap(probs_list, y, keys, resamples: int, seed: int, bins: int = EM.DEFAULT_BINS) -> list[dict]:
    """HEADLINE figures per Poisson resample for each model in probs_list (same
    weights for all: paired), as evaluation_metrics' former bootstrap() returned."""
    roles = [str(i) for i in range(len(probs_list))]
    fn = SliceMetricsFn(roles, [str(c) for c in range(probs_list[0].shape[1])], bins, resamples, seed)
    out = combine_locally(fn, ((k, int(t), None, {r: p[i] for r, p in zip(roles, probs_list)})
                               for i, (k, t) in enumerate(zip(keys, y))))
    return [out["boot"][r] for r in roles]
