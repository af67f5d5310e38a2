"""Bring a decoded image to sRGB: the one colour-management step of every path.

Phones record colour in Display P3 (iPhone HEIC/JPEG, ICC profile) or describe
it with an nclx box (Android HEIC/AVIF). OpenCV ignores both and hands back the
stored code values, which read as sRGB make skin look more saturated and shift
ITA. `to_srgb` converts with LittleCMS (Pillow's ImageCms), relative
colorimetric, after the decode and any reduction, so colour features, report
thumbnails, TFRecord images and score inputs all see the same sRGB pixels.

Cost is kept off the common path: an image with no profile is sRGB and is not
touched; a profile is examined once per process (cached by its bytes) and one
that maps every colour to itself within one level (the sRGB profiles most
cameras embed) is skipped like no profile. Matrix/TRC profiles (Display P3,
Adobe RGB, nclx; nearly every phone and camera profile) are applied as a
16-bit linearising lookup, a 3x3 matrix and an sRGB-encoding lookup, about
3x faster than LittleCMS's own 8-bit path here; that shortcut is used only
when it agrees with LittleCMS within one level on a grid of 4913 colours,
and LittleCMS converts everything else. A profile LittleCMS cannot read,
or one that is not RGB (a grey or CMYK profile), is ignored: what a browser
does with it, and the pixels are then taken as sRGB.

HDR: a HEIC/AVIF whose nclx says PQ (SMPTE ST 2084, transfer 16) or HLG
(ARIB STD-B67, transfer 18), and which has no ICC profile, is tone-mapped by
`hdr_to_srgb` from its 10/12-bit samples, the same way every time:

1. code values (full range) to linear light in nits: PQ by its EOTF (absolute,
   0-10000 nits); HLG by its inverse OETF and the BT.2100 OOTF for a nominal
   ``HLG_DISPLAY_PEAK_NITS`` = 1000 nit display (gamma 1.2 on the luminance
   of the file's primaries);
2. divided by ``HDR_REFERENCE_WHITE_NITS`` = 203 (BT.2408 HDR reference /
   diffuse white), so diffuse white is 1.0, sRGB's white;
3. the file's primaries (BT.2020 when unspecified) to sRGB's, in linear light;
4. a roll-off on x = max(R, G, B) that keeps the ratios (hue) and leaves
   every colour whose largest channel is at most ``HDR_KNEE`` k = 0.75
   unchanged (sRGB levels up to 225: skin and mid tones keep the values an
   SDR rendering gives them); above it extended Reinhard on the part over the
   knee, t = (x - k)/(1 - k), y = k + (1 - k) t (1 + t/w^2)/(1 + t), with w
   the t of ``HDR_PEAK_NITS`` = 1000, so the curve is smooth at the knee,
   1000 nits (HLG's nominal peak, the usual PQ mastering peak) reaches 1 and
   brighter PQ values clip; diffuse white lands at 0.875 linear, 240 in sRGB,
   400 nits at 251;
5. negative channels (colours outside sRGB) clipped to 0, sRGB-encoded,
   rounded to 8 bits.
"""
from __future__ import annotations

import functools
import struct

import cv2
import numpy as np
from PIL import Image, ImageCms

