"""Curate's verdicts on real photographs: the figures that say whether the rules are right.

Generated images prove the rules consistent; only photos nobody here made show
whether they are right. This runs the real curate job (DirectRunner) over a
labelled folder of real photos and prints, overall and by tone group:

  - usable skin photos wrongly rejected (any reason but a duplicate one), and
    the spread between the light, medium and dark groups;
  - non-skin photos rejected (any reason), and the skin-coloured ones alone;
  - for each strong capture defect, the share rejected with its reason;
  - near duplicates rejected `near_duplicate`, exact copies `exact_duplicate`;
  - the precision of every reason curate gave.

Input is either a labels CSV and its image folder in the format of
../shared/real_photos (columns file, kind, tone_group, expected,
expected_reason, note), or the output folder of its degrade.py (labels.csv with
`degradation` and `derived_from`, images/). With --degrade, the script runs
that folder's degrade.py into a temporary directory first, which is what
`make bench` does when ../shared/real_photos is present.

The photos are for internal evaluation only: this script reads them where they
are and writes nothing of them into the project.

Run:  .venv/bin/python -m benchmarks.real_photos --degrade ../shared/real_photos
      .venv/bin/python -m benchmarks.real_photos --labels DIR/labels.csv --images DIR/images
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from benchmarks._common import table, write_json
from schemas.features import MONK_GROUPS

# "needed" figures of issue 11; each is (op, value) on a fraction.
TARGETS = {
    "usable_wrongly_rejected": ("<=", 0.03),
    "tone_spread_pp": ("<=", 3.0),
    "non_skin_rejected": (">=", 0.90),
    "skin_like_rejected": (">=", 0.80),
    "blur_strong": (">=", 0.90), "motion_strong": (">=", 0.90),
    "dark_strong": (">=", 0.90), "bright_strong": (">=", 0.90),
    "tiny": (">=", 0.90), "near_dup": (">=", 0.90), "exact_dup": (">=", 0.90),
}
TONE_GROUPS = MONK_GROUPS
STRONG = ("blur_strong", "motion_strong", "dark_strong", "bright_strong", "tiny")
DUPLICATE_REASONS = ("exact_duplicate", "near_duplicate")


def read_labels(path: str) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"file", "kind", "tone_group", "expected", "expected_reason"}
    if not rows or need - rows[0].keys():
        raise SystemExit(f"real_photos: error: {path} needs columns {sorted(need)}")
    return rows


def run_curate(images: str, out: str, policy: str | None = None) -> float:
    """Run the curate job on every file in images/; returns wall seconds."""
    from beam_jobs.curate import run
    argv = ["--input", os.path.join(images, "*"), "--output", out, "--runner", "DirectRunner"]
    if policy:
        argv += ["--policy", policy]
    t0 = time.perf_counter()
    run(argv)
    return time.perf_counter() - t0


def _share(hits: int, n: int) -> dict:
    """hits of n, the share, and its 95% Wilson interval: how far the same
    rule could land on other photos of this kind by chance alone."""
    from transforms.curate.stats import wilson_interval
    return {"n": n, "hits": hits, "share": hits / n if n else None,
            "ci95": list(wilson_interval(hits, n)) if n else None}


def figures(labels: list[dict], rows: dict[str, dict], images: str) -> dict:
    """Every figure of the module doc from labels and curate's rows (uri -> row). Pure."""
    by_file = {}
    missing = []
    for lab in labels:
        row = rows.get(os.path.join(images, lab["file"]))
        if row is None:
            missing.append(lab["file"])
        else:
            by_file[lab["file"]] = row

    def own_reasons(row):
        return [r for r in row["reasons"] if r not in DUPLICATE_REASONS]

    by_uri = {os.path.join(images, lab["file"]): lab for lab in labels}

    def family(lab):
        return lab.get("derived_from") or lab["file"]

    usable = defaultdict(lambda: [0, 0])
    wrong_reasons: Counter = Counter()
    wrong_files = []
    non_skin, skin_like = [0, 0], [0, 0]
    defects = defaultdict(lambda: [0, 0])
    correct: Counter = Counter()
    flagged: Counter = Counter()
    for lab in labels:
        row = by_file.get(lab["file"])
        if row is None:
            continue
        deg = lab.get("degradation", "")
        own = own_reasons(row)
        if lab["expected"] == "accept":
            for group in ("all", lab["tone_group"]):
                usable[group][0] += 1
                usable[group][1] += bool(own)
            if own:
                wrong_reasons.update(own)
                wrong_files.append((lab["file"], lab["tone_group"], ",".join(own)))
        if lab["kind"] == "non_skin":
            non_skin[0] += 1
            non_skin[1] += row["status"] == "rejected"
            if "SKIN-LIKE" in lab.get("note", ""):
                skin_like[0] += 1
                skin_like[1] += row["status"] == "rejected"
        if deg in STRONG:
            defects[deg][0] += 1
            defects[deg][1] += lab["expected_reason"] in row["reasons"]
        if deg in ("near_dup", "exact_dup"):
            want = "near_duplicate" if deg == "near_dup" else "exact_duplicate"
            twin = by_file.get(lab["derived_from"])
            caught = want in row["reasons"] or (
                twin is not None and want in twin["reasons"] and twin["duplicate_of"] == row["uri"])
            defects[deg][0] += 1
            defects[deg][1] += caught
        # Per-reason precision: a reason is right when the photo had to be
        # rejected at all (a non-skin photo, or a strong defect that is also,
        # say, too small after the defect); a duplicate reason is right when
        # the kept photo it points at has the same origin (every degraded
        # variant is a copy of its original) or the same bytes.
        if lab["expected"] == "either":
            continue
        for r in row["reasons"]:
            flagged[r] += 1
            if r == "near_duplicate":
                kept = by_uri.get(row["duplicate_of"])
                ok = kept is not None and family(kept) == family(lab)
            elif r == "exact_duplicate":
                kept_row = rows.get(row["duplicate_of"])
                ok = kept_row is not None and kept_row["sha256"] == row["sha256"]
            else:
                ok = lab["expected"] == "reject" or lab["kind"] == "non_skin"
            correct[r] += ok
    tone = {g: _share(usable[g][1], usable[g][0]) for g in TONE_GROUPS if usable[g][0]}
    shares = [v["share"] for v in tone.values()]
    return {
        "usable_wrongly_rejected": _share(usable["all"][1], usable["all"][0]),
        "usable_wrongly_rejected_by_tone": tone,
        "tone_spread_pp": 100 * (max(shares) - min(shares)) if shares else None,
        "wrong_rejection_reasons": dict(wrong_reasons.most_common()),
        "wrongly_rejected_files": sorted(wrong_files),
        "non_skin_rejected": _share(non_skin[1], non_skin[0]),
        "skin_like_rejected": _share(skin_like[1], skin_like[0]),
        "defects": {k: _share(v[1], v[0]) for k, v in sorted(defects.items())},
        "precision": {r: _share(correct[r], flagged[r]) for r in sorted(flagged)},
        "not_in_output": missing,
    }


