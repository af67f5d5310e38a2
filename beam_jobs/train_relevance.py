"""train_relevance: the skin-relevance model behind curate's no_skin check, from labelled photos.

    CSV of uri,label[,group] (label: skin | not_skin; group keeps related photos
    in one fold, e.g. a photo and its edited copies, or one person's photos)
      -> one decode per photo, as curate does -> 28 px cell descriptors
         (colour, and grayscale copies for the grayscale network)
      -> k-fold cross-validation by group: out-of-sample scores of every photo
      -> threshold = the --false_reject quantile of skin photos' out-of-sample scores
         (real photos' only, when generated sample sets are also given)
      -> final networks on all photos -> model JSON (schemas/relevance_model.json's format)

Run: python -m beam_jobs.train_relevance --labels photos.csv [--labels more.csv]
         [--image_root ROOT] --output model.json [--folds 10] [--false_reject 0.02]

Point curate at the result with a policy whose no_skin.model names it. The
cross-validated figures printed at the end (and kept in the model's `training`
entry) are the honest estimate of how it will do on photos it never saw.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import time

import numpy as np

from beam_jobs.cli import OneLineParser, UsageError, check_replaceable, is_json_object_with, main, seed_arg
from transforms.image import relevance as rel
from transforms.image.colour import exposed, with_sensor_noise

LABELS = {"skin": 1, "1": 1, "true": 1, "yes": 1, "not_skin": 0, "no_skin": 0, "0": 0, "false": 0, "no": 0}
LABEL_NAMES = {1: "skin", 0: "not_skin"}
DEFAULT_FALSE_REJECT = 0.02
# Every photo is also learned from as if taken this many stops under (in the
# same fold as its original): dim skin is still skin, and whether a photo is
# too dark is too_dark's business, not the relevance model's. Figures count
# the originals only.
AUGMENT_EV = (-2.0,)
# ... and as a phone would save it again, heavily compressed (same fold, not
# counted in the figures either): AVIF's smoothing of fine texture lifted a
# hog, a purse and a bagel over the threshold when the model had seen only
# the JPEG originals. Quality below the 90 phones use, so the copies smooth
# at least as much as a real upload (benchmarks.phone_formats measures q90).
AUGMENT_CODECS = (("avif", 70),)
_CODEC_QUALITY = {"avif": "IMWRITE_AVIF_QUALITY", "jpg": "IMWRITE_JPEG_QUALITY"}
# With --noise_copies, also with sensor noise (same fold, not counted): a
# standard deviation between these 8-bit levels, drawn per photo from its
# bytes, added at the photo's own resolution before the analysis resize, as a
# camera adds it. Trained on clean photos only, the networks read noise as
# not-skin texture (2 levels at a real photo's own resolution: 12% of them
# no_skin; 4 levels: 60%); with the copies they do not (3% at 8 levels, out
# of sample), but catch fewer clean non-skin photos (87.8% against 92.2%),
# so the packaged model is trained without them (README "Noisy frames").
AUGMENT_NOISE_SD = (2.0, 8.0)
NOISE_COPY = f"noise {AUGMENT_NOISE_SD[0]:g}-{AUGMENT_NOISE_SD[1]:g}"
TRAINING = {"members": 3, "hidden": 16, "epochs": 400, "learning_rate": 0.01, "weight_decay": 1e-3,
            "rounds": 2, "keep": 0.5}


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="train_relevance", description=__doc__.splitlines()[0])
    p.add_argument("--labels", action="append", required=True,
                   help="CSV with columns uri,label[,group] (local or gs://), or a generated sample set's "
                        "ground_truth.csv (its skin photos and non-skin scenes); repeat to combine several.")
    p.add_argument("--image_root", help="Root that relative uris are resolved against.")
    p.add_argument("--output", required=True, help="Model JSON to write (local or gs://).")
    p.add_argument("--folds", type=int, default=10, help="Cross-validation folds (by group).")
    p.add_argument("--false_reject", type=float, default=DEFAULT_FALSE_REJECT,
                   help=f"Share of skin photos the threshold may reject out of sample (default {DEFAULT_FALSE_REJECT}).")
    p.add_argument("--seed", type=seed_arg, default=0, help="Seed of the networks' initial weights.")
    p.add_argument("--noise_copies", action="store_true",
                   help=f"Also learn every photo with sensor noise of {AUGMENT_NOISE_SD[0]:g}-{AUGMENT_NOISE_SD[1]:g} "
                        "levels: noisy skin photos stay skin, at the cost of fewer clean non-skin photos caught "
                        "(see the README's 'Noisy frames'). Off for the packaged model.")
    p.add_argument("--version", help="Model version (default relevance-<sha256 of the labels and the training recipe>[:8]-s<seed>).")
    return p


def read_labels(paths: list[str], image_root: str | None) -> tuple[list[dict], bytes]:
    """Rows {uri, label, group} from every CSV, and their bytes (for the version)."""
    from transforms.io.inputs import decode_text, read_named_file
    listed, raw = [], b""
    for source, path in enumerate(paths):
        try:
            data = read_named_file(path, "--labels")
            text = decode_text(data, f"--labels {path}")
        except ValueError as e:
            raise UsageError(str(e)) from None
        raw += data
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames and {"image_path", "defect"} <= set(reader.fieldnames):
            listed += _sample_data_rows(reader, path, source)
        elif not reader.fieldnames or not {"uri", "label"} <= set(reader.fieldnames):
            raise UsageError(f"--labels {path}: needs a header with columns uri,label[,group]")
        else:
            listed += _csv_rows(reader, path, source, image_root)
    rows, first = [], {}
    for row in listed:   # a photo learned twice would count twice, or with both labels
        earlier = first.setdefault(row["uri"], row)
        if earlier is row:
            rows.append(row)
        elif earlier["label"] != row["label"]:
            raise UsageError(f"{row['line']}: {row['uri']} is labelled {LABEL_NAMES[row['label']]} here and "
                             f"{LABEL_NAMES[earlier['label']]} at {earlier['line']}")
    if len(rows) < len(listed):
        print(f"train_relevance: {len(listed) - len(rows)} label rows repeat a photo listed earlier with the "
              "same label; each photo is learned once", file=sys.stderr)
    if not rows:
        raise UsageError("the labels name no photos")
    counts = np.bincount([r["label"] for r in rows], minlength=2)
    if min(counts) < 2:
        raise UsageError(f"need at least 2 photos of each label, got {counts[1]} skin and {counts[0]} not_skin")
    return rows, raw


def _csv_rows(reader, path: str, source: int, image_root: str | None) -> list[dict]:
    from transforms.io.inputs import join_root
    rows = []
    for n, r in enumerate(reader, start=2):
        label = LABELS.get((r["label"] or "").strip().lower())
        if label is None:
            raise UsageError(f"--labels {path} line {n}: label {r['label']!r} is not skin or not_skin")
        uri = join_root(image_root, r["uri"].strip()) if image_root else r["uri"].strip()
        rows.append({"uri": uri, "label": label, "group": (r.get("group") or "").strip() or uri,
                     "source": source, "line": f"--labels {path} line {n}"})
    return rows


# From a generated sample set (beam_jobs.sample_data's ground_truth.csv): its
# skin photos, plain and dimmed, and its non-skin scenes; other defects are
# other reasons' business. At most this many of the plain ones, so generated
# photos do not outweigh real ones.
SAMPLE_SKIN_DEFECTS = ("none", "dim_textured")
SAMPLE_MAX_PLAIN = 60


def _sample_data_rows(reader, path: str, source: int) -> list[dict]:
    root = path.rsplit("/", 1)[0] if "/" in path else "."
    rows, plain = [], 0
    for n, r in enumerate(reader, start=2):
        if r["defect"] == "none":
            plain += 1
            if plain > SAMPLE_MAX_PLAIN:
                continue
        if r["defect"] in SAMPLE_SKIN_DEFECTS or r["defect"] == "not_skin":
            rows.append({"uri": f"{root}/{r['image_path']}", "label": int(r["defect"] != "not_skin"),
                         "group": f"{path}:{r.get('case_id') or r['image_path']}", "source": source,
                         "generated": True, "line": f"--labels {path} line {n}"})
    return rows


def recompressed(image_bgr: np.ndarray, fmt: str, quality: int) -> bytes:
    """The decoded photo saved again as `fmt` at `quality` (OpenCV's encoder)."""
    import cv2
    ok, data = cv2.imencode(f".{fmt}", image_bgr, [getattr(cv2, _CODEC_QUALITY[fmt]), int(quality)])
    if not ok:
        raise UsageError(f"this OpenCV build cannot encode {fmt.upper()} (needed for the compressed training copies)")
    return data.tobytes()


def is_original(photo: dict) -> bool:
    """A photo as labelled, not one of its training copies (the figures count only these)."""
    return photo["ev"] == 0.0 and photo.get("copy") is None


def noise_of(data: bytes) -> tuple[float, int]:
    """(sd, seed) of a photo's noisy copy: drawn from its bytes, so the same
    photo gets the same noise on every run and in every fold."""
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "big")
    return round(float(np.random.default_rng(seed).uniform(*AUGMENT_NOISE_SD)), 1), seed


