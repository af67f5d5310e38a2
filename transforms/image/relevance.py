"""Does this photo show skin? Local colour-and-texture descriptors and a small model. Pure.

A skin-colour rule alone passes anything warm: a cat, a wooden floor, bread
and cardboard read as "skin" pixel by pixel. What tells them apart is colour
and surface together, in the same place: skin is a narrow band of hue whose
lightness varies smoothly and whose fine texture is isotropic (pores, hairs,
lesions), where fur and wood grain are streaked along one direction at the
same colour, print is high-contrast strokes on neutral white, and food and
scenes mix hues inside a patch.

So the image (at the size a model sees, 224 px short side) is cut into
28 x 28 px cells and each cell is described by the statistics in
CELL_DESCRIPTORS: its mean colour in CIE Lab, the spread of each channel and
how lightness and redness co-vary, the share of skin-coloured pixels,
orientation coherence, gradient and Laplacian energy at two scales,
local-binary-pattern shares, and the principal curvatures of lightness at
three scales and of redness (a*) at the finest (vessels, spots and lesion
borders are red structures; fur and grain are not). Small one-hidden-layer
networks (an average of three) score every cell; the photo's skin probability
is the mean score of its more skin-like half of cells (a skin photo may show
a sheet, clothes or a wall around the skin, but not in most of the frame).

The network is versioned data (schemas/relevance_model.json) trained by
`python -m beam_jobs.train_relevance` from a CSV of labelled photos, so a
platform team can retrain it on its own uploads. Grayscale photos carry no
colour evidence; they are scored by a second network trained on grayscale
copies of the same photos.
"""
from __future__ import annotations

import functools
import hashlib
import json
import pathlib

import cv2
import numpy as np

from transforms.image.quality import to_analysis_size

DEFAULT_MODEL_PATH = pathlib.Path(__file__).resolve().parents[2] / "schemas" / "relevance_model.json"

SHORT_SIDE = 224   # the size a model sees
CELL = 28          # px: 8 cells across the short side
# Share of cells, the most skin-like first, whose mean score is the photo's.
TOP_SHARE = 0.5
PROBABILITY_DECIMALS = 3

CELL_DESCRIPTORS = (
    "L_mean", "a_mean", "b_mean", "chroma_mean", "hue_cos", "hue_sin",
    "L_spread", "a_spread", "b_spread", "L_a_correlation", "coherence",
    "gradient", "laplacian", "laplacian_half", "laplacian_ratio", "a_vs_L_spread",
    "lbp_edges", "lbp_flat", "lbp_two", "lbp_four", "lbp_six", "lbp_eight", "lbp_irregular",
    "curvature_max", "curvature_min", "curvature_half_max", "curvature_half_min",
    "skin_colour_share", "chroma_spread_in_cell",
    "red_curvature_max", "red_curvature_min", "curvature_quarter_max", "curvature_quarter_min",
)

_LBP_SHIFTS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
# Rotation-invariant uniform LBP code of each 8-bit pattern: the number of set
# bits when the circular pattern has at most two 0/1 transitions, else 9.
_LBP_TABLE = np.array([
    bin(p).count("1") if bin(p ^ ((p << 1 | p >> 7) & 0xFF)).count("1") <= 2 else 9
    for p in range(256)], dtype=np.uint8)