# xy chromaticities of red, green, blue and white (ITU-T H.273 colour_primaries).
PRIMARIES = {
    1: ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060), (0.3127, 0.3290)),   # BT.709 / sRGB
    9: ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046), (0.3127, 0.3290)),   # BT.2020
    12: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), (0.3127, 0.3290)),  # Display P3
}
# H.273 transfer_characteristics that are (close to) the sRGB curve: BT.709,
# unspecified, BT.601, sRGB, BT.2020 10/12-bit. PQ (16) and HLG (18) are HDR
# curves, tone-mapped by hdr_to_srgb.
SRGB_LIKE_TRANSFER = frozenset({1, 2, 6, 13, 14, 15})
PQ, HLG = 16, 18
HDR_REFERENCE_WHITE_NITS = 203.0   # BT.2408: HDR diffuse white -> sRGB white
HLG_DISPLAY_PEAK_NITS = 1000.0     # BT.2100 nominal display for HLG's OOTF
HDR_KNEE = 0.75                    # linear light (white = 1) below which nothing changes
HDR_PEAK_NITS = 1000.0             # reaches sRGB's maximum; PQ above it clips
_D50 = (0.9642, 1.0, 0.8249)
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                      [0.0389, -0.0685, 1.0296]])
_SRGB = ImageCms.createProfile("sRGB")


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light (the IEC 61966-2-1 curve)."""
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] to sRGB-encoded values (srgb_to_linear's inverse)."""
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def exposed(image_bgr: np.ndarray, ev: float) -> np.ndarray:
    """The photo as if taken `ev` stops over (under, if negative): scaled in
    linear light, the same gain on every channel (one 8-bit table). Used by
    train_relevance's dimmed copies and enhancement's exposure lift."""
    linear = np.clip(srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0) * 2.0 ** ev, 0.0, 1.0)
    return cv2.LUT(image_bgr, np.round(linear_to_srgb(linear) * 255).astype(np.uint8))


def with_sensor_noise(image_bgr: np.ndarray, sd: float, seed: int) -> np.ndarray:
    """The photo with sensor noise: independent Gaussian noise of `sd` 8-bit
    levels on every pixel and channel, clipped; the same seed gives the same
    noise. Add it at the photo's own resolution, as a camera does: a resize
    afterwards averages it down as it would a real photo's. Used by
    train_relevance's noisy copies and benchmarks.dim_frames' noise sweep."""
    noise = np.random.default_rng(seed).normal(0.0, sd, image_bgr.shape).astype(np.float32)
    return np.clip(cv2.add(image_bgr.astype(np.float32), noise), 0, 255).astype(np.uint8)


def to_srgb(bgr: np.ndarray, icc_profile: bytes | None) -> np.ndarray:
    """`bgr` (HxWx3 uint8) described by `icc_profile`, converted to sRGB; no profile = sRGB."""
    if not icc_profile:
        return bgr
    transform = _transform(icc_profile)
    if transform is None:
        return bgr
    if isinstance(transform, _MatrixShaper):
        return transform(bgr)
    rgb = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))
    out = np.asarray(ImageCms.applyTransform(rgb, transform))
    return np.ascontiguousarray(out[..., ::-1])


def is_hdr(icc_profile: bytes | None, nclx: tuple | None) -> bool:
    """Whether the image is tone-mapped by hdr_to_srgb: nclx PQ/HLG and no ICC profile."""
    return not icc_profile and bool(nclx) and nclx[1] in (PQ, HLG)


def hdr_to_srgb(image: np.ndarray, bits: int, nclx: tuple) -> np.ndarray:
    """n-bit PQ or HLG code values (HxWx3 BGR, `bits` 8-16) -> 8-bit sRGB BGR.

    The tone mapping of the module docstring; `nclx` is (primaries, transfer, ...).
    """
    primaries, transfer = nclx[0], nclx[1]
    bits = bits if 8 <= bits <= 16 else 16
    # One linearising table for all channels, so BGR order is kept throughout
    # and the matrices are reordered instead (cv2.transform: float32, fast).
    lut = _hdr_linear_lut(transfer, bits)        # code value -> linear (nits / 203, or HLG scene light)
    bgr = np.take(lut, np.minimum(image, (1 << bits) - 1))
    to_srgb_matrix, luminance = _hdr_matrices(primaries)
    if transfer == HLG:
        # BT.2100 OOTF: display light = peak * Ys^(gamma - 1) * E, with gamma 1.2 at 1000 nits.
        gamma = 1.2 + 0.42 * np.log10(HLG_DISPLAY_PEAK_NITS / 1000.0)
        ys = np.maximum(cv2.transform(bgr, luminance), 1e-12)
        bgr *= (HLG_DISPLAY_PEAK_NITS / HDR_REFERENCE_WHITE_NITS * cv2.pow(ys, gamma - 1))[..., None]
    bgr = cv2.transform(bgr, to_srgb_matrix)
    np.maximum(bgr, 0, out=bgr)  # gamut: clip what sRGB cannot show
    b, g, r = cv2.split(bgr)
    peak = cv2.max(cv2.max(b, g), r)
    over = peak > HDR_KNEE
    if over.any():  # the roll-off touches only the pixels above the knee
        k = HDR_KNEE
        w = (HDR_PEAK_NITS / HDR_REFERENCE_WHITE_NITS - k) / (1 - k)
        x = peak[over]
        t = (x - k) / (1 - k)
        rolled = np.minimum(k + (1 - k) * t * (1 + t / (w * w)) / (1 + t), 1)
        bgr[over] *= (rolled / x)[:, None]
    np.minimum(bgr, 1, out=bgr)
    return _srgb_encode_lut()[(bgr * 65535 + 0.5).astype(np.uint16)]


