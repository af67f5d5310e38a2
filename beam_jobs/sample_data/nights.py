"""A week (or any run) of synthetic nights: uploads in dt=YYYY-MM-DD/ folders.

    OUT/uploads/dt=D/<id>.jpg|.heic   night D's uploads (one generate() each, seed + night)
    OUT/scin_cases.csv, OUT/scin_labels.csv   every night's cases, paths relative to OUT
    OUT/ground_truth.csv              generate()'s columns plus `night`

From the second night on, each night also holds `reuploads` photos accepted
on an earlier night, uploaded again as new cases with the same labels
(alternately the same bytes, exact_duplicate, and a JPEG re-encode,
near_duplicate): the users who send a photo again days later. Their truth
row names the original in duplicate_of. Same arguments, same bytes.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import random
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from beam_jobs.sample_data import ground_truth, scin_csv
from beam_jobs.sample_data.generator import generate

PREFIX = "dataset/images/"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _moved(value: str, night: str) -> str:
    return f"uploads/dt={night}/{value[len(PREFIX):]}" if value.startswith(PREFIX) else value


def generate_nights(out_dir, nights: int, cases: int, seed: int = 0, start: str = "2026-11-01",
                    size: tuple[int, int] = (640, 480), reuploads: int = 2) -> dict:
    """Write `nights` nights of `cases` cases each under out_dir; returns a summary."""
    if nights < 1:
        raise ValueError(f"nights must be >= 1, got {nights}")
    out = Path(out_dir)
    first = dt.date.fromisoformat(start)
    cases_rows, labels_rows, truth_rows = [], [], []
    rng = random.Random(seed)
    dates = [(first + dt.timedelta(days=i)).isoformat() for i in range(nights)]
    for i, night in enumerate(dates):
        folder = out / "uploads" / f"dt={night}"
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            generate(tmp, cases, seed + i, size)
            for image in sorted((Path(tmp) / PREFIX).iterdir()):
                shutil.copyfile(image, folder / image.name)
            cases_rows += [{k: _moved(v, night) for k, v in r.items()} for r in _rows(Path(tmp) / "dataset" / "scin_cases.csv")]
            labels_rows += _rows(Path(tmp) / "dataset" / "scin_labels.csv")
            night_truth = [dict({k: _moved(v, night) for k, v in r.items()}, night=night)
                           for r in _rows(Path(tmp) / "ground_truth.csv")]
        earlier = [r for r in truth_rows if r["expected_status"] == "accepted" and r["image_path"].endswith(".jpg")]
        for k, original in enumerate(sorted(rng.sample(earlier, min(reuploads, len(earlier))),
                                            key=lambda r: r["image_path"]) if earlier else []):
            data = (out / original["image_path"]).read_bytes()
            kind = "exact_duplicate" if k % 2 == 0 else "near_duplicate"
            if kind == "near_duplicate":  # the app re-compressed it
                buf = io.BytesIO()
                img = Image.open(io.BytesIO(data))  # keeping its EXIF orientation and colour profile
                img.save(buf, "JPEG", quality=80, exif=img.info.get("exif", b""),
                         icc_profile=img.info.get("icc_profile"))
                data = buf.getvalue()
            name = f"reupload-{night}-{k}.jpg"
            (folder / name).write_bytes(data)
            path = f"uploads/dt={night}/{name}"
            case = next(r for r in cases_rows if r["case_id"] == original["case_id"])
            label = next(r for r in labels_rows if r["case_id"] == original["case_id"])
            new_case = f"{original['case_id']}-again-{night}-{k}"
            cases_rows.append(dict(case, case_id=new_case, image_1_path=path, image_2_path="", image_3_path=""))
            labels_rows.append(dict(label, case_id=new_case))
            night_truth.append(dict(original, image_path=path, case_id=new_case, expected_status="rejected",
                                    expected_reasons=kind, duplicate_of=original["image_path"], night=night))
        truth_rows += night_truth
    scin_csv.write_csv(out / "scin_cases.csv", scin_csv.CASES_COLUMNS, cases_rows)
    scin_csv.write_csv(out / "scin_labels.csv", scin_csv.LABELS_COLUMNS, labels_rows)
    scin_csv.write_csv(out / "ground_truth.csv", [*ground_truth.COLUMNS, "night"], truth_rows)
    return {"out_dir": str(out), "uploads": str(out / "uploads"), "dates": dates,
            "images": len(truth_rows), "reuploads": sum(r["image_path"].rsplit("/", 1)[-1].startswith("reupload-")
                                                        for r in truth_rows)}
