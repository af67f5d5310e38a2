"""The main skin region of a photo and a square model crop around it. Pure.

Photos show backgrounds, clothes and objects around the skin; a centre crop
keeps whatever sits in the middle. The skin mask (transforms.image.skin_tone,
the one curate's skin_fraction counts) is computed on the half-size analysis
frame (112 px short side for the 224 px analysis size), cleaned up (an
opening drops isolated warm pixels, a closing rejoins skin split by hairs or
a lesion border), and its largest 8-connected component is the main skin
region. Its bounding box, in 0-1 coordinates of the oriented image, is a
curate feature (schemas/features.py SKIN_REGION) and where the model crop
goes (skin_square / crop_resize, shared by make_tfrecords and score through
transforms/image/preprocess.py).

The crop is a square around the box: the box's long side plus MARGIN of it on
every side, at least MIN_SIDE_FRACTION of the short side and at most the
centre crop's side (crop_fraction of it), centred on the box and shifted to
stay inside the image. So it is the centre crop moved onto the skin, and
zoomed in when the skin region is smaller. Measured on real photos
(benchmarks/skin_crops.py, README): capped at the whole short side instead,
it kept more of the skin but showed the model no more skin than the centre
crop, since the region fills most clinical photos' frames. A region under
MIN_REGION_FRACTION of the frame is no region: the caller falls back to the
centre crop and says so (crop_used "center").
"""
from __future__ import annotations

import cv2
import numpy as np

from transforms.image import quality, skin_tone  # quality imports this module: use its functions at call time

# The mask's frame: the analysis size curate judges at (schemas/quality_policy.json
# analysis_short_side), halved as compute_features halves it for colour statistics.
BOX_SHORT_SIDE = 224
OPEN_PX = 3     # px at the half-size frame: specks this small are not a region
CLOSE_PX = 7    # px at the half-size frame: gaps this small (hairs, lesion borders) do not split one
MIN_REGION_FRACTION = 0.02  # of the frame: smaller regions are noise, not the subject
MARGIN = 0.15               # of the box's long side, added on each side (lesion borders, context)
MIN_SIDE_FRACTION = 0.5     # of the short side: a smaller crop would be upsampled past the decode

CROPS = ("center", "skin")  # make_tfrecords/score --crop values; crop_used says which was cut

_OPEN = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (OPEN_PX, OPEN_PX))
_CLOSE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (CLOSE_PX, CLOSE_PX))

NO_REGION = {"skin_box_x0": None, "skin_box_y0": None, "skin_box_x1": None, "skin_box_y1": None,
             "skin_region_fraction": None}


def region_from_mask(mask: np.ndarray) -> dict:
    """SKIN_REGION features of a boolean skin mask: the main region's box
    (x0, y0, x1, y1 as fractions of width and height, x1/y1 exclusive) and
    its share of the frame; NO_REGION when there is none."""
    m = mask.astype(np.uint8)
    m = cv2.morphologyEx(cv2.morphologyEx(m, cv2.MORPH_OPEN, _OPEN), cv2.MORPH_CLOSE, _CLOSE)
    n, _labels, stats, _centroids = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n < 2:
        return dict(NO_REGION)
    i = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = (int(v) for v in stats[i])
    H, W = mask.shape
    if area < MIN_REGION_FRACTION * H * W:
        return dict(NO_REGION)
    return {"skin_box_x0": x / W, "skin_box_y0": y / H, "skin_box_x1": (x + w) / W,
            "skin_box_y1": (y + h) / H, "skin_region_fraction": area / (H * W)}


def skin_mask_of(image_bgr: np.ndarray, short_side: int = BOX_SHORT_SIDE) -> np.ndarray:
    """The skin mask as compute_features makes it: analysis size, halved, Lab rule."""
    return skin_tone.skin_mask(skin_tone.lab8(quality.half_size(quality.to_analysis_size(image_bgr, short_side))))


def skin_region(image_bgr: np.ndarray) -> dict:
    """SKIN_REGION features of a decoded BGR image (any size)."""
    return region_from_mask(skin_mask_of(image_bgr))


def box_of(region: dict) -> tuple[float, float, float, float] | None:
    if region.get("skin_box_x0") is None:
        return None
    return (region["skin_box_x0"], region["skin_box_y0"], region["skin_box_x1"], region["skin_box_y1"])


def skin_square(height: int, width: int, box, max_fraction: float = 1.0) -> tuple[int, int, int]:
    """(top, left, side) in pixels of the square crop around a 0-1 box, its
    side at most max_fraction of the short side."""
    x0, y0, x1, y1 = box
    short = min(height, width)
    bw, bh = (x1 - x0) * width, (y1 - y0) * height
    side = max(bw, bh) * (1 + 2 * MARGIN)
    side = int(round(min(max(side, MIN_SIDE_FRACTION * short), max_fraction * short)))
    side = max(1, side)
    cx, cy = (x0 + x1) / 2 * width, (y0 + y1) / 2 * height
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return top, left, side


def center_square(height: int, width: int, crop_fraction: float) -> tuple[int, int, int]:
    """(top, left, side) of the centred square of crop_fraction x the short side."""
    side = max(1, round(crop_fraction * min(height, width)))
    return (height - side) // 2, (width - side) // 2, side


def model_square(image: np.ndarray, crop: str, crop_fraction: float) -> tuple[tuple[int, int, int], str]:
    """The square the model input is cut from, and crop_used: "skin" around
    the main skin region when crop is "skin" and there is one, else the
    centre crop ("center")."""
    h, w = image.shape[:2]
    if crop == "skin":
        box = box_of(skin_region(image))
        if box is not None:
            return skin_square(h, w, box, crop_fraction), "skin"
    return center_square(h, w, crop_fraction), "center"


def crop_resize(image: np.ndarray, image_size: int, crop_fraction: float, crop: str = "center") -> tuple[np.ndarray, str]:
    """(the square resized to image_size, crop_used)."""
    (top, left, side), used = model_square(image, crop, crop_fraction)
    square = image[top:top + side, left:left + side]
    interp = cv2.INTER_AREA if side >= image_size else cv2.INTER_LINEAR
    return cv2.resize(square, (image_size, image_size), interpolation=interp), used


def decode_fraction(crop: str, crop_fraction: float) -> float:
    """The smallest share of the short side a crop can take: the decode keeps
    enough pixels that even it is not upsampled."""
    return min(crop_fraction, MIN_SIDE_FRACTION) if crop == "skin" else crop_fraction