@functools.lru_cache(maxsize=8)
def _hdr_linear_lut(transfer: int, bits: int) -> np.ndarray:
    """Every n-bit code value's linear light: PQ in units of reference white, HLG scene light 0-1."""
    e = np.arange(1 << bits, dtype=np.float64) / ((1 << bits) - 1)
    if transfer == PQ:  # SMPTE ST 2084 EOTF
        m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
        p = e ** (1 / m2)
        linear = 10000.0 / HDR_REFERENCE_WHITE_NITS * (np.maximum(p - c1, 0) / (c2 - c3 * p)) ** (1 / m1)
    else:  # HLG (ARIB STD-B67 / BT.2100) inverse OETF
        a = 0.17883277
        b, c = 1 - 4 * a, 0.5 - a * np.log(4 * a)
        linear = np.where(e <= 0.5, e * e / 3, (np.exp((np.maximum(e, 0.5) - c) / a) + b) / 12)
    return linear.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _hdr_matrices(primaries: int) -> tuple[np.ndarray, np.ndarray]:
    """(linear BGR -> linear sRGB BGR, 1x3 luminance weights on BGR) for nclx primaries; BT.2020 when unknown."""
    source = _rgb_to_xyz(*PRIMARIES.get(primaries, PRIMARIES[9]))
    flip = np.eye(3)[::-1]                       # the same on BGR vectors
    to_srgb_matrix = flip @ np.linalg.solve(_rgb_to_xyz(*PRIMARIES[1]), source) @ flip
    return to_srgb_matrix.astype(np.float32), source[1:2, ::-1].astype(np.float32)