def describe_photos(rows: list[dict], noise_copies: bool = False,
                    notes: list | None = None) -> tuple[list[dict], list[str]]:
    """Decode each photo once, as curate does; rows gain colour and grayscale cells.

    Each photo also yields its training copies: dimmed (AUGMENT_EV), saved
    again compressed (AUGMENT_CODECS, decoded by curate's own path) and, with
    noise_copies, with sensor noise (AUGMENT_NOISE_SD), marked by `ev` and
    `copy`, with the photo's group so they share its fold.
    Photos that are exact or near duplicates of each other, as curate judges
    them, share one group (join_duplicates), marked `joined`; what that found
    is appended to `notes`.
    Photos that cannot be read or decoded are left out and named, never silently.
    """
    from schemas.policy import load_policy
    from transforms.io.allowed_roots import AllowedRoots, scheme_of
    from transforms.image.analyze import decode_for_analysis, decoded_row
    from transforms.image.decode import ImageRejected
    from transforms.image.quality import to_analysis_size
    from transforms.io.read import Missing, Refused, read_bytes
    policy = load_policy(with_model=False)  # the model is what is being made
    # The operator's own label files name the photos: no roots (and relative
    # local paths made absolute, so '../photos' works), but still only regular
    # files (a FIFO would hang the trainer), never past max_bytes or max_decode_bytes.
    anywhere = AllowedRoots([])
    kept, failed, judged = [], [], []
    for r in rows:
        uri = os.path.abspath(r["uri"]) if scheme_of(r["uri"]) is None else r["uri"]
        try:
            data, _retries = read_bytes(uri, allowed=anywhere, max_bytes=policy.max_bytes)
            d, image = decode_for_analysis(data, policy)
        except (ImageRejected, Refused, Missing, OSError, ValueError) as e:
            failed.append(f"{r['uri']}: {e}")
            continue
        judged.append((r, decoded_row(r["uri"], data, d, image, policy)))
        shown = [(0.0, None, image)] + [(ev, None, exposed(image, ev)) for ev in AUGMENT_EV]
        for fmt, quality in AUGMENT_CODECS:
            _, again = decode_for_analysis(recompressed(d.image, fmt, quality), policy)
            shown.append((0.0, f"{fmt} q{quality}", again))
        if noise_copies:
            sd, seed = noise_of(data)
            shown.append((0.0, NOISE_COPY, to_analysis_size(with_sensor_noise(d.image, sd, seed),
                                                            policy.analysis_short_side)))
        for ev, copy, img in shown:
            kept.append(dict(r, ev=ev, copy=copy, colour=rel.cell_descriptors(img),
                             grayscale=rel.cell_descriptors(rel.as_grayscale(img))))
    joined = join_duplicates(judged, policy, notes if notes is not None else [])
    for p in kept:
        if p["group"] in joined:
            p.update(group=joined[p["group"]], joined=True)
    return kept, failed


