"""Tests of the sample data generator (beam_jobs.sample_data).

One module-scoped dataset (150 cases, ~310 images at 640x480) is generated
into a temp dir; most tests measure it. The invariants checked per defect
class are the ones the curate job's ground truth relies on.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import io
import subprocess
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from beam_jobs.sample_data import generate
from beam_jobs.sample_data.catalog import COMMON_CONDITIONS, DEFECTS, RARE_CONDITION
from beam_jobs.sample_data.exif import random_camera_tags
from beam_jobs.sample_data.jpeg import ORIENTATIONS, encode_jpeg
from beam_jobs.sample_data.lesions import PATTERN_OF_CONDITION, draw_lesions
from beam_jobs.sample_data.plan import ImagePlan
from beam_jobs.sample_data.render import decode_upright, render_image
from beam_jobs.sample_data.skin import monk_bgr, render_skin
from transforms.image.colour import display_p3_profile
from transforms.image.header import read_header
from transforms.image.phash import hamming, phash64

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
SEED = 7
UNDECODABLE = {"corrupt", "empty", "not_an_image"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    generate(out, cases=150, seed=SEED)
    return out


@pytest.fixture(scope="module")
def truth(dataset) -> pd.DataFrame:
    return pd.read_csv(dataset / "ground_truth.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def decoded(dataset, truth) -> dict[str, np.ndarray]:
    """Every decodable image, decoded once, upright sRGB (HEIC and P3 JPEG included)."""
    out = {}
    for row in truth.itertuples():
        if row.defect not in UNDECODABLE:
            out[row.image_path] = decode_upright((dataset / row.image_path).read_bytes())
    return out


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian at a 256 px short side."""
    gray = _gray(image)
    h, w = gray.shape
    scale = 256 / min(h, w)
    small = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(small, cv2.CV_64F).var())


def _rows(truth: pd.DataFrame, defect: str) -> pd.DataFrame:
    return truth[truth.defect == defect]


# --- composition -------------------------------------------------------------

@pytest.mark.e2e
def test_every_defect_class_present_with_expected_verdicts(truth):
    counts = Counter(truth.defect)
    assert set(counts) == set(DEFECTS)
    n = len(truth)
    assert 0.5 <= counts["none"] / n <= 0.65
    for defect in DEFECTS:
        assert counts[defect] >= 2 and counts[defect] / n >= 0.025, defect
    accepted = truth.defect.isin(["none", "dim_textured"])
    assert (truth.expected_status[accepted] == "accepted").all()
    assert (truth.expected_reasons[accepted] == "").all()
    assert (truth.expected_status[~accepted] == "rejected").all()
    assert (truth.expected_reasons[~accepted] != "").all()
    reasons = dict(zip(truth.defect, truth.expected_reasons))
    assert reasons["not_skin"] == "no_skin" and reasons["corrupt"] == "unreadable"
    assert reasons["not_an_image"] == "unsupported_format"


@pytest.mark.e2e
def test_small_run_still_covers_every_defect_twice(tmp_path):
    generate(tmp_path, cases=50, seed=3)
    counts = Counter(pd.read_csv(tmp_path / "ground_truth.csv", dtype=str).defect)
    assert set(counts) == set(DEFECTS)
    assert min(counts.values()) >= 2


@pytest.mark.e2e
@pytest.mark.parametrize("subset", ["all", "none"])
def test_all_ten_tones_in_equal_measure(truth, subset):
    rows = truth[truth.monk_tone != ""]
    if subset == "none":
        rows = rows[rows.defect == "none"]
    counts = Counter(rows.monk_tone.astype(int))
    assert set(counts) == set(range(1, 11))
    assert max(counts.values()) - min(counts.values()) <= 1, counts


@pytest.mark.e2e
def test_tone_is_empty_exactly_for_images_without_skin(truth):
    no_pixels = truth.defect.isin(["not_skin", "empty", "not_an_image"])
    assert (truth.monk_tone[no_pixels] == "").all()
    skin = ~no_pixels & (truth.defect != "low_information")
    assert (truth.monk_tone[skin] != "").all()


@pytest.mark.e2e
def test_dim_images_include_dark_tones(truth):
    assert {"8", "9", "10"} <= set(_rows(truth, "dim_textured").monk_tone)


# --- CSVs --------------------------------------------------------------------