def _rgb_to_xyz(red, green, blue, white) -> np.ndarray:
    """Linear RGB -> XYZ under the primaries' own white (Y of white = 1)."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in (red, green, blue)]).T
    wx, wy = white
    return xyz * np.linalg.solve(xyz, np.array([wx / wy, 1.0, (1 - wx - wy) / wy]))


@functools.cache
def _srgb_encode_lut() -> np.ndarray:
    """sRGB encoding of 16-bit linear light (index / 65535) to uint8, rounded."""
    return np.round(255 * linear_to_srgb(np.arange(65536) / 65535)).astype(np.uint8)


def profile_for(icc_profile: bytes | None, nclx: tuple | None) -> bytes | None:
    """The ICC profile to convert from: the embedded one, else one built from nclx."""
    if icc_profile:
        return icc_profile
    if nclx:
        return nclx_profile(nclx[0], nclx[1])
    return None


@functools.lru_cache(maxsize=16)
def nclx_profile(primaries: int, transfer: int) -> bytes | None:
    """An ICC profile for nclx colour, or None when it is sRGB or not one we map.

    The transfer is taken as the sRGB curve; PQ/HLG images never get here
    (decode sends them to hdr_to_srgb).
    """
    if primaries not in PRIMARIES or primaries == 1:
        return None
    return matrix_profile(*PRIMARIES[primaries], description=f"nclx primaries {primaries}")


def matrix_profile(red, green, blue, white, *, description: str) -> bytes:
    """A minimal ICC v2 RGB display profile: these primaries, the sRGB tone curve.

    Colorants are Bradford-adapted to the D50 connection space, as ICC requires.
    Also used to write Display P3 test images and sample uploads.
    """
    d50 = _d50_matrix(red, green, blue, white)
    curve = srgb_to_linear(np.arange(1024) / 1023)
    curv = b"curv" + bytes(4) + struct.pack(">I", 1024) + np.round(curve * 65535).astype(">u2").tobytes()
    text = description.encode("ascii") + b"\x00"
    desc = (b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4) + bytes(4)
            + bytes(2) + bytes(1) + bytes(67))
    tags = [(b"desc", desc), (b"wtpt", _xyz(_D50)), (b"rXYZ", _xyz(d50[:, 0])),
            (b"gXYZ", _xyz(d50[:, 1])), (b"bXYZ", _xyz(d50[:, 2])),
            (b"rTRC", curv), (b"gTRC", curv), (b"bTRC", curv), (b"cprt", b"text" + bytes(4) + b"none\x00")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = [], b""
    for sig, data in tags:
        body += b"\x00" * (-len(body) % 4)
        table.append(struct.pack(">4sII", sig, offset + len(body), len(data)))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I4sI4s4s4s", size, b"lcms", 0x02100000, b"mntr", b"RGB ", b"XYZ ")
              + bytes(12) + b"acsp" + bytes(24) + struct.pack(">I", 0) + _xyz(_D50)[8:] + bytes(48))
    return header + struct.pack(">I", len(tags)) + b"".join(table) + body


def _d50_matrix(red, green, blue, white) -> np.ndarray:
    """Linear RGB -> XYZ under D50 (Bradford-adapted from `white`), columns = colorants."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in (red, green, blue)]).T
    wx, wy = white
    w = np.array([wx / wy, 1.0, (1 - wx - wy) / wy])
    rgb_to_xyz = xyz * np.linalg.solve(xyz, w)
    src, dst = _BRADFORD @ w, _BRADFORD @ np.array(_D50)
    adapt = np.linalg.inv(_BRADFORD) @ np.diag(dst / src) @ _BRADFORD
    return adapt @ rgb_to_xyz


def display_p3_profile() -> bytes:
    """Display P3 (P3 primaries, D65 white, sRGB curve): what iPhones embed."""
    return matrix_profile(*PRIMARIES[12], description="Display P3")


def _xyz(values) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(struct.pack(">i", round(float(v) * 65536)) for v in values)


