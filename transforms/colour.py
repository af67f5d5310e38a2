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
cameras embed) is skipped like no profile. A profile LittleCMS cannot read,
or one that is not RGB (a grey or CMYK profile), is ignored: what a browser
does with it, and the pixels are then taken as sRGB.
"""
from __future__ import annotations

import functools
import struct

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
# curves; they are not tone-mapped here (see README, "HDR").
SRGB_LIKE_TRANSFER = frozenset({1, 2, 6, 13, 14, 15})
_D50 = (0.9642, 1.0, 0.8249)
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                      [0.0389, -0.0685, 1.0296]])
_SRGB = ImageCms.createProfile("sRGB")


def to_srgb(bgr: np.ndarray, icc_profile: bytes | None) -> np.ndarray:
    """`bgr` (HxWx3 uint8) described by `icc_profile`, converted to sRGB; no profile = sRGB."""
    if not icc_profile:
        return bgr
    transform = _transform(icc_profile)
    if transform is None:
        return bgr
    rgb = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))
    out = np.asarray(ImageCms.applyTransform(rgb, transform))
    return np.ascontiguousarray(out[..., ::-1])


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

    PQ/HLG transfer is not tone-mapped: its primaries are still converted,
    with the sRGB curve (a documented approximation; see README "HDR").
    """
    if primaries not in PRIMARIES or primaries == 1:
        return None
    return matrix_profile(*PRIMARIES[primaries], description=f"nclx primaries {primaries}")


def matrix_profile(red, green, blue, white, *, description: str) -> bytes:
    """A minimal ICC v2 RGB display profile: these primaries, the sRGB tone curve.

    Colorants are Bradford-adapted to the D50 connection space, as ICC requires.
    Also used to write Display P3 test images and sample uploads.
    """
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in (red, green, blue)]).T
    wx, wy = white
    w = np.array([wx / wy, 1.0, (1 - wx - wy) / wy])
    rgb_to_xyz = xyz * np.linalg.solve(xyz, w)
    src, dst = _BRADFORD @ w, _BRADFORD @ np.array(_D50)
    adapt = np.linalg.inv(_BRADFORD) @ np.diag(dst / src) @ _BRADFORD
    d50 = adapt @ rgb_to_xyz
    v = np.arange(1024) / 1023
    curve = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
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
    """A cached profile -> sRGB transform, or None when conversion would change nothing."""
    try:
        profile = ImageCms.ImageCmsProfile(ImageCms.core.profile_frombytes(icc_profile))
        if profile.profile.xcolor_space.strip() != "RGB":
            return None
        transform = ImageCms.buildTransform(profile, _SRGB, "RGB", "RGB",
                                            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
        probe = Image.fromarray(_PROBE)
        moved = np.abs(np.asarray(ImageCms.applyTransform(probe, transform)).astype(int) - _PROBE)
    except (OSError, ValueError, ImageCms.PyCMSError):
        return None
    return transform if moved.max() > 1 else None