@pytest.mark.e2e
def test_csvs_read_back_with_csv_and_pandas(dataset, truth):
    for name in ("dataset/scin_cases.csv", "dataset/scin_labels.csv", "ground_truth.csv"):
        with open(dataset / name, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        frame = pd.read_csv(dataset / name, dtype={"case_id": str})
        assert len(rows) == len(frame) > 0
        assert [r["case_id"] for r in rows] == frame.case_id.tolist()
        assert all(r["case_id"].lstrip("-").isdigit() for r in rows)
    cases = pd.read_csv(dataset / "dataset/scin_cases.csv", dtype={"case_id": str})
    for column in ("image_1_path", "image_2_shot_type", "age_group", "sex_at_birth", "fitzpatrick_skin_type",
                   "body_parts_arm", "condition_symptoms_itching", "textures_flat", "related_category",
                   "combined_race"):
        assert column in cases.columns
    assert set(cases.image_1_shot_type) <= {"CLOSE_UP", "AT_AN_ANGLE", "AT_DISTANCE"}
    assert set(cases.fitzpatrick_skin_type.dropna()) <= {f"FST{k}" for k in range(1, 7)} | {"NONE_SELECTED"}
    assert set(cases.body_parts_leg.dropna()) <= {"YES"}
    assert cases.age_group.str.startswith("AGE_").all()


@pytest.mark.e2e
def test_labels_parse_and_match_ground_truth(dataset, truth):
    labels = pd.read_csv(dataset / "dataset/scin_labels.csv", dtype=str, keep_default_na=False)
    condition_of_case = dict(zip(truth.case_id, truth.condition))
    # A case is one person: its own skin images (duplicates may come from
    # other cases) all show the case's tone.
    own = truth[(truth.monk_tone != "") & (truth.duplicate_of == "")]
    tones_of_case = own.groupby("case_id").monk_tone.agg(lambda s: set(s.astype(int)))
    assert (tones_of_case.map(len) == 1).all()
    primaries = Counter()
    for row in labels.itertuples():
        names = ast.literal_eval(row.dermatologist_skin_condition_on_label_name)
        confidences = ast.literal_eval(row.dermatologist_skin_condition_confidence)
        weighted = ast.literal_eval(row.weighted_skin_condition_label)
        assert isinstance(names, list) and isinstance(weighted, dict)
        assert len(names) == len(confidences)
        assert all(1 <= c <= 5 for c in confidences)
        if names:
            assert abs(sum(weighted.values()) - 1) <= 0.03
            top = max(weighted, key=weighted.get)
            assert top == condition_of_case[row.case_id]
            primaries[top] += 1
        else:
            assert weighted == {} and condition_of_case[row.case_id] == ""
        if row.monk_skin_tone_label_us:
            (true_tone,) = tones_of_case[row.case_id]
            for label in (row.monk_skin_tone_label_us, row.monk_skin_tone_label_india):
                assert abs(int(label) - true_tone) <= 1
    unlabeled = 1 - sum(primaries.values()) / len(labels)
    assert 0.28 <= unlabeled <= 0.47
    assert 1 <= primaries[RARE_CONDITION] <= 2
    common = [n for n in primaries if n != RARE_CONDITION]
    assert len(common) >= 6
    assert max(primaries.values()) >= 3 * min(primaries[n] for n in common)  # skewed


@pytest.mark.e2e
def test_paths_consistent_between_csvs_and_disk(dataset, truth):
    cases = pd.read_csv(dataset / "dataset/scin_cases.csv", dtype=str)
    in_cases = {}
    for row in cases.itertuples():
        for k in (1, 2, 3):
            path = getattr(row, f"image_{k}_path")
            if isinstance(path, str):
                assert path.startswith("dataset/images/") and path.endswith((".jpg", ".heic"))
                in_cases[path] = row.case_id
    assert truth.image_path.is_unique
    assert set(in_cases) == set(truth.image_path)
    assert all(in_cases[p] == c for p, c in zip(truth.image_path, truth.case_id))
    on_disk = {f"dataset/images/{p.name}" for p in (dataset / "dataset/images").iterdir()}
    assert on_disk == set(truth.image_path)


# --- JPEG and EXIF -----------------------------------------------------------

@pytest.mark.e2e
def test_exif_orientation_and_gps_parse_and_cv2_shows_displayed_size(dataset, truth, decoded):
    rows = truth[~truth.defect.isin(UNDECODABLE)]
    assert {int(o) for o in rows.orientation} == set(ORIENTATIONS)
    for row in rows.itertuples():
        if row.image_path.endswith(".heic"):  # orientation is HEIF irot; checked below
            continue
        with Image.open(dataset / row.image_path) as im:
            exif = im.getexif()
            assert exif[0x0112] == int(row.orientation)
            assert exif[0x010F] and exif[0x0110] and exif[0x0132]
            gps = exif.get_ifd(0x8825)
            assert gps[1] in ("N", "S") and gps[3] in ("E", "W")
            assert 0 <= float(gps[2][0]) <= 90 and 0 <= float(gps[4][0]) <= 180
            stored = im.size
        expected = (int(row.width), int(row.height))
        turned = int(row.orientation) in (6, 8)
        assert stored == (expected[::-1] if turned else expected)
        assert decoded[row.image_path].shape[1::-1] == expected


@pytest.mark.e2e
def test_some_uploads_are_p3_jpeg_or_heic_like_phone_uploads(dataset, truth, decoded):
    """iPhones store Display P3 JPEG or HEIC; curate must see the same geometry and sRGB colours."""
    kinds = Counter()
    for row in truth[~truth.defect.isin(UNDECODABLE)].itertuples():
        h = read_header((dataset / row.image_path).read_bytes())
        kind = h.format + ("+p3" if h.icc_profile == display_p3_profile() else "")
        kinds[kind] += 1
        assert kind in ("jpeg", "jpeg+p3", "heic+p3"), (row.image_path, kind)
        assert row.image_path.endswith(".heic") == (h.format == "heic")
        assert (h.display_width, h.display_height, h.orientation) == \
            (int(row.width), int(row.height), int(row.orientation))
    assert kinds["jpeg+p3"] >= 5 and kinds["heic+p3"] >= 5, kinds


def test_orientation_roundtrip_matches_pillow_and_upright_pixels():
    rng = np.random.default_rng(0)
    upright = np.zeros((90, 160, 3), np.uint8)
    upright[:30, :40] = (0, 0, 255)  # red block marks the top-left corner
    upright[60:, 100:] = (255, 0, 0)
    for orientation in ORIENTATIONS:
        data = encode_jpeg(upright, orientation, 95, orientation == 3, random_camera_tags(rng))
        via_cv2 = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        via_pil = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))[..., ::-1]
        assert via_cv2.shape == upright.shape
        assert np.abs(via_cv2.astype(int) - upright).mean() < 3
        assert np.abs(via_pil.astype(int) - upright).mean() < 3


