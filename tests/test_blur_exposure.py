"""Blur and exposure judged as issue 11 asks: at the model's size, in any
direction, and the same for every skin tone. Generated photos stand in for real
ones here (benchmarks.real_photos measures the real ones)."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from schemas.policy import load_policy
from transforms.image.decode import decode
from transforms.image.quality import edge_sharpness, policy_features, to_analysis_size
from transforms.image.colour import exposed
from transforms.image.verdict import quality_reasons

POLICY = load_policy()


def _skin_card(bgr, seed, size=(480, 640)):
    """A close-up of skin of one tone with what real skin photos show and the
    generator's renders mostly lack: moles, a reddish lesion, pores
    (sensor-like noise). No hairs: a streak turns a 1 px line of full contrast
    into a faint band with sharp ends (a box kernel has sharp ends), an edge
    case real photos did not show. The generator's smooth skin has almost no edges, so a
    motion streak has little to smear there (about 70% of 5% streaks read
    as blurry on its renders, against all 21 on the real photos); these
    tests are about the measure, so they give it something to measure."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = np.array(bgr, np.float32)
    shade = cv2.GaussianBlur(rng.normal(0, 1, (h // 16, w // 16)).astype(np.float32), (0, 0), 2)
    img = base[None, None, :] * (1 + 0.08 * cv2.resize(shade, (w, h))[..., None])
    dark = tuple(float(c) for c in base * 0.55)
    red = (float(base[0]) * 0.7, float(base[1]) * 0.7, min(255.0, float(base[2]) * 1.1))
    cv2.circle(img, (int(w * 0.6), int(h * 0.45)), 40, red, -1, cv2.LINE_AA)
    for _ in range(15):
        cv2.circle(img, (int(rng.integers(w)), int(rng.integers(h))), int(rng.integers(3, 9)), dark, -1, cv2.LINE_AA)
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


MONK_BGR = {1: (228, 237, 246), 4: (186, 218, 234), 7: (67, 92, 130), 10: (32, 36, 41)}


@pytest.fixture(scope="module")
def sharp_photos():
    return [(tone, _skin_card(bgr, tone)) for tone, bgr in MONK_BGR.items()]


def _motion(image, length, angle_deg):
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    t = np.deg2rad(angle_deg)
    for s in np.linspace(-c, c, 4 * length):
        k[int(round(c + s * np.sin(t))), int(round(c + s * np.cos(t)))] = 1
    return cv2.filter2D(image, -1, k / k.sum())


def _verdict(image):
    f = policy_features(image, POLICY)
    h, w = image.shape[:2]
    return quality_reasons(dict(f, width=w, height=h), POLICY), f


@pytest.mark.e2e
def test_generated_photos_pass_at_every_tone(sample_dir):
    with open(sample_dir / "ground_truth.csv", newline="") as f:
        truth = [t for t in csv.DictReader(f) if t["defect"] == "none"]
    for t in truth:
        reasons, f = _verdict(decode((sample_dir / t["image_path"]).read_bytes(), analysis_short_side=10_000).image)
        assert "blurry" not in reasons and "too_dark" not in reasons, (t["monk_tone"], f["sharpness"], f["lum_p99"])


def test_sharp_photos_pass_at_every_tone(sharp_photos):
    for tone, image in sharp_photos:
        reasons, f = _verdict(image)
        assert "blurry" not in reasons and "too_dark" not in reasons, (tone, f["sharpness"], f["lum_p99"])


def _sharpness(image):
    return _verdict(image)[1]["sharpness"]


def test_a_motion_streak_softens_every_direction_alike(sharp_photos):
    # The softest of eight directions is measured, so a streak at any angle
    # (not just along the pixel grid) loses the same share of sharpness; a
    # median over four grid directions let a 22-degree streak through.
    for tone, image in sharp_photos:
        sharp = _sharpness(image)
        length = max(3, round(0.05 * min(image.shape[:2])) | 1)
        streaked = np.array([_sharpness(_motion(image, length, a)) for a in (0, 22, 45, 67, 90, 113, 150)])
        assert streaked.max() <= 0.75 * sharp, (tone, sharp, streaked)
        assert streaked.max() - streaked.min() <= 0.25 * streaked.mean(), (tone, streaked)


def test_strong_blur_softens_and_a_trace_of_blur_does_not(sharp_photos):
    for tone, image in sharp_photos:
        s = min(image.shape[:2])
        sharp = _sharpness(image)
        assert _sharpness(cv2.GaussianBlur(image, (0, 0), 0.012 * s)) <= 0.7 * sharp, tone
        assert _sharpness(cv2.GaussianBlur(image, (0, 0), 0.0015 * s)) >= 0.9 * sharp, tone


def test_sharpness_does_not_depend_on_brightness_or_contrast(sharp_photos):
    # Dark skin shows less absolute detail than light skin; the measure is
    # relative to local contrast, so dimming or flattening a photo (within what
    # stays above the contrast floor) leaves it nearly where it was.
    _tone, image = sharp_photos[0]
    g = cv2.cvtColor(to_analysis_size(image, 224), cv2.COLOR_BGR2GRAY).astype(np.float32)
    base = edge_sharpness(g)
    for scale, offset in ((0.5, 0.0), (0.35, 10.0), (1.0, -60.0)):
        changed = np.clip(g * scale + offset, 0, 255)
        assert edge_sharpness(changed) == pytest.approx(base, rel=0.12), (scale, offset)


@pytest.mark.e2e
def test_seven_stops_under_is_too_dark_and_one_stop_is_not_at_every_tone(sample_dir):
    with open(sample_dir / "ground_truth.csv", newline="") as f:
        truth = [t for t in csv.DictReader(f) if t["defect"] == "none"]
    for t in truth:
        image = decode((sample_dir / t["image_path"]).read_bytes(), analysis_short_side=10_000).image
        assert "too_dark" in _verdict(exposed(image, -7.0))[0], t["monk_tone"]
        assert "too_dark" not in _verdict(exposed(image, -1.0))[0], t["monk_tone"]


def test_a_flat_frame_has_no_edges_to_judge():
    assert edge_sharpness(np.full((224, 300), 128, np.float32)) == 0.0


def _sharpness_by_definition(gray):
    """edge_sharpness spelled out in float numpy: per direction, the masked
    ratio |central difference| / local range, its 99th-percentile 1/500 bin."""
    from transforms.image import quality
    g = gray.astype(np.float64)
    local_range = (cv2.dilate(gray, quality._BLUR_ELEMENT).astype(np.float64)
                   - cv2.erode(gray, quality._BLUR_ELEMENT))
    mask = local_range >= quality.BLUR_MIN_CONTRAST
    scores = []
    for k in quality._BLUR_KERNELS:
        ratio = np.abs(cv2.filter2D(g, cv2.CV_64F, k.astype(np.float64)))[mask] / local_range[mask]
        bins = np.sort(np.floor(ratio * 500).astype(int))
        rank = int(np.ceil(quality.BLUR_PERCENTILE / 100 * mask.sum())) - 1
        scores.append((bins[rank] + 0.5) / 500)
    return min(scores)


def test_edge_sharpness_equals_its_definition(sharp_photos):
    # The fast path bins in uint8 and drops masked-out pixels from bin 0; this
    # checks it against the plain float computation, sharp and blurred.
    for _tone, image in sharp_photos:
        gray = cv2.cvtColor(to_analysis_size(image, 224), cv2.COLOR_BGR2GRAY)
        for sigma in (0, 1.5, 3.0):
            g = cv2.GaussianBlur(gray, (0, 0), sigma) if sigma else gray
            assert edge_sharpness(g) == pytest.approx(_sharpness_by_definition(g), abs=0.0021), sigma


@pytest.mark.parametrize("shape", [(7, 9, 3), (6, 8), (1, 5, 3), (5, 1), (2, 2, 3)])
def test_half_size_is_the_mean_of_2x2_blocks(shape):
    from transforms.image.quality import half_size
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    half = half_size(image)
    h, w = shape[:2]
    if h >= 2 and w >= 2:  # odd last row/column dropped, then exact block means
        blocks = image[:h // 2 * 2, :w // 2 * 2].astype(np.float64)
        expected = (blocks[0::2, 0::2] + blocks[1::2, 0::2] + blocks[0::2, 1::2] + blocks[1::2, 1::2]) / 4
        assert np.abs(half.astype(np.float64) - expected).max() <= 0.5
    assert half.shape[:2] == (max(1, h // 2), max(1, w // 2))