def join_duplicates(judged: list[tuple[dict, dict]], policy, notes: list) -> dict[str, str]:
    """{group: the group it joins}: photos that curate would call exact or near
    duplicates of each other (identical bytes; any of their pHashes within the
    policy's radius, for hashes that identify content) go into one group, the
    smallest name of those joined, so that no copy of a photo is judged by
    networks that learned the photo: cross-validation would be flattered.
    `judged` is (label row, curate's row) per photo. Identical bytes with two
    labels raise UsageError; near duplicates labelled differently are noted."""
    from transforms.curate.duplicates import hash_is_reliable, row_hashes
    from transforms.curate.near_dups import connected_components, owner_pairs
    edges, by_bytes = [], {}
    for r, row in judged:
        same = by_bytes.setdefault(row["sha256"], r)
        if same is not r:
            if same["label"] != r["label"]:
                raise UsageError(f"{r['uri']} and {same['uri']} are the same file, labelled "
                                 f"{LABEL_NAMES[r['label']]} and {LABEL_NAMES[same['label']]}: fix the labels")
            edges.append((same["group"], r["group"]))
    hashed = [(r, row) for r, row in judged if hash_is_reliable(row, policy.exact_only_for)]
    if hashed:
        hs = [[int(h, 16) for h in row_hashes(row)] for _, row in hashed]
        for i, j in owner_pairs(np.array([h for x in hs for h in x], dtype=np.uint64),
                                np.repeat(np.arange(len(hs)), [len(x) for x in hs]), policy.dup_radius).tolist():
            (a, _), (b, _) = hashed[i], hashed[j]
            edges.append((a["group"], b["group"]))
            if a["label"] != b["label"]:
                notes.append(f"near duplicates labelled differently: {a['uri']} ({LABEL_NAMES[a['label']]}), "
                             f"{b['uri']} ({LABEL_NAMES[b['label']]})")
    joined = {g: c for g, c in connected_components(e for e in edges if e[0] != e[1]).items() if g != c}
    if joined:
        notes.append(f"{len(joined)} group{'s' if len(joined) > 1 else ''} of photos joined others holding "
                     "exact or near duplicates of their photos, so that each copy falls in the same fold")
    return joined