def _target_share(doc: dict, name: str) -> dict | None:
    """The share (n, hits, share, ci95) a target is judged on; None for the
    tone spread, a figure in pp, or a defect the photos did not hold."""
    if name == "tone_spread_pp":
        return None
    return doc[name] if name in doc else doc["defects"].get(name)


def check_targets(doc: dict) -> dict:
    """target name -> (measured, op, needed, met)."""
    out = {}
    for name, (op, needed) in TARGETS.items():
        share = _target_share(doc, name)
        value = doc["tone_spread_pp"] if name == "tone_spread_pp" else (share or {}).get("share")
        if value is None:
            continue
        out[name] = (value, op, needed, value <= needed if op == "<=" else value >= needed)
    return out


def report(doc: dict) -> str:
    def pct(s):
        if s["share"] is None:
            return "n/a"
        lo, hi = s["ci95"]
        return f"{100 * s['share']:.1f}% ({s['hits']}/{s['n']}; 95% CI {100 * lo:.1f}-{100 * hi:.1f})"
    rows = [["usable skin photos wrongly rejected", pct(doc["usable_wrongly_rejected"])]]
    rows += [[f"  ... {g}", pct(s)] for g, s in doc["usable_wrongly_rejected_by_tone"].items()]
    rows += [["  spread between tone groups (pp)", f"{doc['tone_spread_pp']:.1f}"],
             ["non-skin photos rejected", pct(doc["non_skin_rejected"])],
             ["  ... skin-coloured ones", pct(doc["skin_like_rejected"])]]
    rows += [[f"{k} rejected with its reason", pct(v)] for k, v in doc["defects"].items()]
    out = [table(["figure", "measured"], rows, title="curate on real photos")]
    out.append(table(["reason", "precision", "right/flagged"],
                     [[r, "n/a" if s["share"] is None else f"{s['share']:.3f}", f"{s['hits']}/{s['n']}"]
                      for r, s in doc["precision"].items()], title="\nper-reason precision"))
    if doc["wrong_rejection_reasons"]:
        out.append("\nwrong rejections of usable photos by reason: " + ", ".join(
            f"{r} {n}" for r, n in doc["wrong_rejection_reasons"].items()))
    out.append("\ntargets (issue 11):")
    for name, (value, op, needed, met) in check_targets(doc).items():
        unit = "pp" if name == "tone_spread_pp" else ""
        v = f"{value:.1f}{unit}" if unit else f"{100 * value:.1f}%"
        n = f"{needed:.1f}{unit}" if unit else f"{100 * needed:.0f}%"
        line = f"  {'met ' if met else 'MISS'}  {name:<26} {v:>8}  needed {op} {n}"
        share = _target_share(doc, name)
        if met and share and share.get("ci95"):
            bound = share["ci95"][1] if op == "<=" else share["ci95"][0]
            if not (bound <= needed if op == "<=" else bound >= needed):
                line += f"  (95% CI reaches {100 * bound:.1f}%: met here, not assured on other photos)"
        out.append(line)
    return "\n".join(out)