@pytest.mark.e2e
def test_some_progressive_and_some_portrait(dataset, truth):
    rows = truth[~truth.defect.isin(UNDECODABLE)]
    assert (rows.height.astype(int) > rows.width.astype(int)).any()
    progressive = [b"\xff\xc2" in (dataset / p).read_bytes() for p in rows.image_path]
    assert 0 < sum(progressive) < len(progressive) / 2


# --- measured invariants per defect class ------------------------------------

@pytest.mark.e2e
def test_exposure_invariants(truth, decoded):
    for defect, check in {
        "dim_textured": lambda g: 25 <= np.median(g) <= 50 and (g <= 10).mean() < 0.05,
        "too_dark": lambda g: (g <= 10).mean() >= 0.6 and np.percentile(g, 99) <= 40,
        "too_bright": lambda g: (g >= 250).mean() >= 0.5,
        "none": lambda g: (g <= 10).mean() < 0.05 and (g >= 250).mean() < 0.05,
    }.items():
        for path in _rows(truth, defect).image_path:
            assert check(_gray(decoded[path])), (defect, path)


@pytest.mark.e2e
def test_dark_tone_good_images_are_not_clipped_like_too_dark(truth, decoded):
    rows = truth[truth.defect.isin(["none", "dim_textured"]) & (truth.monk_tone == "10")]
    assert set(rows.defect) == {"none", "dim_textured"}
    for path in rows.image_path:
        gray = _gray(decoded[path])
        assert (gray <= 10).mean() < 0.05
        assert np.median(gray) >= 25


@pytest.mark.e2e
def test_blurry_images_lack_the_texture_good_images_have(truth, decoded):
    good = [_sharpness(decoded[p]) for p in _rows(truth, "none").image_path]
    blurry = [_sharpness(decoded[p]) for p in _rows(truth, "blurry").image_path]
    assert max(blurry) * 2 < min(good)


@pytest.mark.e2e
def test_low_information_images_are_flat(truth, decoded):
    for path in _rows(truth, "low_information").image_path:
        gray = _gray(decoded[path]).astype(float)
        assert gray.std() <= 2.0
        assert np.percentile(gray, 99.5) - np.percentile(gray, 0.5) <= 10


