"""How curate judges dim and noisy frames: real photos made 0 to 7 stops darker, and noisy.

Colour fades with light, so under mean brightness 0.2 (the policy's
no_skin.min_brightness_to_judge) the share of skin-coloured pixels is not
used; the relevance model still judges the frame (it learned every photo at
-2 EV too, and reads texture), and too_dark takes what is too dark for
anything. This measures that on real photos: every original photo of a
labelled folder (../shared/real_photos) is decoded as curate decodes it,
darkened in linear light by 0 to 7 stops (transforms/image/colour.py
`exposed`, a camera under-exposing), and judged by curate's per-image
features and verdict. Printed per stop:

  - skin photos: the share called too_dark, and the share called no_skin,
    overall and by tone group (a skin photo called no_skin is wrong at any
    exposure; too_dark is right once it is too dark to use);
  - non-skin photos: the share rejected (any reason), now and as the policy
    judged them before 2026.12.1 (no skin test at all under mean brightness
    0.2: a dim night scene or dark screen passed unjudged), the baseline
    measured in the same run.

Noise is what a dim frame carries, and a small upload keeps: a second table
judges every photo at 0 and -2 EV with sensor noise of 2, 4 and 8 levels
(transforms/image/colour.py `with_sensor_noise`, added at the photo's own
resolution before the analysis resize, as a camera adds it). A skin photo
called no_skin for its noise is wrong; a non-skin photo should still be caught.

With --cross_validate K each photo is judged by a relevance model trained
without it (benchmarks.real_photos.fold_models, as `real_photos
--cross_validate` does): the out-of-sample figures. Without it, the packaged
model, which is in-sample if it was trained on these photos.

The photos are read where they are; nothing of them is written into the project.

Run: .venv/bin/python -m benchmarks.dim_frames --labels ../shared/real_photos/labels.csv \\
         --images ../shared/real_photos/images [--cross_validate 10 --extra_training GEN/ground_truth.csv]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections import defaultdict

from benchmarks._common import table, write_json
from benchmarks.real_photos import TONE_GROUPS, fold_judging, fold_models, read_labels

STOPS = (0, -1, -2, -3, -4, -5, -6, -7)
NOISE_STOPS = (0, -2)
NOISE_SD = (2, 4, 8)   # 8-bit levels


def judge(image, width: int, height: int, policy) -> tuple[list[str], list[str]]:
    """(reasons, reasons as policies before 2026.12.1 gave them) for one
    analysis-size frame of an image width x height."""
    from transforms.image.quality import policy_features
    from transforms.image.verdict import quality_reasons
    features = policy_features(image, policy)
    now = quality_reasons(dict(features, width=width, height=height), policy)
    # Before, a dim frame got no skin test at all; no_skin suppresses nothing, so dropping it is that rule.
    dim = features["brightness_mean"] < policy.skin_min_brightness
    return now, [r for r in now if r != "no_skin"] if dim else now


def sweep(labels: list[dict], images: str, policy_of) -> tuple[dict, dict]:
    """Counts per stop, and per (stop, noise sd), over the original photos;
    policy_of(label) -> the policy (and relevance model) that judges that photo."""
    import hashlib

    from transforms.image.analyze import decode_for_analysis
    from transforms.image.colour import exposed, with_sensor_noise
    from transforms.image.decode import ImageRejected
    from transforms.image.quality import to_analysis_size
    counts = {s: defaultdict(int) for s in STOPS}
    noisy = {(s, sd): defaultdict(int) for s in NOISE_STOPS for sd in NOISE_SD}
    for lab in labels:
        policy = policy_of(lab)
        try:
            with open(os.path.join(images, lab["file"]), "rb") as f:
                data = f.read()
            d, frame = decode_for_analysis(data, policy)
        except (OSError, ImageRejected) as e:
            raise SystemExit(f"dim_frames: error: cannot read {lab['file']}: {e}") from None
        seed = int.from_bytes(hashlib.sha256(b"dim_frames" + data).digest()[:8], "big")
        for stop in STOPS:
            _count(counts[stop], lab, *judge(exposed(frame, stop) if stop else frame, d.width, d.height, policy))
        for stop in NOISE_STOPS:
            lit = exposed(d.image, stop) if stop else d.image   # once per stop, at the photo's own size
            for sd in NOISE_SD:
                shot = to_analysis_size(with_sensor_noise(lit, sd, seed), policy.analysis_short_side)
                _count(noisy[(stop, sd)], lab, *judge(shot, d.width, d.height, policy))
    return {s: dict(c) for s, c in counts.items()}, {k: dict(c) for k, c in noisy.items()}


def _count(c: dict, lab: dict, now: list[str], before: list[str]) -> None:
    if lab["kind"] != "non_skin":
        for group in ("all", lab["tone_group"]):
            c[f"skin {group}"] += 1
            c[f"no_skin {group}"] += "no_skin" in now
        c["too_dark"] += "too_dark" in now
    else:
        c["non_skin"] += 1
        c["rejected"] += bool(now)
        c["rejected before"] += bool(before)


def _pct(hits, n):
    return f"{100 * hits / n:.1f}% ({hits}/{n})" if n else "n/a"


def _tones(counts: dict) -> list[str]:
    return [g for g in TONE_GROUPS if any(c.get(f"skin {g}") for c in counts.values())]


def report(counts: dict) -> str:
    tones = _tones(counts)
    head = (["stops", "skin photos too_dark", "skin photos no_skin"] + [f"... {g}" for g in tones]
            + ["non-skin rejected", "... before 2026.12.1"])
    rows = []
    for stop, c in counts.items():
        rows.append([f"{stop:+d}", _pct(c.get("too_dark", 0), c.get("skin all", 0)),
                     _pct(c.get("no_skin all", 0), c.get("skin all", 0))]
                    + [_pct(c.get(f"no_skin {g}", 0), c.get(f"skin {g}", 0)) for g in tones]
                    + [_pct(c.get("rejected", 0), c.get("non_skin", 0)),
                       _pct(c.get("rejected before", 0), c.get("non_skin", 0))])
    return table(head, rows, title="real photos darkened in linear light, judged by curate's per-image path")


def noise_report(counts: dict, noisy: dict) -> str:
    """The noise table; its noise-0 rows are the stops table's."""
    tones = _tones(counts)
    head = ["stops", "noise sd", "skin photos no_skin"] + [f"... {g}" for g in tones] + ["non-skin rejected"]
    rows = []
    for stop in NOISE_STOPS:
        for sd, c in [(0, counts[stop])] + [(sd, noisy[(stop, sd)]) for sd in NOISE_SD]:
            rows.append([f"{stop:+d}", str(sd), _pct(c.get("no_skin all", 0), c.get("skin all", 0))]
                        + [_pct(c.get(f"no_skin {g}", 0), c.get(f"skin {g}", 0)) for g in tones]
                        + [_pct(c.get("rejected", 0), c.get("non_skin", 0))])
    return table(head, rows, title="real photos with sensor noise (8-bit levels, added at the photo's own "
                                   "resolution), judged by curate's per-image path")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dim_frames", description=__doc__.splitlines()[0])
    ap.add_argument("--labels", required=True, help="labels CSV in the format of ../shared/real_photos")
    ap.add_argument("--images", required=True, help="folder the labels' `file` names are in")
    ap.add_argument("--cross_validate", type=int, metavar="K", default=0,
                    help="judge each photo by a relevance model trained without it (K folds): out of sample")
    ap.add_argument("--extra_training", action="append", default=[], metavar="CSV",
                    help="with --cross_validate: more uri,label[,group] photos every fold also trains on")
    ap.add_argument("--fold_cache", metavar="DIR",
                    help="with --cross_validate: keep the fold models here, reuse them when unchanged "
                         "(as real_photos --fold_cache)")
    ap.add_argument("--noise_copies", action="store_true",
                    help="with --cross_validate: train the folds as train_relevance --noise_copies does")
    ap.add_argument("--json", help="write the counts here")
    a = ap.parse_args(argv)
    if a.cross_validate == 1 or a.cross_validate < 0:
        ap.error("--cross_validate needs at least 2 folds")
    if not os.path.isfile(a.labels):
        ap.error(f"--labels {a.labels}: no such file")
    if not os.path.isdir(a.images):
        ap.error(f"--images {a.images}: no such folder")
    from schemas.policy import load_policy
    from transforms.image.relevance import RelevanceModel
    labels = [lab for lab in read_labels(a.labels) if not lab.get("degradation")]
    images = os.path.abspath(a.images)
    policy = load_policy()
    t0 = time.perf_counter()
    if a.cross_validate:
        with tempfile.TemporaryDirectory(prefix="dim_frames_") as tmp:
            models, _ = fold_models(labels, images, a.cross_validate, tmp, a.extra_training, a.fold_cache,
                                    a.noise_copies)
        policies = {k: dataclasses.replace(policy, relevance=RelevanceModel(doc)) for k, doc in models.items()}
        fold_of = fold_judging(models)
        counts, noisy = sweep(labels, images, lambda lab: policies[fold_of(lab)])
        model = f"cross-validated: each photo judged by networks trained without it ({a.cross_validate} folds)"
    else:
        counts, noisy = sweep(labels, images, lambda lab: policy)
        model = "the packaged model (if it was trained on these photos, these figures are in-sample)"
    print(report(counts))
    print()
    print(noise_report(counts, noisy))
    print(f"\nrelevance model: {model}\n{len(labels)} photos x {len(STOPS)} exposures and "
          f"{len(noisy)} noisy ones in {time.perf_counter() - t0:.0f} s")
    write_json(a.json, {"benchmark": "dim_frames", "relevance_model": model,
                        "counts": {str(s): c for s, c in counts.items()},
                        "noise": {f"{s:+d} EV, sd {sd}": c for (s, sd), c in noisy.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