def write_training_csv(labels: list[dict], images: str, path: str) -> int:
    """uri,label,group rows of the original photos for beam_jobs.train_relevance.

    Every photo of skin is `skin`, usable or not (being skin and being usable
    are separate verdicts); degraded variants are left out, so each photo counts once.
    """
    rows = [{"uri": os.path.join(images, lab["file"]),
             "label": "not_skin" if lab["kind"] == "non_skin" else "skin",
             "group": lab["file"]}
            for lab in labels if not lab.get("degradation")]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["uri", "label", "group"])
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def fold_models(labels: list[dict], images: str, folds: int, tmp: str,
                extra_training: list[str] = (), cache: str | None = None,
                noise_copies: bool = False) -> tuple[dict[int, dict], dict]:
    """Per fold, a relevance model document trained without that fold's photos.

    The original photos are split into `folds` groups exactly as
    beam_jobs.train_relevance splits them (a photo's degraded variants go with
    it, by `derived_from`); each fold's networks are trained on the other
    folds, with the threshold taken from the other folds' out-of-sample skin
    scores. Photos of `extra_training` CSVs (uri,label[,group], as the
    packaged model was also trained on) join every fold's training and are
    never judged. noise_copies: trained as train_relevance --noise_copies.
    Returns fold -> model document, and the cross-validated model figures.

    With `cache` (a folder), the result is kept there under a key of
    everything it depends on (the photos' bytes and labels, the folds, the
    trainer's and descriptors' code), so real_photos and dim_frames on the
    same photos train the folds once.
    """
    from beam_jobs import train_relevance as T
    from transforms.image import relevance as rel

    train_csv = os.path.join(tmp, "training.csv")
    write_training_csv(labels, images, train_csv)
    rows_in, _ = T.read_labels([train_csv, *extra_training], None)
    cached = _fold_cache_path(cache, rows_in, folds, noise_copies) if cache else None
    if cached and os.path.exists(cached):
        doc = json.loads(Path(cached).read_text())
        return {int(k): m for k, m in doc["models"].items()}, doc["summary"]
    photos, failed = T.describe_photos(rows_in, noise_copies)
    if failed:
        raise SystemExit(f"real_photos: error: cannot read {failed[0]}")
    for p in photos:
        p["always_train"] = p["source"] > 0
    real = np.array([p["source"] == 0 for p in photos])
    original = np.array([T.is_original(p) for p in photos]) & real
    y = np.array([p["label"] for p in photos])[original]
    fold_of_photo = np.array([T.fold_of(p["group"], folds) for p in photos])[original]
    parts = {}
    for kind in ("colour", "grayscale"):
        scores, by_fold = T.cross_validate(photos, kind, folds, seed=0)
        parts[kind] = (scores[original], by_fold)
    summary = {}
    for kind, (scores, _) in parts.items():
        t = float(np.quantile(scores[y == 1], T.DEFAULT_FALSE_REJECT))
        summary[kind] = T.metrics(scores, y, t)
    files = np.array([os.path.relpath(p["uri"], images) for p in photos])[original]
    models = {}
    for k in sorted(set.intersection(*(set(by_fold) for _, by_fold in parts.values()))):
        others = (fold_of_photo != k) & (y == 1)
        training = {"fold": k, "folds": folds, "judges": sorted(files[fold_of_photo == k].tolist())}
        models[k] = rel.model_document(version=f"cv-fold-{k}", training=training, **{
            kind: {"threshold": float(np.quantile(scores[others], T.DEFAULT_FALSE_REJECT)), "networks": by_fold[k]}
            for kind, (scores, by_fold) in parts.items()})
    if cached:
        from transforms.io.sharded_write import write_atomically
        os.makedirs(cache, exist_ok=True)
        write_atomically(cached, json.dumps({"models": models, "summary": summary}).encode())
    return models, summary


