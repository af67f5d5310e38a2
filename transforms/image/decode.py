"""Decode an image once, as small as the analysis allows, upright, as 8-bit BGR.

JPEG decode dominates the pipeline's cost, and libjpeg can decode at 1/2, 1/4
or 1/8 scale in the DCT domain several times faster than at full size.
`decode` reads the header first (format, declared size, EXIF orientation),
refuses what it should not decode (unknown formats, pixel bombs, truncated
JPEGs) before any pixel work, then decodes once at the smallest DCT scale whose
short side still covers ``analysis_short_side``. Every failure is an
`ImageRejected` with a fixed reason code; no cv2.error escapes.

Orientation is applied here from the parsed header, with OpenCV told to ignore
it, so it happens exactly once and the output always matches
``header.display_width/height``. The one exception is TIFF: OpenCV's TIFF
decoder applies the Orientation tag itself whatever the flags, so it is left
as decoded.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from dataclasses import dataclass

from transforms import DEFAULT_MAX_PIXELS

DEFAULT_MAX_DECODE_BYTES = 400_000_000

# Backstop for OpenCV's own per-image pixel limit (default 2**30). OpenCV reads it
# once, when the library loads, so it only takes effect if no module imported cv2
# before this one; worker images should also set it in their environment.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from transforms.image.colour import hdr_to_srgb, is_hdr, profile_for, to_srgb  # noqa: E402
from transforms.image.header import Header, read_header  # noqa: E402

JPEG_SCALES = (8, 4, 2, 1)

# A real JPEG cannot be much smaller than its pixel count allows: even a flat
# grey frame costs about one Huffman bit per 8x8 block, i.e. >= 1 byte per ~400
# pixels. A file declaring far more pixels than that is truncated or crafted,
# and libjpeg would still allocate the whole frame (a 2.4 KB progressive file
# declaring 10000x10000 took ~570 MB) before filling it with grey.
MAX_JPEG_PIXELS_PER_BYTE = 2_000

# A progressive JPEG is decoded scan by scan, each scan a pass over every 8x8
# block of its component, and nothing bounds how many scans a file holds: a
# 12 MP upload with 5,000 copies of a 96-byte scan took 4.2 s to decode at
# 1/8 (0.11 s without them), and max_bytes leaves room for ~100x more.
# Encoders write about 10 (libjpeg's default script; Photoshop 3-5, mozjpeg
# ~10-20); 500 is the limit libjpeg-turbo's TurboJPEG API applies for this
# exploit (TJFLAG_LIMITSCANS), ~0.4 s of extra passes at 12 MP.
MAX_JPEG_SCANS = 500

_NAMES = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WebP", "bmp": "BMP",
          "tiff": "TIFF", "heic": "HEIC", "avif": "AVIF"}
# Formats that only some OpenCV builds decode; probed once per process. HEIC
# is decoded by libheif (pillow-heif), never by OpenCV: see _decode_heic.
_OPTIONAL_CODECS = {"avif": ".avif", "tiff": ".tiff"}
# HEIC and AVIF have no reduced decode (HEVC/AV1 are not DCT-scalable like
# JPEG): they decode at full size and are then area-reduced by the factor a
# JPEG of that size would get, so every later step sees the same array size
# and colour conversion runs on the small array.
_REDUCED_AFTER_DECODE = frozenset({"heic", "avif"})
# libheif decodes one image on one thread: a worker runs one image per core
# already, and extra threads only add contention (measured in
# benchmarks/curate_per_image.py --heic).
HEIF_DECODE_THREADS = 1
_JPEG_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
               4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# IMREAD_UNCHANGED keeps alpha (composited below) and 16-bit samples (scaled
# below with rounding, where IMREAD_COLOR would truncate); it never rotates.
# AVIF's 10/12-bit samples come back unscaled in uint16 and are scaled by the
# header's bit depth (to_8bit); TIFF uses IMREAD_COLOR because 4-channel TIFF
# may be CMYK, not BGRA.
_FLAGS = {
    "png": cv2.IMREAD_UNCHANGED, "webp": cv2.IMREAD_UNCHANGED,
    "gif": cv2.IMREAD_UNCHANGED, "bmp": cv2.IMREAD_UNCHANGED,
    "tiff": cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION,
    "avif": cv2.IMREAD_UNCHANGED,
}
# Decoders that apply the orientation themselves even with IMREAD_IGNORE_ORIENTATION.
_SELF_ORIENTING = frozenset({"tiff"})


class ImageRejected(Exception):
    """An input that will not be decoded.

    ``reason`` is one of ``empty``, ``unreadable``, ``unsupported_format``,
    ``too_large`` (see schemas/reasons.py); ``header`` is the parsed header when
    there was one (so callers need not parse it again), else None.
    """

    def __init__(self, reason: str, message: str, header: Header | None = None):
        super().__init__(message)
        self.reason = reason
        self.header = header


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous
class Decoded:
    """One decoded image: upright HxWx3 uint8 BGR at 1/``scale`` of full size.

    ``width``/``height`` are the full-resolution displayed size from the header.
    """

    image: np.ndarray
    scale: int
    header: Header
    width: int
    height: int
    # HEIC only: the (width, height) of each embedded thumbnail, and the index
    # of the one decoded in the primary's place (None: the primary was).
    thumbnail_sizes: tuple = ()
    thumbnail: int | None = None


def decode(data: bytes, *, analysis_short_side: int = 224,
           max_pixels: int = DEFAULT_MAX_PIXELS,
           max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES) -> Decoded:
    """Decode `data` once, at the smallest JPEG DCT scale covering the analysis size.

    Raises ImageRejected: ``empty`` for no bytes; ``unsupported_format`` for
    unrecognised data or a format this OpenCV cannot decode; ``too_large`` when
    the declared width*height exceeds `max_pixels`, or the memory the decode
    would take (decode_bytes) exceeds `max_decode_bytes` (both checked before
    decoding); ``unreadable`` for truncated JPEGs, missing sizes and any
    decoder failure.
    """
    if not data:
        raise ImageRejected("empty", "empty input: 0 bytes")
    header = read_header(data)
    fmt = header.format
    if fmt == "unknown":
        raise ImageRejected("unsupported_format", _unknown_message(data), header)
    name = _NAMES[fmt]
    if fmt in _OPTIONAL_CODECS and not _cv2_decodes(fmt):
        raise ImageRejected("unsupported_format", f"{name} is not a supported format "
                                                  "(this OpenCV build cannot decode it)", header)
    width, height = header.width, header.height
    if width * height > max_pixels:
        raise ImageRejected("too_large", f"declared {width}x{height} = {_mp(width * height)} MP "
                                         f"exceeds max_pixels {_mp(max_pixels)} MP", header)
    if header.coded_pixels > max_pixels:  # HEIF: decoded whole, then cropped to width x height
        raise ImageRejected("too_large", f"declared coded size {_mp(header.coded_pixels)} MP "
                                         f"exceeds max_pixels {_mp(max_pixels)} MP", header)
    if width <= 0 or height <= 0:
        raise ImageRejected("unreadable", f"{name} header declares no image size "
                                          "(truncated or corrupt header)", header)
    if fmt == "jpeg":
        if width * height > MAX_JPEG_PIXELS_PER_BYTE * len(data):
            raise ImageRejected("unreadable", f"JPEG declares {width}x{height} but has only {len(data)} bytes "
                                              "(truncated or crafted)", header)
        if not header.has_eoi:
            # libjpeg only warns on truncation and fills the rest with grey.
            raise ImageRejected("unreadable", "truncated JPEG: no end-of-image marker", header)
        # Entropy-coded data never holds FF DA (a coded FF is followed by 00), so this
        # counts the scans (and an EXIF thumbnail's one); progressive files only, ~1 ms per MB.
        scans = data.count(b"\xff\xda") if header.progressive else 1
        if scans > MAX_JPEG_SCANS:
            raise ImageRejected("too_large", f"progressive JPEG with {scans} scans, over {MAX_JPEG_SCANS} (encoders "
                                             "write ~10; each scan is a pass over every block: a decode-time bomb)",
                                header)
        scale = jpeg_scale(width, height, analysis_short_side)
        flags = _JPEG_FLAGS[scale] | cv2.IMREAD_IGNORE_ORIENTATION
    elif fmt in _REDUCED_AFTER_DECODE:  # HEIC goes to libheif: no OpenCV flags
        scale, flags = jpeg_scale(width, height, analysis_short_side), _FLAGS.get(fmt)
    else:
        scale, flags = 1, _FLAGS[fmt]
    need = decode_bytes(header, scale)
    if max_decode_bytes is not None and need > max_decode_bytes:
        raise ImageRejected("too_large", f"decoding {name} {width}x{height} ({_layout(header)}) would take "
                                         f"~{need / 1e6:.0f} MB, over max_decode_bytes {max_decode_bytes / 1e6:.0f} MB",
                            header)

    with _BUDGET.hold(need, max_decode_bytes):
        return _decode_pixels(data, flags, header, scale, name, analysis_short_side)


def _decode_pixels(data: bytes, flags, header: Header, scale: int, name: str,
                   analysis_short_side: int) -> Decoded:
    fmt, width, height = header.format, header.width, header.height
    if fmt == "heic":
        image, icc, nclx, bits, sizes, thumbnail = _decode_heic(data, header, analysis_short_side)
        if thumbnail is not None:
            image = (_hdr_bgr8(image, header, bits, nclx) if is_hdr(icc, nclx)
                     else to_srgb(_to_bgr8(image, header), profile_for(icc, nclx)))
            return Decoded(image=image, header=header,
                           scale=min(127, round(header.display_width / image.shape[1])),
                           width=header.display_width, height=header.display_height,
                           thumbnail_sizes=sizes, thumbnail=thumbnail)
        return _finish_reduced(image, header, scale, icc, nclx, bits, thumbnail_sizes=sizes)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:
        raise ImageRejected("unreadable", f"OpenCV failed to decode {name}: {e.err}",
                            header) from None
    if image is None:
        raise ImageRejected("unreadable", f"OpenCV could not decode the {name} data "
                                          "(corrupt or unsupported variant)", header)
    if fmt in _REDUCED_AFTER_DECODE:  # AVIF: OpenCV returns n-bit samples unscaled
        bits = header.bit_depth if image.dtype == np.uint16 else 8
        return _finish_reduced(image, header, scale, header.icc_profile, header.nclx, bits)
    oriented = fmt in _SELF_ORIENTING
    if oriented:
        width, height = header.display_width, header.display_height
    expected = (-(-height // scale), -(-width // scale))
    if image.shape[:2] != expected:
        got = f"{image.shape[1]}x{image.shape[0]}"
        raise ImageRejected("unreadable", f"decoded {name} is {got} but the header implies "
                                          f"{expected[1]}x{expected[0]}", header)
    if fmt != "jpeg":
        image = _to_bgr8(image, header)
    if not oriented:
        image = apply_orientation(image, header.orientation)
    if not (fmt == "png" and header.srgb_chunk):  # an sRGB chunk overrides iCCP
        image = to_srgb(image, header.icc_profile)
    return Decoded(image=image, scale=scale, header=header,
                   width=header.display_width, height=header.display_height)


class _DecodeBudget:
    """The decodes running at once in this process hold at most `limit` bytes
    together (by decode_bytes): score's prefetch threads, or a Dataflow SDK
    process's many work threads, would otherwise each take a full budget at
    the same moment. One decode alone always runs (its need is <= limit)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._in_use = 0

    @contextlib.contextmanager
    def hold(self, need: int, limit: int | None):
        if limit is None:
            yield
            return
        with self._cond:
            while self._in_use and self._in_use + need > limit:
                self._cond.wait()
            self._in_use += need
        try:
            yield
        finally:
            with self._cond:
                self._in_use -= need
                self._cond.notify_all()


