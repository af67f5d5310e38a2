"""Turn one planned image into file bytes plus its displayed geometry.

``render_image`` depends only on (seed, plan entry, frame size, attempt) and,
for duplicates, on the original's result: its randomness comes from a
generator derived from (seed, image index, attempt), so images can be
rendered in any order or in parallel and still come out byte-identical.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from beam_jobs.sample_data import defects
from beam_jobs.sample_data.camera import develop, work_size
from beam_jobs.sample_data.exif import random_camera_tags
from beam_jobs.sample_data.jpeg import ORIENTATIONS, encode_heic, encode_jpeg
from beam_jobs.sample_data.plan import ImagePlan
from beam_jobs.sample_data.scenes import render_scene
from beam_jobs.sample_data.skin import monk_bgr, render_skin
from transforms.image.colour import display_p3_profile
from transforms.image.decode import decode
from transforms.image.phash import hamming, phash64

_ORIENTATION_P = (0.7, 0.07, 0.15, 0.08)
_PORTRAIT_P = 0.25
_PROGRESSIVE_P = 0.1
# Feature-size multiplier per shot type: close-ups show bigger structures.
_DETAIL = {"CLOSE_UP": (1.0, 1.3), "AT_AN_ANGLE": (0.85, 1.1), "AT_DISTANCE": (0.7, 0.9)}
# Sensor noise (levels) per defect: dim frames are noisier (high ISO),
# crushed, blurred and flat frames quieter.
_NOISE = {
    "dim_textured": (1.5, 2.5),
    "too_dark": (0.8, 1.4),
    "blurry": (0.6, 1.1),
    "low_information": (0.4, 1.1),
}
_DEFAULT_NOISE = (1.0, 2.2)
_NEAR_DUP_VARIANTS = ("crop", "resize", "reencode")  # strongest edit first
# Full-frame pHash distance of a near-duplicate copy: at most the policy radius
# (4), so curate must catch every copy even by its full-frame hash alone (it
# also compares the centre-crop hashes, which only adds matches), and the
# tests' full-frame bound of 6 still holds.
_NEAR_DUP_MAX_BITS = 4


@dataclass(frozen=True)
class RenderedImage:
    """File bytes and the geometry a viewer shows (None when not an image)."""

    data: bytes
    width: int | None = None
    height: int | None = None
    orientation: int | None = None


def image_rng(seed: int, index: int, attempt: int = 0) -> np.random.Generator:
    """The independent random generator of image ``index`` in run ``seed``
    (``attempt`` > 0: an alternative draw for the same image)."""
    key = (1, index) if attempt == 0 else (1, index, attempt)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def render_image(
    item: ImagePlan,
    seed: int,
    size: tuple[int, int],
    original: RenderedImage | None = None,
    attempt: int = 0,
) -> RenderedImage:
    """Render planned image ``item`` at landscape frame ``size`` (width, height);
    duplicates need the ``original`` they copy. ``attempt`` selects an
    alternative random draw of the same image."""
    rng = image_rng(seed, item.index, attempt)
    if item.defect == "empty":
        return RenderedImage(b"")
    if item.defect == "not_an_image":
        return RenderedImage(defects.not_an_image(rng))
    if item.defect == "exact_duplicate":
        return original
    if item.defect == "near_duplicate":
        return _near_duplicate(original, rng)

    width, height = size if rng.random() >= _PORTRAIT_P else size[::-1]
    upright = develop(_render_work(item, rng, width, height), width, height, rng,
                      rng.uniform(*_NOISE.get(item.defect, _DEFAULT_NOISE)))
    orientation = int(rng.choice(ORIENTATIONS, p=_ORIENTATION_P))
    quality = int(rng.integers(85, 96))
    progressive, tags = rng.random() < _PROGRESSIVE_P, random_camera_tags(rng)
    if item.container == "jpeg":
        data = encode_jpeg(upright, orientation, quality, progressive, tags)
    elif item.container == "p3_jpeg":
        data = encode_jpeg(to_display_p3(upright), orientation, quality, progressive, tags, display_p3_profile())
    else:
        data = encode_heic(to_display_p3(upright), orientation, quality, tags, display_p3_profile())
    if item.defect == "corrupt":
        data = defects.truncate(data, rng)
    return RenderedImage(data, width, height, orientation)


def to_display_p3(bgr: np.ndarray) -> np.ndarray:
    """sRGB pixels as Display P3 code values (what a P3 phone stores for the same colours)."""
    from PIL import Image, ImageCms

    transform = _p3_transform()
    rgb = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))
    return np.ascontiguousarray(np.asarray(ImageCms.applyTransform(rgb, transform))[..., ::-1])


@functools.cache
def _p3_transform():
    import io

    from PIL import ImageCms
    return ImageCms.buildTransform(ImageCms.createProfile("sRGB"),
                                   ImageCms.ImageCmsProfile(io.BytesIO(display_p3_profile())), "RGB", "RGB")


def decode_upright(data: bytes) -> np.ndarray:
    """Full-size upright sRGB pixels of a generated file, any container."""
    return decode(data, analysis_short_side=1 << 20).image


def _render_work(item: ImagePlan, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """The float32 render at working resolution, defect applied."""
    ww, wh = work_size(width, height)
    if item.defect == "not_skin":
        return render_scene(rng, ww, wh)
    if item.defect == "low_information":
        colour = monk_bgr(item.tone) if item.tone else rng.uniform(20, 235, 3)
        return defects.flat_field(rng, ww, wh, colour)
    skin = render_skin(rng, ww, wh, item.tone, rng.uniform(*_DETAIL[item.shot_type]),
                       item.condition)
    edit = {
        "dim_textured": defects.underexpose,
        "too_dark": defects.crush_dark,
        "too_bright": defects.overexpose,
        "blurry": defects.blur,
    }.get(item.defect)
    return edit(skin, rng) if edit else skin


def _near_duplicate(original: RenderedImage, rng: np.random.Generator) -> RenderedImage:
    """Re-encode, resize or crop the original; smaller file, fewer or equal
    pixels, orientation normalised to 1. Falls back to a milder edit if the
    perceptual hash moved too far."""
    upright = decode_upright(original.data)
    reference = phash64(upright)
    tags = random_camera_tags(rng)
    first = int(rng.integers(len(_NEAR_DUP_VARIANTS)))
    for variant in _NEAR_DUP_VARIANTS[first:]:
        edited = defects.near_duplicate_edit(upright, variant, rng)
        quality = int(rng.integers(60, 76)) if variant == "reencode" else int(rng.integers(70, 84))
        data = encode_jpeg(edited, 1, quality, False, tags)
        while len(data) >= len(original.data) and quality > 30:
            quality -= 5
            data = encode_jpeg(edited, 1, quality, False, tags)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if hamming(phash64(decoded), reference) <= _NEAR_DUP_MAX_BITS:
            break
    return RenderedImage(data, edited.shape[1], edited.shape[0], 1)