def _fold_cache_path(cache: str, rows: list[dict], folds: int, noise_copies: bool) -> str:
    """cache/folds-KEY.json, KEY a hash of what fold_models' result depends on:
    the training rows (train_relevance.read_labels', but for their uri), their
    photos' bytes, the folds, the code that decodes, describes and trains
    (and the decode's header parser), and the OpenCV and numpy builds under it,
    whose rounding the descriptors carry."""
    import cv2
    import numpy as np

    import beam_jobs.train_relevance
    import transforms.image.analyze
    import transforms.image.colour
    import transforms.image.decode
    import transforms.image.header
    import transforms.image.quality
    import transforms.image.relevance
    digest = hashlib.sha256(f"{folds}\0{noise_copies}\0{cv2.__version__}\0{np.__version__}\0".encode())
    for row in rows:   # where a photo lies is not part of it: the folder real_photos and dim_frames read differs
        digest.update(json.dumps({k: v for k, v in row.items() if k not in ("uri", "line")},
                                 sort_keys=True).encode())
        with open(row["uri"], "rb") as img:
            digest.update(hashlib.sha256(img.read()).digest())
    for module in (beam_jobs.train_relevance, transforms.image.relevance, transforms.image.colour,
                   transforms.image.quality, transforms.image.decode, transforms.image.header,
                   transforms.image.analyze):
        digest.update(Path(module.__file__).read_bytes())
    return os.path.join(cache, f"folds-{digest.hexdigest()[:16]}.json")


def fold_judging(models: dict[int, dict]):
    """lab -> the fold (of fold_models' models) whose networks never saw that
    labelled photo (a degraded variant goes with its original): the fold
    train_relevance put it in, with any duplicates of it."""
    from beam_jobs.train_relevance import fold_of
    fold = {f: k for k, m in models.items() for f in m["training"].get("judges", ())}
    folds = next(iter(models.values()))["training"]["folds"] if models else 1

    def judging(lab: dict) -> int:
        name = lab.get("derived_from") or lab["file"]
        # models cached before "judges" was kept: the fold of the file's own group
        return fold[name] if fold else fold_of(name, folds)
    return judging


def cross_validated_rows(labels: list[dict], images: str, folds: int, tmp: str,
                         policy_path: str | None = None, extra_training: list[str] = (),
                         cache: str | None = None, noise_copies: bool = False) -> tuple[dict[str, dict], dict]:
    """curate's rows with every photo judged by a relevance model that never
    saw it (fold_models), and the cross-validated model figures. This is what
    the figures would be on photos nobody trained on."""
    from beam_jobs.evaluate_curate import load_features
    from schemas.policy import DEFAULT_POLICY_PATH

    models, summary = fold_models(labels, images, folds, tmp, extra_training, cache, noise_copies)
    policy_doc = json.loads(Path(policy_path or DEFAULT_POLICY_PATH).read_text())
    out_rows: dict[str, dict] = {}
    fold_of = fold_judging(models)
    for k, model in models.items():
        members = {lab["file"] for lab in labels if fold_of(lab) == k}
        if not members:
            continue
        model_path = os.path.join(tmp, f"model-{k}.json")
        Path(model_path).write_text(json.dumps(model))
        policy = dict(policy_doc, no_skin=dict(policy_doc["no_skin"], model=model_path))
        fold_policy = os.path.join(tmp, f"policy-{k}.json")
        Path(fold_policy).write_text(json.dumps(policy))
        manifest = os.path.join(tmp, f"manifest-{k}.csv")
        with open(manifest, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["uri"])
            w.writerows([[os.path.join(images, m)] for m in sorted(members)])
        out = os.path.join(tmp, f"curated-{k}")
        from beam_jobs.curate import run
        run(["--manifest", manifest, "--allowed_roots", images, "--output", out, "--policy", fold_policy,
             "--runner", "DirectRunner"])
        out_rows.update(load_features(out))
    return out_rows, summary