def _gaussian_derivatives(sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D Gaussian and its first and second derivatives (separable filters)."""
    r = int(np.ceil(3 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-x * x / (2 * sigma * sigma))
    g /= g.sum()
    return (g.astype(np.float32), (-x / sigma ** 2 * g).astype(np.float32),
            ((x * x / sigma ** 4 - 1 / sigma ** 2) * g).astype(np.float32))


_G0, _G1, _G2 = _gaussian_derivatives(1.0)
# Half the second derivative: filtering with it gives exactly half of what _G2
# gives (halving is exact in floating point), which _curvatures wants.
_HALF_G2 = _G2 * np.float32(0.5)


def _magnitude_of_squares(xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """sqrt(xx + yy) elementwise, written into xx: the magnitude of (x, y) from
    their squares, which the callers have at hand. Not cv2.magnitude: its IPP
    path rounds the last bit differently with where its buffers land in
    memory, so the same photo gave other descriptors in another process or on
    a rerun, and a model retrained on the same photos other weights."""
    xx += yy
    return np.sqrt(xx, out=xx)


def _curvatures(x: np.ndarray, pool) -> tuple[np.ndarray, np.ndarray]:
    """Pooled |strongest| and |weakest| principal curvature (Hessian eigenvalues
    at sigma 1 px). Lines and streaks (hairs, fur, grain, print) bend the image
    strongly one way only; pores and spots both ways; smooth skin neither."""
    xx = cv2.sepFilter2D(x, cv2.CV_32F, _HALF_G2, _G0)   # half of d2/dx2
    yy = cv2.sepFilter2D(x, cv2.CV_32F, _G0, _HALF_G2)   # half of d2/dy2
    xy = cv2.sepFilter2D(x, cv2.CV_32F, _G1, _G1)
    # In place where a buffer is free: these maps are the largest temporaries of the path.
    half_diff = cv2.subtract(xx, yy)
    mean = cv2.add(xx, yy, dst=xx)
    spread = _magnitude_of_squares(np.multiply(half_diff, half_diff, out=half_diff), np.multiply(xy, xy, out=xy))
    abs_mean = np.abs(mean, out=mean)
    strong = cv2.add(abs_mean, spread, dst=yy)   # max(|mean + spread|, |mean - spread|)
    weak = np.abs(cv2.subtract(abs_mean, spread, dst=xy), out=xy)
    return pool(strong), pool(weak)


# LBP code -> share column: flat (0), 2, 4, 6, 8 set bits, irregular (9),
# edge-like (3 or 5), and the rest (1, 7; not used).
_LBP_GROUP = np.array([0, 7, 1, 6, 2, 6, 3, 7, 4, 5], np.uint8)


_PATTERN_GROUP = _LBP_GROUP[_LBP_TABLE]   # 8-bit pattern -> share column, in one lookup


def _lbp_groups(l8: np.ndarray) -> np.ndarray:
    """Share column (see _LBP_GROUP) of every pixel's rotation-invariant uniform
    LBP code, from 8-bit lightness; a neighbour counts as brighter from 2 levels
    up (sensor noise is not texture). The border ring counts as irregular."""
    h, w = l8.shape
    centre = cv2.add(l8[1:-1, 1:-1], 2)
    code = np.zeros(centre.shape, np.uint8)
    for bit, (dy, dx) in enumerate(_LBP_SHIFTS):
        brighter = cv2.compare(l8[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx], centre, cv2.CMP_GE)
        cv2.bitwise_or(code, cv2.bitwise_and(brighter, 1 << bit), dst=code)
    return cv2.copyMakeBorder(cv2.LUT(code, _PATTERN_GROUP), 1, 1, 1, 1, cv2.BORDER_CONSTANT,
                              value=int(_LBP_GROUP[9]))


@functools.lru_cache(maxsize=16)
def _cell_bin_offsets(ny: int, nx: int) -> np.ndarray:
    """Per pixel, 8 x its cell's index: added to a 0-7 column, the bin of (cell, column).
    uint16 while it fits (the usual frame), which keeps the addition in OpenCV."""
    rows = np.repeat(np.arange(ny), CELL)[:, None] * nx
    index = (rows + np.repeat(np.arange(nx), CELL)[None, :]) * 8
    return index.astype(np.uint16 if ny * nx * 8 <= 65536 else np.int64)


def cell_descriptors(image_bgr: np.ndarray) -> np.ndarray:
    """(cells, len(CELL_DESCRIPTORS)) float32 for one BGR uint8 image.

    Images under one cell on a side give zero rows (they are too_small anyway).
    """
    grid = _cell_grid(image_bgr)
    return grid.reshape(-1, grid.shape[-1])


def _cell_grid(image_bgr: np.ndarray) -> np.ndarray:
    """(ny, nx, len(CELL_DESCRIPTORS)) per-cell statistics."""
    img = to_analysis_size(image_bgr, SHORT_SIDE)
    h, w = img.shape[:2]
    ny, nx = h // CELL, w // CELL
    if ny == 0 or nx == 0:
        return np.zeros((0, 0, len(CELL_DESCRIPTORS)), np.float32)
    # Centre the grid: the margins a photo's framing leaves are the least informative.
    y0, x0 = (h - ny * CELL) // 2, (w - nx * CELL) // 2
    img = img[y0:y0 + ny * CELL, x0:x0 + nx * CELL]
    H, W = ny * CELL, nx * CELL

    def pool(x):  # block means over the cells; INTER_AREA at an integer factor is exact
        return cv2.resize(x, (nx, ny), interpolation=cv2.INTER_AREA)

    # 8-bit Lab is twice as fast as float and its steps (0.4 L*, 1 a*/b*) are finer than any cell statistic needs.
    L8, a8, b8 = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2Lab))  # contiguous planes: OpenCV copies strided views
    L, a, b = L8.astype(np.float32), a8.astype(np.float32), b8.astype(np.float32)
    L *= np.float32(100 / 255)
    a -= np.float32(128)
    b -= np.float32(128)
    # Colour statistics need no fine detail: at half size they cost a quarter.
    hL, ha, hb = (cv2.resize(x, (W // 2, H // 2), interpolation=cv2.INTER_AREA) for x in (L, a, b))
    mL, ma, mb = pool(hL), pool(ha), pool(hb)
    sL = np.sqrt(np.maximum(pool(hL * hL) - mL * mL, 0))
    ha2, hb2 = ha * ha, hb * hb
    sa = np.sqrt(np.maximum(pool(ha2) - ma * ma, 0))
    sb = np.sqrt(np.maximum(pool(hb2) - mb * mb, 0))
    corr_la = (pool(hL * ha) - mL * ma) / (sL * sa + 1e-3)
    gx = cv2.Sobel(L, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
    gy = cv2.Sobel(L, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
    gx2, gy2 = gx * gx, gy * gy
    jxx, jyy, jxy = pool(gx2), pool(gy2), pool(gx * gy)
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy * jxy) / (jxx + jyy + 1e-4)
    gradient = pool(_magnitude_of_squares(gx2, gy2))
    lap = cv2.Laplacian(L, cv2.CV_32F, ksize=1)
    lap_energy = np.sqrt(pool(lap * lap))
    half = hL
    lap2 = cv2.Laplacian(half, cv2.CV_32F, ksize=1)
    lap2_energy = np.sqrt(pool(lap2 * lap2))
    groups = _lbp_groups(L8)
    # Share of each code group per cell, in one pass: a histogram over (cell, group).
    offsets = _cell_bin_offsets(ny, nx)
    if offsets.dtype == np.uint16:  # OpenCV's 16-bit histogram counts them faster than bincount
        bins = cv2.add(groups, offsets, dtype=cv2.CV_16U)
        counts = cv2.calcHist([bins], [0], None, [ny * nx * 8], [0, ny * nx * 8]).ravel().astype(np.int64)
    else:
        counts = np.bincount((groups + offsets).ravel(), minlength=ny * nx * 8)
    shares = counts.reshape(ny, nx, 8) / float(CELL * CELL)
    # Principal curvatures at three scales of lightness and at the finest of redness.
    fine_max, fine_min = _curvatures(L, pool)
    red_max, red_min = _curvatures(a, pool)
    coarse_max, coarse_min = _curvatures(half, pool)
    quarter = cv2.resize(half, (W // 4, H // 4), interpolation=cv2.INTER_AREA)
    quarter_max, quarter_min = _curvatures(quarter, pool)
    pix_chroma = _magnitude_of_squares(ha2, hb2)
    pix_hue = cv2.phase(ha, hb, angleInDegrees=True)
    skin_like = ((pix_chroma > 4) & (pix_chroma < 45) & ((pix_hue < 80) | (pix_hue > 350))).astype(np.float32)
    chroma_sd = np.sqrt(np.maximum(pool(pix_chroma * pix_chroma) - pool(pix_chroma) ** 2, 0))
    chroma = np.hypot(ma, mb)
    hue = np.arctan2(mb, ma)
    weak = np.minimum(chroma, 10.0) / 10.0
    columns = [mL / 100, ma / 30, mb / 30, chroma / 30, np.cos(hue) * weak, np.sin(hue) * weak,
               np.log1p(sL), np.log1p(sa), np.log1p(sb), corr_la, coherence,
               np.log1p(gradient), np.log1p(lap_energy), np.log1p(lap2_energy),
               np.log1p(lap_energy) - np.log1p(lap2_energy), np.log1p(sa) - np.log1p(sL),
               shares[..., 6]] + [np.sqrt(shares[..., k]) for k in range(6)] + [
               np.log1p(fine_max), np.log1p(fine_min), np.log1p(coarse_max), np.log1p(coarse_min),
               pool(skin_like), np.log1p(chroma_sd),
               np.log1p(red_max), np.log1p(red_min), np.log1p(quarter_max), np.log1p(quarter_min)]
    return np.ascontiguousarray(np.stack(columns, axis=-1), dtype=np.float32)


def as_grayscale(image_bgr: np.ndarray) -> np.ndarray:
    """The image with its colour removed, as the grayscale network sees every photo."""
    return cv2.cvtColor(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


# --- the network: standardise, one ReLU layer, logistic output --------------

def cell_logits(net: dict, cells: np.ndarray) -> np.ndarray:
    z = (cells - net["mean"]) / net["std"]
    hidden = np.maximum(z @ net["w1"] + net["b1"], 0.0)
    return hidden @ net["w2"] + net["b2"]


def photo_score(nets: list[dict], cells: np.ndarray) -> float:
    """P(skin) of a photo: the networks' mean cell probability over its
    TOP_SHARE most skin-like cells."""
    if not len(cells):
        return 1.0  # nothing to judge (a sliver of an image): never claim no_skin
    p = np.mean([1.0 / (1.0 + np.exp(-cell_logits(net, cells))) for net in nets], axis=0)
    top = np.sort(p)[::-1][:max(1, int(np.ceil(TOP_SHARE * p.size)))]
    return float(top.mean())


def train_network(cells: np.ndarray, labels: np.ndarray, weights: np.ndarray, *, hidden: int,
                  epochs: int, learning_rate: float, weight_decay: float, seed: int) -> dict:
    """Full-batch Adam on the weighted logistic loss. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    # float64 throughout: in float32, reductions that round differently with
    # memory alignment grow over the epochs into visibly different weights.
    cells = cells.astype(np.float64)
    mean = cells.mean(0)
    std = cells.std(0) + 1e-6
    z = (cells - mean) / std
    d = z.shape[1]
    params = [rng.normal(0, 1 / np.sqrt(d), (d, hidden)), np.zeros(hidden),
              rng.normal(0, 1 / np.sqrt(hidden), hidden), np.zeros(())]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    w = weights / weights.sum()
    labels = labels.astype(np.float64)
    for t in range(1, epochs + 1):
        h = np.maximum(z @ params[0] + params[1], 0.0)
        p = 1.0 / (1.0 + np.exp(-(h @ params[2] + params[3])))
        g = (p - labels) * w
        g_h = np.outer(g, params[2]) * (h > 0)
        grads = [z.T @ g_h + weight_decay * params[0], g_h.sum(0),
                 h.T @ g + weight_decay * params[2], np.array(g.sum())]
        for i, gr in enumerate(grads):
            m1[i] = 0.9 * m1[i] + 0.1 * gr
            m2[i] = 0.999 * m2[i] + 0.001 * gr * gr
            params[i] = params[i] - learning_rate * (m1[i] / (1 - 0.9 ** t)) / (
                np.sqrt(m2[i] / (1 - 0.999 ** t)) + 1e-8)
    return {"mean": mean, "std": std, "w1": params[0], "b1": params[1], "w2": params[2],
            "b2": float(params[3])}


def train_photos(photos: list[np.ndarray], labels: list[int], *, hidden: int = 16, epochs: int = 400,
                 learning_rate: float = 0.01, weight_decay: float = 1e-3, rounds: int = 2,
                 keep: float = 0.5, seed: int = 0) -> dict:
    """A network from per-photo cell arrays and photo labels (1 skin, 0 not).

    Every photo weighs the same, however many cells it has. A skin photo's
    label is noisy at cell level (its background is not skin), so after each
    round only the `keep` most skin-like share of a skin photo's cells stay
    positive examples; every cell of a non-skin photo is a clean negative.
    """
    masks = [np.ones(len(c), bool) for c in photos]
    net = None
    for _ in range(rounds):
        x = np.concatenate([c[m] for c, m in zip(photos, masks)])
        y = np.concatenate([np.full(m.sum(), lab, np.float64) for m, lab in zip(masks, labels)])
        wt = np.concatenate([np.full(m.sum(), 1.0 / max(1, m.sum())) for m in masks])
        net = train_network(x, y, wt, hidden=hidden, epochs=epochs, learning_rate=learning_rate,
                            weight_decay=weight_decay, seed=seed)
        masks = []
        for c, lab in zip(photos, labels):
            if lab == 1 and len(c):
                s = cell_logits(net, c)
                masks.append(s >= np.quantile(s, 1 - keep))
            else:
                masks.append(np.ones(len(c), bool))
    return net


def train_ensemble(photos: list[np.ndarray], labels: list[int], *, members: int = 3, seed: int = 0,
                   **settings) -> list[dict]:
    """`members` networks from different initial weights: their average varies
    less with the seed than any one of them does."""
    return [train_photos(photos, labels, seed=seed * members + i, **settings) for i in range(members)]


# --- the versioned model ----------------------------------------------------

def _net_to_json(net: dict) -> dict:
    return {k: (np.asarray(v).round(7).tolist() if k != "b2" else round(float(v), 7)) for k, v in net.items()}


def _net_from_json(doc: dict) -> dict:
    return {k: (np.asarray(v, np.float64) if k != "b2" else float(v)) for k, v in doc.items()}


def _threshold(value, kind: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{kind}.threshold must be a probability within [0, 1], got {json.dumps(value)}")
    return float(value)


def _networks(docs, kind: str) -> list[dict]:
    """The networks of one kind, each checked against the descriptors it
    scores: a network of the wrong shape, with NaN or infinite weights or a
    zero spread would fail or give NaN on every photo of a night, so it fails
    once, at load."""
    if not isinstance(docs, list) or not docs:
        raise ValueError(f"{kind}.networks must be a non-empty list of networks")
    d = len(CELL_DESCRIPTORS)
    nets = []
    for i, doc in enumerate(docs, 1):
        if not isinstance(doc, dict) or set(doc) != {"mean", "std", "w1", "b1", "w2", "b2"}:
            raise ValueError(f"{kind} network {i} must hold exactly mean, std, w1, b1, w2, b2")
        try:
            net = _net_from_json(doc)
        except (TypeError, ValueError):
            raise ValueError(f"{kind} network {i} holds a value that is not a number, or a ragged list") from None
        if net["w1"].ndim != 2 or not net["w1"].shape[1]:
            raise ValueError(f"{kind} network {i}: w1 has shape {net['w1'].shape}, needs ({d}, hidden units)")
        hidden = net["w1"].shape[1]
        shapes = {"mean": (d,), "std": (d,), "w1": (d, hidden), "b1": (hidden,), "w2": (hidden,)}
        for key, shape in shapes.items():
            if net[key].shape != shape:
                raise ValueError(f"{kind} network {i}: {key} has shape {net[key].shape}, needs {shape} "
                                 f"({d} cell descriptors, {hidden} hidden units)")
        if not all(np.isfinite(net[k]).all() for k in net) or not (net["std"] > 0).all():
            raise ValueError(f"{kind} network {i} holds a NaN or infinite weight, or a std that is not positive")
        nets.append(net)
    return nets


class RelevanceModel:
    """The colour and grayscale networks and the thresholds below which a photo is no_skin."""

    def __init__(self, doc: dict):
        if tuple(doc["cell_descriptors"]) != CELL_DESCRIPTORS:
            raise ValueError("its cell descriptors differ from this code's; retrain it")
        self.doc = doc
        self.version = str(doc["version"])
        self.threshold = {k: _threshold(doc[k]["threshold"], k) for k in ("colour", "grayscale")}
        self.nets = {k: _networks(doc[k]["networks"], k) for k in ("colour", "grayscale")}

    @classmethod
    def load(cls, path: str | pathlib.Path | None = None) -> "RelevanceModel":
        """From a local path or gs:// URI (default: the packaged model)."""
        from schemas.policy import read_text
        text = DEFAULT_MODEL_PATH.read_text() if path is None else read_text(path, "relevance model")
        try:
            return cls(json.loads(text))
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"invalid relevance model {path or DEFAULT_MODEL_PATH}: {e}") from None

    def skin_probability(self, image_bgr: np.ndarray, grayscale: bool) -> float:
        """P(skin) of one analysis-size BGR image."""
        kind = "grayscale" if grayscale else "colour"
        # Rounded: the last bits of the float32 descriptors can differ between
        # worker processes (SIMD paths), and a rerun must write the same bytes.
        return round(photo_score(self.nets[kind], cell_descriptors(image_bgr)), PROBABILITY_DECIMALS)

    def is_skin(self, probability: float, grayscale: bool) -> bool:
        return probability >= self.threshold["grayscale" if grayscale else "colour"]


@functools.lru_cache(maxsize=4)
def load_model(path: str | None = None) -> RelevanceModel:
    """RelevanceModel.load, once per path and process."""
    return RelevanceModel.load(path)


def model_document(*, version: str, colour: dict, grayscale: dict, training: dict) -> dict:
    """The JSON document of a trained model (see RelevanceModel)."""
    doc = {"version": version,
           "doc": ("Skin relevance networks for curate's no_skin check (transforms/image/relevance.py). "
                   "Each network scores 28 px cells of the 224 px image; a photo's probability is the "
                   "mean over its more skin-like half; below `threshold` it is no_skin. Trained by "
                   "`python -m beam_jobs.train_relevance`; `training` says on what and how well it "
                   "did out of sample."),
           "cell_descriptors": list(CELL_DESCRIPTORS),
           "top_share": TOP_SHARE,
           "colour": {"threshold": colour["threshold"], "networks": [_net_to_json(n) for n in colour["networks"]]},
           "grayscale": {"threshold": grayscale["threshold"],
                         "networks": [_net_to_json(n) for n in grayscale["networks"]]},
           "training": training}
    body = json.dumps(doc, sort_keys=True).encode()
    doc["fingerprint"] = hashlib.sha256(body).hexdigest()[:16]
    return doc