@pytest.mark.e2e
def test_not_skin_images_are_sharp_exposed_and_free_of_skin_hues(truth, decoded):
    for path in _rows(truth, "not_skin").image_path:
        image = decoded[path]
        gray = _gray(image)
        assert 50 <= np.median(gray) <= 200
        assert _sharpness(image) > 30
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        chroma = image.max(axis=2).astype(int) - image.min(axis=2)
        warm = (hsv[..., 0] <= 30) & (chroma > 20)  # OpenCV hue 0-30 = 0-60 degrees
        assert warm.mean() < 0.01
        ycrcb = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
        skin = (ycrcb[..., 1] >= 133) & (ycrcb[..., 1] <= 173) & (ycrcb[..., 2] >= 77) & (ycrcb[..., 2] <= 127)
        assert skin.mean() < 0.02


@pytest.mark.e2e
def test_unreadable_and_non_image_files(dataset, truth):
    for path in _rows(truth, "empty").image_path:
        assert (dataset / path).stat().st_size == 0
    for path in _rows(truth, "not_an_image").image_path:
        data = (dataset / path).read_bytes()
        assert data and not data.startswith(b"\xff\xd8")
        data.decode("utf-8")
    for path in _rows(truth, "corrupt").image_path:
        data = (dataset / path).read_bytes()
        assert data.startswith(b"\xff\xd8") and not data.rstrip(b"\0").endswith(b"\xff\xd9")
        with pytest.raises(OSError):
            Image.open(io.BytesIO(data)).load()


# --- duplicates and perceptual hashes ----------------------------------------

@pytest.mark.e2e
def test_duplicates_point_at_earlier_sorting_none_originals(dataset, truth):
    by_path = truth.set_index("image_path")
    for kind in ("exact_duplicate", "near_duplicate"):
        rows = _rows(truth, kind)
        same_case = 0
        for row in rows.itertuples():
            original = by_path.loc[row.duplicate_of]
            assert original.defect == "none"
            assert row.duplicate_of < row.image_path
            same_case += original.case_id == row.case_id
        assert 0 < same_case < len(rows), kind
    assert (truth.duplicate_of[~truth.defect.str.endswith("duplicate")] == "").all()


@pytest.mark.e2e
def test_exact_duplicates_are_byte_identical(dataset, truth):
    for row in _rows(truth, "exact_duplicate").itertuples():
        assert (dataset / row.image_path).read_bytes() == (dataset / row.duplicate_of).read_bytes()


@pytest.mark.e2e
def test_near_duplicates_are_smaller_and_perceptually_close(dataset, truth, decoded):
    for row in _rows(truth, "near_duplicate").itertuples():
        copy, original = decoded[row.image_path], decoded[row.duplicate_of]
        assert copy.shape[0] * copy.shape[1] <= original.shape[0] * original.shape[1]
        assert (dataset / row.image_path).stat().st_size < (dataset / row.duplicate_of).stat().st_size
        assert (dataset / row.image_path).read_bytes() != (dataset / row.duplicate_of).read_bytes()
        assert hamming(phash64(copy), phash64(original)) <= 6


@pytest.mark.e2e
def test_distinct_good_images_differ_in_phash(truth, decoded):
    paths = sorted(truth.image_path[truth.defect.isin(["none", "dim_textured"])])
    hashes = np.array([phash64(decoded[p]) for p in paths], dtype=np.uint64)
    for i in range(len(hashes) - 1):
        distances = np.bitwise_count(hashes[i + 1:] ^ hashes[i])
        assert distances.min() > 16, paths[i]


# --- determinism, size limits, CLI ------------------------------------------

def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.e2e
def test_same_seed_same_bytes_different_seed_different_output(tmp_path):
    summaries = [generate(tmp_path / name, cases=12, seed=s) for name, s in (("a", 5), ("b", 5), ("c", 6))]
    a, b, c = (_digests(tmp_path / name) for name in "abc")
    assert a == b and len(a) > 10
    counts = [{k: v for k, v in s.items() if not k.endswith(("dir", "csv"))} for s in summaries]
    assert counts[0] == counts[1]
    assert set(a) != set(c)
    assert a["ground_truth.csv"] != c["ground_truth.csv"]


def test_renders_a_12_megapixel_frame():
    item = ImagePlan(0, 0, "1", "none", 6, "CLOSE_UP")
    result = render_image(item, 1, (4032, 3024))
    image = cv2.imdecode(np.frombuffer(result.data, np.uint8), cv2.IMREAD_REDUCED_COLOR_8)
    assert {result.width, result.height} == {4032, 3024}
    assert set(image.shape[:2]) == {378, 504}
    assert _sharpness(image) > 15