_BUDGET = _DecodeBudget()


def _channels(header: Header) -> int:
    """Channels OpenCV hands back for this header under decode()'s flags (4 when unsure)."""
    fmt = header.format
    if fmt == "png":
        if header.has_alpha or header.color_type == 4:
            return 4
        return 3 if header.color_type == 3 else max(header.components, 1)
    if fmt == "webp":
        return 4 if header.has_alpha else 3
    if fmt == "bmp":
        return 4 if header.bit_depth == 32 else 3
    if fmt in ("tiff", "avif", "heic", "jpeg"):
        return 3
    return 4  # gif, and anything else


def _sample_bytes(header: Header) -> int:
    return 1 if header.format in ("bmp", "gif", "webp") else max(1, -(-header.bit_depth // 8))


def decode_bytes(header: Header, scale: int = 1) -> int:
    """Peak bytes one decode of this image takes, from its header alone.

    Measured with OpenCV 5: the PNG, WebP, GIF and TIFF decoders hold about
    twice their output while decoding (a 100 MP RGB PNG peaks at 574 MB for
    286 MB of pixels), and a progressive JPEG keeps every DCT coefficient (2
    bytes each, per component at its sampling) whatever the scale it is
    decoded at. Converting to 8-bit BGR afterwards needs less than that.
    Only JPEG decodes at a reduced `scale`; every other format decodes whole
    and is reduced afterwards, so it is charged at full size.
    """
    if header.format != "jpeg":
        scale = 1
    w, h = header.width, header.height
    # A HEIF is decoded at its coded size (whole HEVC blocks, or a grid's tiles), then cropped.
    pixels = max(-(-w // scale) * -(-h // scale), header.coded_pixels)
    out = pixels * max(3, _channels(header) * _sample_bytes(header))
    if header.format != "jpeg" or not header.progressive:
        return 2 * out
    sampling = header.sampling or ((1, 1),) * max(header.components, 1)
    hmax = max(hf for hf, _ in sampling) or 1
    vmax = max(vf for _, vf in sampling) or 1
    coefficients = sum(-(-w * hf // hmax) * -(-h * vf // vmax) * 2 for hf, vf in sampling)
    return 2 * out + coefficients


def _layout(header: Header) -> str:
    if header.format == "jpeg":
        return f"{header.components} components{', progressive' if header.progressive else ''}"
    return f"{_channels(header)} channels x {8 * _sample_bytes(header)} bit"


def _decode_heic(data: bytes, header: Header,
                 min_short_side: int) -> tuple[np.ndarray, bytes | None, tuple | None, int, tuple, int | None]:
    """The primary image of a HEIF file, upright, BGR(A), and its colour description.

    libheif applies the irot/imir/clap transforms (HEIF's orientation; the EXIF
    Orientation tag inside a HEIF is informational and never applied again) and
    returns the primary item whatever else the file holds (thumbnails, depth
    maps, burst frames). When the primary carries a thumbnail whose short side
    covers `min_short_side` at the same framing, that thumbnail is decoded
    instead (phones embed one; ~10 ms against ~400 ms for 12 MP HEVC).
    Returns (array, ICC profile, nclx, bits per sample, the thumbnails'
    sizes, the index of the one decoded or None). The array is 8-bit, except
    for HDR (PQ/HLG nclx): then it holds the n-bit code values for hdr_to_srgb.
    """
    import pillow_heif  # imported here: only HEIC inputs pay for loading libheif

    pillow_heif.options.DECODE_THREADS = HEIF_DECODE_THREADS
    try:
        # bgr_mode: libheif writes OpenCV's channel order, no full-size reshuffle here.
        heif = pillow_heif.open_heif(data, convert_hdr_to_8bit=False, bgr_mode=True)
        primary = heif[heif.primary_index]
        sizes = _thumbnail_sizes(primary)
        thumbnail = _pick_thumbnail(sizes, header, min_short_side)
        source = primary if thumbnail is None else primary.get_thumbnail(thumbnail)
        image = np.asarray(source)
    except Exception as e:  # noqa: BLE001 -- libheif errors are plain ValueError/RuntimeError/OSError
        raise ImageRejected("unreadable", f"libheif could not decode the HEIC data: {_one_line(e)}",
                            header) from None
    # Thumbnails carry no colour box of their own on phones: the primary's applies.
    icc, nclx = primary.info.get("icc_profile"), _nclx(primary.info.get("nclx_profile"))
    bits = 8
    if image.dtype == np.uint16:
        # pillow-heif returns 10/12-bit samples shifted to the top of 16 bits.
        bits = max(9, min(16, source.info.get("bit_depth") or header.bit_depth or 16))
        image = image >> (16 - bits)
        if not is_hdr(icc, nclx):
            image = to_8bit(image, bits)
            bits = 8
    return image, icc, nclx, bits, sizes, thumbnail


def _thumbnail_sizes(primary) -> tuple:
    """(width, height) of each thumbnail embedded for the primary image (not decoded)."""
    return tuple(tuple(primary.get_thumbnail(i).size) for i in range(len(primary.info.get("thumbnails") or ())))


def _pick_thumbnail(sizes, header: Header, min_short_side: int) -> int | None:
    """Index of the smallest thumbnail covering min_short_side with the primary's framing, or None.

    Framing: width/height within 1% of the primary's displayed aspect, so a
    thumbnail that was cropped differently (or belongs to another edit) is
    never judged in the photo's place.
    """
    best = None
    W, H = header.display_width, header.display_height
    for i, (w, h) in enumerate(sizes):
        if min(w, h) < min_short_side or abs(w * H - h * W) > 0.01 * w * H or w * h >= W * H:
            continue
        if best is None or w * h < sizes[best][0] * sizes[best][1]:
            best = i
    return best


def _nclx(info: dict | None) -> tuple | None:
    if not info:
        return None
    return (info.get("color_primaries"), info.get("transfer_characteristics"),
            info.get("matrix_coefficients"), bool(info.get("full_range_flag")))


def _finish_reduced(image: np.ndarray, header: Header, scale: int, icc: bytes | None,
                    nclx: tuple | None, bits: int, thumbnail_sizes: tuple = ()) -> Decoded:
    """HEIC/AVIF after the full decode: check size, 8-bit, upright, reduce, sRGB.

    HDR (PQ/HLG) keeps its n-bit samples through the reduction and is
    tone-mapped on the small array (hdr_to_srgb).
    """
    name = _NAMES[header.format]
    oriented = header.format == "heic"  # libheif applied irot/imir itself
    h, w = (header.display_height, header.display_width) if oriented else (header.height, header.width)
    if image.shape[:2] != (h, w):
        raise ImageRejected("unreadable", f"decoded {name} is {image.shape[1]}x{image.shape[0]} "
                                          f"but the header declares {w}x{h}", header)
    hdr = is_hdr(icc, nclx)
    if not hdr:
        image = _to_bgr8(image, header)
    if not oriented:
        image = apply_orientation(image, header.orientation)
    if scale > 1:
        dh, dw = image.shape[:2]
        image = cv2.resize(image, (-(-dw // scale), -(-dh // scale)), interpolation=cv2.INTER_AREA)
    image = _hdr_bgr8(image, header, bits, nclx) if hdr else to_srgb(image, profile_for(icc, nclx))
    return Decoded(image=image, scale=scale, header=header, width=header.display_width,
                   height=header.display_height, thumbnail_sizes=thumbnail_sizes)


def _hdr_bgr8(image: np.ndarray, header: Header, bits: int, nclx: tuple) -> np.ndarray:
    """PQ/HLG n-bit grey, BGR or BGRA -> 8-bit sRGB BGR (alpha composited over white)."""
    if image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ImageRejected("unsupported_format", f"HDR {_NAMES[header.format]} with {image.dtype} "
                                                  f"samples in shape {image.shape} is not supported", header)
    if image.ndim == 2 or image.shape[2] == 1:
        image = np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=2)
    out = hdr_to_srgb(image[..., :3], bits, nclx)
    if image.shape[2] == 4:
        alpha = image[..., 3]
        alpha = to_8bit(alpha, bits) if alpha.dtype == np.uint16 else alpha
        out = _over_white(np.dstack([out, alpha]))
    return out


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def decodes_alike(decoded: Decoded, analysis_short_side: int) -> bool:
    """Whether decode() of the same bytes for `analysis_short_side` returns
    `decoded`'s array: the same source (a HEIC's primary or one of its
    thumbnails) at the same scale. A caller holding one decode then need not
    make the other (for a HEIC without a usable thumbnail, a second full
    libheif decode)."""
    header = decoded.header
    if header.format == "heic":
        thumbnail = _pick_thumbnail(decoded.thumbnail_sizes, header, analysis_short_side)
        if thumbnail != decoded.thumbnail:
            return False
        if thumbnail is not None:
            return True
    if header.format == "jpeg" or header.format in _REDUCED_AFTER_DECODE:
        return jpeg_scale(header.width, header.height, analysis_short_side) == decoded.scale
    return True


def jpeg_scale(width: int, height: int, analysis_short_side: int) -> int:
    """Largest DCT reduction d in 8/4/2/1 whose decoded short side is >= `analysis_short_side`.

    libjpeg rounds reduced sizes up, hence the ceiling division.
    """
    for d in JPEG_SCALES:
        if min(-(-width // d), -(-height // d)) >= analysis_short_side:
            return d
    return 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image stored with EXIF `orientation` (1-8) upright; 1 returns it unchanged."""
    if orientation == 2:
        return cv2.flip(image, 1)
    if orientation == 3:
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(image, 0)
    if orientation == 5:
        return cv2.transpose(image)
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.transpose(image), cv2.ROTATE_180)
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


# Rows converted at a time: the conversions' temporaries (uint16 products for
# alpha) are a few MB instead of several times the whole image.
_STRIP_BYTES = 1 << 22


def _to_bgr8(image: np.ndarray, header: Header) -> np.ndarray:
    """Bring an IMREAD_UNCHANGED/ANYDEPTH result to 3-channel uint8 BGR, strip by strip.

    Deeper samples map to 8 bits one way for every format (to_8bit): n-bit
    code value v becomes round(v * 255 / (2**n - 1)), a linear rescale of code
    values (no tone mapping): 16-bit PNG/TIFF divide by 257, 10-bit HEIC/AVIF
    by 1023/255. (HDR HEIC/AVIF never come here: see _hdr_bgr8.)
    """
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageRejected("unsupported_format", f"{_NAMES[header.format]} with {image.dtype} "
                                                  "samples is not supported", header)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in (1, 3, 4):
        raise ImageRejected("unsupported_format", f"{_NAMES[header.format]} with {channels} channels "
                                                  "is not supported", header)
    if image.dtype == np.uint8 and channels == 3:
        return image
    h, w = image.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, _STRIP_BYTES // max(1, w * channels * image.itemsize))
    for y in range(0, h, step):
        strip = image[y:y + step]
        if strip.dtype == np.uint16:
            # OpenCV returns AVIF's 10/12-bit samples unscaled, PNG/TIFF's as 16-bit.
            strip = to_8bit(strip, header.bit_depth if header.format == "avif" else 16)
        if channels == 1:
            out[y:y + step] = cv2.cvtColor(strip, cv2.COLOR_GRAY2BGR)
        elif channels == 4:
            out[y:y + step] = _over_white(strip)
        else:
            out[y:y + step] = strip
    return out


def to_8bit(image: np.ndarray, bits: int) -> np.ndarray:
    """n-bit code values -> uint8 as round(v * 255 / (2**n - 1)), saturated.

    The one mapping for every deeper-than-8-bit input (16-bit PNG/TIFF, 10/12-bit
    HEIC/AVIF): a linear rescale of code values, no tone mapping, so an image
    saved at two bit depths gives the same 8-bit pixels to within one level.
    HDR HEIC/AVIF (nclx PQ or HLG) is the exception: its code values are
    tone-mapped by transforms.image.colour.hdr_to_srgb instead.
    """
    bits = bits if 8 < bits <= 16 else 16
    return cv2.convertScaleAbs(image, alpha=255 / ((1 << bits) - 1))


def _over_white(bgra: np.ndarray) -> np.ndarray:
    """Composite BGRA over white.

    Transparent pixels often hold black or arbitrary colour; white is what a
    viewer shows behind a cut-out, and black would read as a dark, low-contrast
    image to the exposure features.
    """
    alpha = bgra[..., 3]
    if alpha.min() == 255:
        return cv2.cvtColor(bgra, cv2.COLOR_BGRA2BGR)
    a = alpha[..., None].astype(np.uint16)
    # out = bgr*a/255 + 255*(1 - a/255), rounded, in integers
    return (255 - ((255 - bgra[..., :3]) * a + 127) // 255).astype(np.uint8)


@functools.cache
def _cv2_decodes(fmt: str) -> bool:
    """Whether this OpenCV build round-trips a tiny image through the codec."""
    try:
        ok, buf = cv2.imencode(_OPTIONAL_CODECS[fmt], np.zeros((8, 8, 3), np.uint8))
        return bool(ok) and cv2.imdecode(buf, cv2.IMREAD_COLOR) is not None
    except cv2.error:
        return False


def _unknown_message(data: bytes) -> str:
    head = data[:64].lstrip()
    if head[:1] in (b"<", b"{") and b"\x00" not in head:
        return "not an image: the data looks like HTML/XML/JSON text (an error page?)"
    return "not a recognised image format"


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}".rstrip("0").rstrip(".")