# Every 17th level of each channel (4913 colours): enough to see whether a
# profile moves any colour, cheap enough to run once per distinct profile.
_PROBE = np.stack(np.meshgrid(*[np.r_[0:256:16, 255]] * 3, indexing="ij"), -1).reshape(1, -1, 3)
_PROBE = _PROBE.astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _transform(icc_profile: bytes):
    """A cached profile -> sRGB conversion, or None when it would change nothing.

    Either a _MatrixShaper (checked against LittleCMS) or a LittleCMS transform.
    """
    try:
        profile = ImageCms.ImageCmsProfile(ImageCms.core.profile_frombytes(icc_profile))
        if profile.profile.xcolor_space.strip() != "RGB":
            return None
        transform = ImageCms.buildTransform(profile, _SRGB, "RGB", "RGB",
                                            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
        probe = Image.fromarray(_PROBE)
        want = np.asarray(ImageCms.applyTransform(probe, transform)).astype(int)
    except (OSError, ValueError, ImageCms.PyCMSError):
        return None
    if np.abs(want - _PROBE).max() <= 1:
        return None
    fast = _MatrixShaper.from_icc(icc_profile)
    if fast is not None:
        got = fast(np.ascontiguousarray(_PROBE[..., ::-1]))[..., ::-1].astype(int)
        if np.abs(got - want).max() <= 1:
            return fast
    return transform


class _MatrixShaper:
    """Matrix/TRC profile -> sRGB on BGR uint8: lookup to 16-bit linear, 3x3, lookup to sRGB."""

    # sRGB encoding of 16-bit linear light, and sRGB's D50 RGB->XYZ (its inverse is used).
    _ENCODE = None
    _SRGB_D50 = None

    def __init__(self, linearise: np.ndarray, matrix: np.ndarray):
        self.linearise = linearise  # (256, 1, 3) uint16, BGR channel order
        self.matrix = matrix        # 3x3 float32 on BGR vectors

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        linear = cv2.LUT(bgr, self.linearise)
        # transform saturates to 0..65535: out-of-gamut colours clip, as LittleCMS does.
        return _MatrixShaper._ENCODE[cv2.transform(linear, self.matrix)]

    @classmethod
    def from_icc(cls, icc: bytes):
        """Parse rXYZ/gXYZ/bXYZ and r/g/bTRC; None when the profile has LUT tags or odd curves."""
        try:
            tags = _icc_tags(icc)
            if any(t in tags for t in (b"A2B0", b"A2B1", b"A2B2")):
                return None
            cols = np.array([_icc_xyz(tags[t]) for t in (b"rXYZ", b"gXYZ", b"bXYZ")]).T
            curves = [_icc_curve(tags[t]) for t in (b"bTRC", b"gTRC", b"rTRC")]
        except (KeyError, struct.error, ValueError, IndexError):
            return None
        if any(c is None for c in curves):
            return None
        if cls._ENCODE is None:
            cls._ENCODE = _srgb_encode_lut()
            cls._SRGB_D50 = _d50_matrix(*PRIMARIES[1])
        rgb = np.linalg.solve(cls._SRGB_D50, cols)          # source linear RGB -> sRGB linear RGB
        flip = np.eye(3)[::-1]
        matrix = (flip @ rgb @ flip).astype(np.float32)     # the same on BGR vectors
        linearise = np.stack([np.round(np.clip(c, 0, 1) * 65535) for c in curves], -1)
        return cls(linearise.astype(np.uint16).reshape(256, 1, 3), matrix)


def _icc_tags(icc: bytes) -> dict[bytes, bytes]:
    count = struct.unpack_from(">I", icc, 128)[0]
    tags = {}
    for i in range(min(count, 100)):
        sig, off, size = struct.unpack_from(">4sII", icc, 132 + 12 * i)
        tags[sig] = icc[off:off + size]
    return tags


def _icc_xyz(tag: bytes) -> list[float]:
    if tag[:4] != b"XYZ ":
        raise ValueError("not XYZ")
    return [v / 65536 for v in struct.unpack_from(">iii", tag, 8)]


def _icc_curve(tag: bytes) -> np.ndarray | None:
    """The curve at the 256 8-bit code values (0..1), or None for an unknown type."""
    v = np.arange(256) / 255
    if tag[:4] == b"curv":
        n = struct.unpack_from(">I", tag, 8)[0]
        if n == 0:
            return v
        if n == 1:
            return v ** (struct.unpack_from(">H", tag, 12)[0] / 256)
        table = np.frombuffer(tag, ">u2", n, 12) / 65535
        return np.interp(v * (n - 1), np.arange(n), table)
    if tag[:4] == b"para":
        kind = struct.unpack_from(">H", tag, 8)[0]
        nparams = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}.get(kind)
        if nparams is None:
            return None
        g, a, b, c, d, e, f = (list(np.array(struct.unpack_from(f">{nparams}i", tag, 12)) / 65536)
                               + [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0][nparams:])
        if kind == 0:
            return v ** g
        if kind == 1:
            return np.where(v >= -b / a, np.maximum(a * v + b, 0) ** g, 0)
        if kind == 2:
            return np.where(v >= -b / a, np.maximum(a * v + b, 0) ** g + c, c)
        if kind == 3:
            return np.where(v >= d, np.maximum(a * v + b, 0) ** g, c * v)
        return np.where(v >= d, np.maximum(a * v + b, 0) ** g + e, c * v + f)
    return None