@pytest.mark.e2e
@pytest.mark.parametrize("args", [
    ["--cases", "-1"],
    ["--cases", "ten"],
    ["--size", "640by480"],
    ["--size", "5000x4000"],
    ["--size", "32x32"],
    ["--seed", "-4"],
])
def test_cli_rejects_bad_arguments_in_one_line(tmp_path, args):
    options = {"--out": str(tmp_path / "o"), "--cases": "2", "--seed": "1"}
    options.update(zip(args[::2], args[1::2]))
    argv = [token for pair in options.items() for token in pair]
    proc = subprocess.run([str(PYTHON), "-m", "beam_jobs.sample_data", *argv],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.e2e
def test_cli_generates_and_prints_one_summary_line(tmp_path):
    proc = subprocess.run([str(PYTHON), "-m", "beam_jobs.sample_data", "--out", str(tmp_path),
                           "--cases", "4", "--seed", "2", "--size", "320x240"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path) in lines[0]
    truth = pd.read_csv(tmp_path / "ground_truth.csv", dtype=str, keep_default_na=False)
    sizes = {(int(w), int(h)) for w, h in zip(truth.width, truth.height) if w}
    assert sizes <= {(320, 240), (240, 320)}


def test_generate_rejects_bad_arguments(tmp_path):
    for kwargs in ({"cases": -1, "seed": 0}, {"cases": 1, "seed": -1},
                   {"cases": 1, "seed": 0, "size": (4033, 3024)}):
        with pytest.raises(ValueError):
            generate(tmp_path, **kwargs)


# --- condition-specific lesions ------------------------------------------------

def test_every_condition_has_its_own_lesion_pattern():
    conditions = [name for name, _ in COMMON_CONDITIONS] + [RARE_CONDITION]
    patterns = [PATTERN_OF_CONDITION.get(c) for c in conditions]
    assert None not in patterns and "generic" not in patterns
    assert len(set(patterns)) == len(conditions)


def test_lesions_change_only_the_lesions_not_the_rest_of_the_photo():
    a, b = (render_skin(np.random.default_rng(3), 320, 240, 6, 1.0, c) for c in ("Tinea", "Urticaria"))
    again = render_skin(np.random.default_rng(3), 320, 240, 6, 1.0, "Tinea")
    assert np.array_equal(a, again)
    changed = np.abs(a - b).max(axis=2) > 1
    # Same sheen, hair, background and lighting: only the lesion areas differ.
    assert 0.005 < changed.mean() < 0.5


@pytest.mark.parametrize("tone", [1, 5, 10])
@pytest.mark.parametrize("condition", sorted(PATTERN_OF_CONDITION))
def test_each_pattern_shows_at_64_px_on_light_and_dark_skin(condition, tone):
    # On a flat swatch of the tone, the pattern must still move some pixels of a
    # 64 px thumbnail by >= 12% of the skin's level (or 8 levels) in a channel.
    h, w = 240, 320
    skin = monk_bgr(tone)
    planes = [np.full((h, w), c, np.float32) for c in skin]
    draw_lesions(np.random.default_rng(11), planes, float(h), condition)
    small = cv2.resize(cv2.merge(planes), (85, 64), interpolation=cv2.INTER_AREA)
    contrast = np.abs(small - skin).max(axis=2)
    assert (contrast >= max(0.12 * float(skin.max()), 8)).mean() > 0.003


def test_a_rerun_into_a_sample_set_replaces_it_and_other_folders_are_refused(tmp_path):
    """Generating into an earlier set's folder left its images beside the new
    ones, outside the new ground truth (curate over the folder then read
    photos nobody's truth described); a folder holding other files is refused."""
    out = tmp_path / "set"

    def cli(*args):
        return subprocess.run([str(PYTHON), "-m", "beam_jobs.sample_data", "--out", str(out), "--size", "320x240",
                               *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert cli("--cases", "6", "--seed", "1").returncode == 0
    assert cli("--cases", "2", "--seed", "2").returncode == 0
    with open(out / "ground_truth.csv", newline="") as f:
        truth = {row["image_path"] for row in csv.DictReader(f)}
    assert {f"dataset/images/{p.name}" for p in (out / "dataset" / "images").iterdir()} == truth
    (out / "notes.txt").write_text("mine")
    refused = cli("--cases", "2", "--seed", "3")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"python -m beam_jobs.sample_data: error: --out {out} holds 'notes.txt', which sample_data did not write; "
        "it replaces what it wrote there, so give a new or empty folder, or an earlier sample_data run's"]
    assert (out / "notes.txt").read_text() == "mine" and len(list((out / "dataset" / "images").iterdir())) == len(truth)