def fold_of(group: str, folds: int) -> int:
    """Stable fold of a group: the same photos land in the same fold on every run."""
    return int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") % folds


def cross_validate(photos: list[dict], kind: str, folds: int, seed: int) -> tuple[np.ndarray, dict]:
    """Out-of-fold P(skin) of every photo for the `kind` networks, and the
    networks of each fold (fold -> networks trained without it). Photos marked
    `always_train` are in every fold's training set and never scored (0)."""
    fold = np.array([-1 if p.get("always_train") else fold_of(p["group"], folds) for p in photos])
    scores = np.zeros(len(photos))
    by_fold = {}
    for k in range(folds):
        train = [p for p, f in zip(photos, fold) if f != k]
        if not any(f == k for f in fold):
            continue
        nets = rel.train_ensemble([p[kind] for p in train], [p["label"] for p in train], seed=seed, **TRAINING)
        by_fold[k] = nets
        for i in np.flatnonzero(fold == k):
            scores[i] = rel.photo_score(nets, photos[i][kind])
    return scores, by_fold


def metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Out-of-sample figures at a threshold: what curate would do on unseen photos."""
    skin, other = scores[labels == 1], scores[labels == 0]

    def share(x):
        return round(float(x.mean()), 4) if x.size else None

    auc = (float((skin[:, None] > other[None, :]).mean() + 0.5 * (skin[:, None] == other[None, :]).mean())
           if skin.size and other.size else None)
    return {"photos": int(labels.size), "skin": int(skin.size), "not_skin": int(other.size),
            "auc": None if auc is None else round(auc, 4),
            "accuracy": share((scores >= threshold) == (labels == 1)),
            "skin_rejected": share(skin < threshold), "not_skin_rejected": share(other < threshold)}


def run(argv=None) -> dict:
    a = _parser().parse_args(argv)
    if a.folds < 2:
        raise UsageError(f"--folds must be at least 2, got {a.folds}")
    if not 0.0 < a.false_reject < 0.5:
        raise UsageError(f"--false_reject must be between 0 and 0.5, got {a.false_reject}")
    check_replaceable(a.output, "--output", "relevance model", is_json_object_with("cell_descriptors"))
    rows, raw = read_labels(a.labels, a.image_root)
    t0 = time.perf_counter()
    notes = []
    photos, failed = describe_photos(rows, a.noise_copies, notes)
    for f in failed:
        print(f"train_relevance: skipped unreadable photo {f}", file=sys.stderr)
    for note in notes:
        print(f"train_relevance: {note}", file=sys.stderr)
    labels = np.array([p["label"] for p in photos])
    original = np.array([is_original(p) for p in photos])
    sources = np.array([p["source"] for p in photos])
    generated = np.array([p.get("generated", False) for p in photos])
    if min(np.bincount(labels[original], minlength=2)) < 2:
        raise UsageError("fewer than 2 readable photos of one label")
    # The same labels trained another way are another model: the recipe is in the version.
    recipe = json.dumps([AUGMENT_EV, AUGMENT_CODECS, TRAINING] + ([AUGMENT_NOISE_SD] if a.noise_copies else []),
                        sort_keys=True).encode()
    version = a.version or f"relevance-{hashlib.sha256(raw + recipe).hexdigest()[:8]}-s{a.seed}"
    parts, cv = {}, {}
    for kind in ("colour", "grayscale"):
        every, _ = cross_validate(photos, kind, a.folds, a.seed)
        scores, y = every[original], labels[original]
        # Generated photos help training but are too easy to set the threshold
        # by: it is set on the real ones (all, if every set is generated).
        real = ~generated[original]
        calibrate = (y == 1) & real if ((y == 1) & real).any() else y == 1
        threshold = float(np.quantile(scores[calibrate], a.false_reject))
        cv[kind] = dict(metrics(scores, y, threshold), threshold=round(threshold, 6))
        if len(a.labels) > 1:  # how it does on each labelled set, at the one threshold
            src = sources[original]
            cv[kind]["by_labels"] = {a.labels[i]: metrics(scores[src == i], y[src == i], threshold)
                                     for i in range(len(a.labels)) if (src == i).any()}
        # The training copies scored out of sample too: how the model does on
        # dimmed and recompressed photos it never saw (at the same threshold).
        copies = np.array([_copy_name(p) for p in photos])
        cv[kind]["copies"] = {name: metrics(every[copies == name], labels[copies == name], threshold)
                              for name in dict.fromkeys(copies[~original])}
        nets = rel.train_ensemble([p[kind] for p in photos], list(labels), seed=a.seed, **TRAINING)
        parts[kind] = {"threshold": round(threshold, 6), "networks": nets}
    training = {"photos": int(original.sum()), "skin": int(labels[original].sum()),
                "not_skin": int((labels[original] == 0).sum()), "augmented_ev": list(AUGMENT_EV),
                "augmented_codecs": [f"{fmt} q{q}" for fmt, q in AUGMENT_CODECS],
                "augmented_noise_sd": list(AUGMENT_NOISE_SD) if a.noise_copies else None,
                "unreadable": len(failed),
                "joined_by_duplicates": sum(bool(p.get("joined")) for p in photos if is_original(p)),
                "labels_sha256": hashlib.sha256(raw).hexdigest(),
                "folds": a.folds, "false_reject": a.false_reject, "seed": a.seed,
                "settings": TRAINING, "cross_validated": cv}
    doc = rel.model_document(version=version, colour=parts["colour"], grayscale=parts["grayscale"],
                             training=training)
    _write(a.output, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    for kind, m in cv.items():
        for name, f in [("all photos", m)] + list(m.get("by_labels", {}).items()):
            print(f"train_relevance: {kind} network, {a.folds}-fold cross-validated, {name}: {f['photos']} photos "
                  f"({f['skin']} skin, {f['not_skin']} not): AUC {_fmt(f['auc'])}, accuracy {_fmt(f['accuracy'])}, "
                  f"skin rejected {_pct(f['skin_rejected'])}, not-skin rejected "
                  f"{_pct(f['not_skin_rejected'])} at threshold {m['threshold']:.3f}", file=sys.stderr)
        for name, f in m["copies"].items():
            print(f"train_relevance: {kind} network, {a.folds}-fold cross-validated, copies {name}: "
                  f"AUC {_fmt(f['auc'])}, skin rejected {_pct(f['skin_rejected'])}, not-skin rejected "
                  f"{_pct(f['not_skin_rejected'])}", file=sys.stderr)
    print(f"train_relevance: wrote {a.output} (version {version}) in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    return doc


def _copy_name(photo: dict) -> str:
    return "original" if is_original(photo) else (photo.get("copy") or f"{photo['ev']:+g} EV")


def _fmt(x):
    return "n/a" if x is None else f"{x:.3f}"


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _write(path: str, data: bytes) -> None:
    from transforms.io.sharded_write import write_atomically
    write_atomically(path, data)


if __name__ == "__main__":
    sys.exit(main(run, prog="train_relevance"))