def degrade_into(source: Path, out: Path) -> Path:
    """Run source/degrade.py on source's photos into out; returns out."""
    script = source / "degrade.py"
    if not script.exists():
        raise SystemExit(f"real_photos: error: {script} not found")
    subprocess.run([sys.executable, str(script), "--labels", str(source / "labels.csv"),
                    "--images", str(source / "images"), "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.real_photos", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--degrade", metavar="DIR", help="a real_photos folder (labels.csv, images/, degrade.py): degrade it first, then measure")
    src.add_argument("--folder", metavar="DIR", help="a degrade.py output folder (labels.csv, images/)")
    src.add_argument("--labels", help="labels CSV (with --images)")
    ap.add_argument("--images", help="folder the labels' `file` names are in")
    ap.add_argument("--policy", help="quality policy JSON to evaluate (default: the packaged one)")
    ap.add_argument("--cross_validate", type=int, metavar="K", default=0,
                    help="judge each photo by a relevance model trained without it (K folds, as "
                         "train_relevance splits them): the out-of-sample figures. 0: the packaged model")
    ap.add_argument("--extra_training", action="append", default=[], metavar="CSV",
                    help="with --cross_validate: more uri,label[,group] photos every fold also trains on "
                         "(the generated ones the packaged model saw); never judged")
    ap.add_argument("--fold_cache", metavar="DIR",
                    help="with --cross_validate: keep the fold models here and reuse them when nothing they "
                         "depend on changed (dim_frames takes the same option)")
    ap.add_argument("--noise_copies", action="store_true",
                    help="with --cross_validate: train the folds as train_relevance --noise_copies does")
    ap.add_argument("--keep", metavar="DIR", help="write curate's output here and keep it")
    ap.add_argument("--list", action="store_true", help="also list the usable photos wrongly rejected")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--training_csv", metavar="PATH",
                    help="instead of measuring, write the photos as a uri,label,group CSV for "
                         "beam_jobs.train_relevance (keep it outside the project)")
    a = ap.parse_args(argv)
    if a.labels and not a.images:
        ap.error("--labels needs --images")
    # curate runs in this process (once per fold): the job's own entry point
    # would drop Beam's benign per-run warnings, so do as it does.
    from beam_jobs.cli import quiet_logging
    quiet_logging()
    with tempfile.TemporaryDirectory(prefix="real_photos_") as tmp:
        if a.degrade:
            folder = degrade_into(Path(a.degrade), Path(tmp) / "degraded")
            labels_path, images = folder / "labels.csv", folder / "images"
        elif a.folder:
            labels_path, images = Path(a.folder) / "labels.csv", Path(a.folder) / "images"
        else:
            labels_path, images = Path(a.labels), Path(a.images)
        labels = read_labels(str(labels_path))
        images = str(images.resolve())
        if a.training_csv:
            n = write_training_csv(labels, images, a.training_csv)
            print(f"wrote {n} photos to {a.training_csv}")
            return 0
        t0 = time.perf_counter()
        if a.cross_validate:
            rows, model_cv = cross_validated_rows(labels, images, a.cross_validate, tmp, a.policy,
                                                  a.extra_training, a.fold_cache, a.noise_copies)
        else:
            out = a.keep or os.path.join(tmp, "curated")
            run_curate(images, out, a.policy)
            from beam_jobs.evaluate_curate import load_features
            rows, model_cv = load_features(out), None
        seconds = time.perf_counter() - t0
        doc = figures(labels, rows, images)
    doc["relevance_model"] = ("cross-validated: each photo judged by networks trained without it "
                              f"({a.cross_validate} folds)" if a.cross_validate else
                              "the packaged model (if it was trained on these photos, these figures are in-sample)")
    if model_cv:
        doc["relevance_cross_validated"] = model_cv
    doc["curate_seconds"] = seconds
    doc["images"] = len(labels)
    print(report(doc))
    if a.list:
        print("\nusable photos wrongly rejected:")
        for f, g, r in doc["wrongly_rejected_files"]:
            print(f"  {f:<50} {g:<7} {r}")
    print(f"\nrelevance model: {doc['relevance_model']}")
    for kind, m in (model_cv or {}).items():
        print(f"  {kind} network alone, out of sample: AUC {m['auc']:.3f}, accuracy {m['accuracy']:.3f}, "
              f"skin rejected {100 * m['skin_rejected']:.1f}%, not-skin rejected {100 * m['not_skin_rejected']:.1f}%")
    print(f"{len(labels)} labelled images in {seconds:.1f} s")
    write_json(a.json, {"benchmark": "real_photos", **doc,
                        "targets": {k: {"measured": v[0], "op": v[1], "needed": v[2], "met": v[3]}
                                    for k, v in check_targets(doc).items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
