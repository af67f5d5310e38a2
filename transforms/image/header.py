"""Read an image's format, size and orientation from its header, without decoding.

`read_header` looks only at container and marker structure (a few hundred bytes
for most files, plus one backward search for the JPEG end marker), so it is
cheap enough to run on every input before deciding whether and how to decode
it. It never raises: unrecognised data gives ``format="unknown"`` and damaged
headers give zero dimensions, which the caller turns into a rejection.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

FORMATS = ("jpeg", "png", "gif", "webp", "bmp", "tiff", "heic", "avif", "unknown")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_PREFIX = b"Exif\x00\x00"
# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# Markers without a length field: TEM and RST0-7.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# The DIB header length after "BM" tells a real bitmap from text starting "BM".
_BMP_DIB_SIZES = frozenset(struct.pack("<I", n) for n in (12, 40, 52, 56, 64, 108, 124))
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx",
                          b"hevm", b"hevs", b"mif1", b"msf1"})
_PNG_COMPONENTS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_TIFF_TAGS = {0x0100: "width", 0x0101: "height", 0x0102: "bit_depth",
              0x0112: "orientation", 0x8769: "exif_ifd", 0x8773: "icc"}
_ICC_MARKER = b"ICC_PROFILE\x00"
# An ICC profile larger than this is not a display profile (those are 0.5-4 KB;
# LUT-based printer profiles reach ~1 MB): ignored rather than inflated.
MAX_ICC_BYTES = 4 << 20
# Caps on header walks so that crafted files cannot make parsing slow.
_MAX_CHUNKS = 1024
_MAX_GIF_BLOCKS = 1 << 16


@dataclass(frozen=True)
class Header:
    """What the header says about an image (zero or default when not known).

    ``width``/``height`` are as stored; ``display_width``/``display_height`` are
    after the EXIF orientation (swapped for orientations 5-8). ``progressive``
    and ``has_eoi`` are JPEG-only; for HEIC/AVIF the size, ``orientation`` (from
    the irot/imir transforms, as the equivalent EXIF code), ``bit_depth`` and
    colour are those of the primary item; ``components`` is known for JPEG (4 means
    CMYK/YCCK) and PNG; ``color_type`` is PNG-only; ``sampling`` is JPEG's
    (horizontal, vertical) sampling factor per component (it sizes the
    coefficient buffer libjpeg keeps for a progressive image). ``has_eoi`` means an
    end-of-image marker follows the first scan, so trailing padding or appended
    data (motion photos) is fine and truncation is not.
    """

    format: str
    width: int = 0
    height: int = 0
    orientation: int = 1
    progressive: bool = False
    components: int = 0
    bit_depth: int = 0
    color_type: int | None = None
    has_alpha: bool = False
    animated: bool = False
    has_eoi: bool = False
    exif_present: bool = False
    sampling: tuple = ()
    # Embedded colour description: ICC profile bytes, or for HEIF/AVIF an nclx
    # (colour_primaries, transfer_characteristics, matrix_coefficients,
    # full_range); srgb_chunk is PNG's sRGB chunk. None/False: not declared.
    icc_profile: bytes | None = field(default=None, repr=False)
    nclx: tuple[int, int, int, bool] | None = None
    srgb_chunk: bool = False
    # Pixels the decoder allocates when more than width x height: a HEIF's
    # coded extent (ispe) before its clean-aperture crop. 0 = width x height.
    coded_pixels: int = 0
    display_width: int = field(init=False)
    display_height: int = field(init=False)

    def __post_init__(self) -> None:
        swap = self.orientation >= 5
        object.__setattr__(self, "display_width", self.height if swap else self.width)
        object.__setattr__(self, "display_height", self.width if swap else self.height)


def read_header(data: bytes) -> Header:
    """Parse the header of an encoded image; never decodes pixels, never raises."""
    fmt = _sniff(data)
    parser = _PARSERS.get(fmt)
    if parser is None:
        return Header(format=fmt)
    try:
        return Header(format=fmt, **parser(data))
    except (struct.error, IndexError):
        # Structure cut short where the parser needed it: known format, no size.
        return Header(format=fmt)


def _sniff(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM" and data[14:18] in _BMP_DIB_SIZES:
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[4:8] == b"ftyp":
        return _ftyp_format(data)
    return "unknown"


def _ftyp_format(data: bytes) -> str:
    size = _u32be(data, 0)
    end = min(size, len(data))
    brands = {data[8:12]} | {data[i:i + 4] for i in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _HEIC_BRANDS:
        return "heic"
    return "unknown"


def _u16be(b: bytes, i: int) -> int:
    return (b[i] << 8) | b[i + 1]


def _u32be(b: bytes, i: int) -> int:
    return struct.unpack_from(">I", b, i)[0]


def _valid_orientation(value: int | None) -> int:
    return value if value is not None and 1 <= value <= 8 else 1


def _tiff_ifd0(data: bytes, start: int, end: int) -> dict:
    """Selected IFD0 tags of the TIFF structure in data[start:end], either byte order."""
    order = data[start:start + 2]
    if order not in (b"II", b"MM") or start + 8 > end:
        return {}
    e = "<" if order == b"II" else ">"
    ifd = start + struct.unpack_from(e + "I", data, start + 4)[0]
    if ifd + 2 > end:
        return {}
    count = struct.unpack_from(e + "H", data, ifd)[0]
    tags = {}
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, end - 11), 12):
        tag, typ, num = struct.unpack_from(e + "HHI", data, entry)
        name = _TIFF_TAGS.get(tag)
        if name is None:
            continue
        if typ == 3:  # SHORT: inline when it fits in 4 bytes, else at an offset
            at = entry + 8 if num <= 2 else start + struct.unpack_from(e + "I", data, entry + 8)[0]
            if at + 2 <= end:
                tags[name] = struct.unpack_from(e + "H", data, at)[0]
        elif typ in (4, 13):  # LONG or IFD
            tags[name] = struct.unpack_from(e + "I", data, entry + 8)[0]
        elif typ == 7 and name == "icc" and num > 4:  # UNDEFINED bytes at an offset
            at = start + struct.unpack_from(e + "I", data, entry + 8)[0]
            if num <= MAX_ICC_BYTES and at + num <= end:
                tags[name] = bytes(data[at:at + num])
    return tags


def _exif_fields(data: bytes, start: int, end: int) -> dict:
    tags = _tiff_ifd0(data, start, min(end, len(data)))
    return {"exif_present": True, "orientation": _valid_orientation(tags.get("orientation"))}


def _jpeg(data: bytes) -> dict:
    out: dict = {}
    icc_parts: dict[int, bytes] = {}
    n = len(data)
    pos = 2
    while pos < n:
        # Skip anything up to a marker prefix, then any 0xFF fill bytes.
        if data[pos] != 0xFF:
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos + 3 > n:  # need the marker byte and a 2-byte length
            break
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD8, 0xD9):
            break
        seg_len = _u16be(data, pos)
        if seg_len < 2:
            break
        body, end = pos + 2, pos + seg_len
        if marker == 0xE1 and "exif_present" not in out and data.startswith(_EXIF_PREFIX, body):
            out.update(_exif_fields(data, body + len(_EXIF_PREFIX), end))
        elif marker == 0xE2 and data.startswith(_ICC_MARKER, body) and end <= n:
            # A profile over 64 KB is split across APP2 segments numbered 1..count.
            icc_parts[data[body + 12]] = data[body + 14:end]
        elif marker in _JPEG_SOF and "width" not in out and body + 6 <= n:
            out["bit_depth"] = data[body]
            out["height"] = _u16be(data, body + 1)
            out["width"] = _u16be(data, body + 3)
            out["components"] = data[body + 5]
            out["progressive"] = marker in _JPEG_PROGRESSIVE_SOF
            factors = data[body + 6:min(end, n)][1::3][:out["components"]]
            out["sampling"] = tuple((f >> 4, f & 15) for f in factors)
        elif marker == 0xDA:
            # Entropy-coded data never contains FF D9 (0xFF is stuffed as FF 00),
            # so any FF D9 after the first scan header is a real end-of-image.
            # rfind returns at once for the usual file that ends with it.
            out["has_eoi"] = end <= n and data.rfind(b"\xff\xd9", end) >= 0
            break
        pos = end
    if icc_parts:
        icc = b"".join(icc_parts[k] for k in sorted(icc_parts))
        if len(icc) <= MAX_ICC_BYTES:
            out["icc_profile"] = icc
    return out


def _png(data: bytes) -> dict:
    if data[12:16] != b"IHDR":
        return {}
    width, height, depth, color_type = struct.unpack_from(">IIBB", data, 16)
    out = {"width": width, "height": height, "bit_depth": depth, "color_type": color_type,
           "components": _PNG_COMPONENTS.get(color_type, 0), "has_alpha": color_type in (4, 6)}
    # acTL, tRNS and eXIf all precede the first IDAT, so the walk stops there.
    pos = 8
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > len(data):
            break
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"acTL":
            out["animated"] = True
        elif kind == b"tRNS":
            out["has_alpha"] = True
        elif kind == b"eXIf":
            out.update(_exif_fields(data, pos + 8, pos + 8 + length))
        elif kind == b"sRGB":
            out["srgb_chunk"] = True
        elif kind == b"iCCP":
            out.update(_png_icc(data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def _png_icc(body: bytes) -> dict:
    """iCCP: name, NUL, method 0, zlib stream; inflated with a size cap (zip bombs)."""
    name_end = body.find(b"\x00", 0, 80)
    if name_end < 0:
        return {}
    try:
        inflater = zlib.decompressobj()
        icc = inflater.decompress(body[name_end + 2:], MAX_ICC_BYTES)
    except zlib.error:
        return {}
    return {"icc_profile": icc} if icc and not inflater.unconsumed_tail else {}


def _gif(data: bytes) -> dict:
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    return {"width": width, "height": height, "bit_depth": 8,
            "animated": _gif_frames(data, flags) > 1}


def _gif_frames(data: bytes, screen_flags: int) -> int:
    """Count image descriptors, stopping at two or when the walk budget runs out."""
    n = len(data)
    pos = 13 + (3 << ((screen_flags & 7) + 1) if screen_flags & 0x80 else 0)
    frames = 0
    budget = _MAX_GIF_BLOCKS
    while pos < n and frames < 2 and budget > 0:
        kind = data[pos]
        if kind == 0x2C:  # image descriptor, optional local colour table, LZW size byte
            frames += 1
            if pos + 10 >= n:
                break
            local = data[pos + 9]
            pos += 11 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
        elif kind == 0x21:  # extension introducer and label
            pos += 2
        else:  # trailer (0x3B) or garbage
            break
        while pos < n and data[pos] and budget > 0:  # sub-blocks up to a 0 terminator
            pos += data[pos] + 1
            budget -= 1
        pos += 1
    return frames


def _webp(data: bytes) -> dict:
    kind = data[12:16]
    if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return {"width": width & 0x3FFF, "height": height & 0x3FFF, "bit_depth": 8}
    if kind == b"VP8L" and data[20] == 0x2F:
        bits = struct.unpack_from("<I", data, 21)[0]
        return {"width": (bits & 0x3FFF) + 1, "height": ((bits >> 14) & 0x3FFF) + 1,
                "bit_depth": 8, "has_alpha": bool(bits >> 28 & 1)}
    if kind != b"VP8X":
        return {}
    flags = data[20]
    out = {"width": int.from_bytes(data[24:27], "little") + 1,
           "height": int.from_bytes(data[27:30], "little") + 1,
           "bit_depth": 8, "has_alpha": bool(flags & 0x10), "animated": bool(flags & 0x02)}
    if flags & 0x28:
        out.update(_webp_exif(data))
    return out


def _webp_exif(data: bytes) -> dict:
    """Find the EXIF and ICCP chunks by hopping over RIFF chunk headers."""
    pos = 12
    out: dict = {}
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > len(data):
            break
        kind, length = struct.unpack_from("<4sI", data, pos)
        if kind == b"ICCP" and length <= MAX_ICC_BYTES:
            out["icc_profile"] = bytes(data[pos + 8:pos + 8 + length])
        elif kind == b"EXIF":
            start = pos + 8
            # Some writers keep the JPEG-style "Exif\0\0" prefix inside the chunk.
            if data.startswith(_EXIF_PREFIX, start):
                start += len(_EXIF_PREFIX)
            out.update(_exif_fields(data, start, pos + 8 + length))
        pos += 8 + length + (length & 1)
    return out


def _bmp(data: bytes) -> dict:
    if data[14] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height, _, bpp = struct.unpack_from("<HHHH", data, 18)
    else:
        width, height, _, bpp = struct.unpack_from("<iiHH", data, 18)
    # A negative height means rows are stored top-down.
    return {"width": max(width, 0), "height": abs(height), "bit_depth": bpp}


def _tiff(data: bytes) -> dict:
    tags = _tiff_ifd0(data, 0, len(data))
    return {"width": tags.get("width", 0), "height": tags.get("height", 0),
            "bit_depth": tags.get("bit_depth", 0),
            "orientation": _valid_orientation(tags.get("orientation")),
            "exif_present": "exif_ifd" in tags, "icc_profile": tags.get("icc")}


def _isobmff(data: bytes) -> dict:
    """Size, orientation, bit depth and colour of the primary item (meta/pitm).

    Properties (ipco) are tied to items by ipma. A HEIF may hold thumbnails,
    depth maps and other images beside the primary; only the primary is
    decoded, so its declared size is what the pixel-bomb check needs. Files
    without a usable pitm/ipma fall back to the largest ispe (a safe bound).
    """
    for meta, meta_end in _boxes(data, 0, len(data), b"meta"):
        meta += 4  # meta is a full box
        primary = None
        for pitm, _ in _boxes(data, meta, meta_end, b"pitm"):
            primary = _u32be(data, pitm + 4) if data[pitm] else _u16be(data, pitm + 4)
        props: list[tuple[bytes, int, int]] = []
        assoc: dict[int, list[int]] = {}
        for iprp, iprp_end in _boxes(data, meta, meta_end, b"iprp"):
            for ipco, ipco_end in _boxes(data, iprp, iprp_end, b"ipco"):
                props = list(_children(data, ipco, ipco_end))
            for ipma, _ in _boxes(data, iprp, iprp_end, b"ipma"):
                assoc = _ipma(data, ipma)
        if not props:
            continue
        if primary in assoc:
            fields = _item_fields(data, [props[i - 1] for i in assoc[primary] if 0 < i <= len(props)])
            # A grid (or overlay) primary is decoded as its tiles, each at its own ispe,
            # whatever the primary's ispe says: a 24 KB file whose grid repeated one
            # 1024 px tile 576 times declared 640x480 and took 0.9 GB to decode.
            tiles = 0
            for iref, iref_end in _boxes(data, meta, meta_end, b"iref"):
                for tile in _derived_from(data, iref, iref_end, primary):
                    tiles += _coded(_item_fields(data, [props[i - 1] for i in assoc.get(tile, ())
                                                        if 0 < i <= len(props)]))
            if tiles > _coded(fields):
                fields["coded_pixels"] = tiles
            return fields
        sizes = [struct.unpack_from(">II", data, p + 4) for k, p, _ in props if k == b"ispe"]
        best = max(sizes, key=lambda wh: wh[0] * wh[1], default=(0, 0))
        return {"width": best[0], "height": best[1]}
    return {}


def _coded(fields: dict) -> int:
    """Pixels an item decodes to: its coded extent, else its ispe."""
    return fields.get("coded_pixels") or fields.get("width", 0) * fields.get("height", 0)


def _derived_from(data: bytes, pos: int, end: int, item) -> list[int]:
    """The items `item` is derived from ('dimg' references in the iref box at
    data[pos:end]: a grid's tiles, repeats included), in order."""
    version, out = data[pos], []
    width = 4 if version else 2
    for kind, start, stop in _children(data, pos + 4, end):
        if kind != b"dimg" or start + 2 * width > stop:
            continue
        source = int.from_bytes(data[start:start + width], "big")
        count = _u16be(data, start + width)
        ids = start + width + 2
        if source == item:
            out += [int.from_bytes(data[ids + k * width:ids + (k + 1) * width], "big")
                    for k in range(min(count, (stop - ids) // width))]
    return out


def _ipma(data: bytes, pos: int) -> dict[int, list[int]]:
    """Item id -> 1-based ipco indices, in association order."""
    version, flags = data[pos], data[pos + 3]
    count = _u32be(data, pos + 4)
    pos += 8
    out: dict[int, list[int]] = {}
    for _ in range(min(count, _MAX_CHUNKS)):
        if version < 1:
            item, pos = _u16be(data, pos), pos + 2
        else:
            item, pos = _u32be(data, pos), pos + 4
        n, pos = data[pos], pos + 1
        indices = []
        for _ in range(n):
            if flags & 1:
                indices.append(_u16be(data, pos) & 0x7FFF)
                pos += 2
            else:
                indices.append(data[pos] & 0x7F)
                pos += 1
        out[item] = indices
    return out


def _item_fields(data: bytes, props: list[tuple[bytes, int, int]]) -> dict:
    out: dict = {}
    ops = []
    for kind, start, end in props:
        if kind == b"ispe":
            out["width"], out["height"] = struct.unpack_from(">II", data, start + 4)
        elif kind == b"clap" and start + 16 <= end:
            # Clean aperture: HEVC codes whole 8/64 px blocks, the crop says what is shown.
            wn, wd, hn, hd = struct.unpack_from(">IIII", data, start)
            if wd and hd and 0 < wn // wd and 0 < hn // hd:
                out["crop"] = (round(wn / wd), round(hn / hd))
        elif kind == b"pixi" and start + 5 <= end and data[start + 4]:  # full box, count, depths
            out["bit_depth"] = data[start + 5]
        elif kind == b"irot":
            ops.append(("rot", data[start] & 3))
        elif kind == b"imir":
            ops.append(("mir", data[start] & 1))
        elif kind == b"colr" and "icc_profile" not in out and "nclx" not in out:
            colour_type = data[start:start + 4]
            if colour_type == b"nclx" and start + 11 <= end:
                p, t, m = struct.unpack_from(">HHH", data, start + 4)
                out["nclx"] = (p, t, m, bool(data[start + 10] & 0x80))
            elif colour_type in (b"prof", b"rICC") and end - start - 4 <= MAX_ICC_BYTES:
                out["icc_profile"] = bytes(data[start + 4:end])
    crop = out.pop("crop", None)
    if crop and "width" in out:
        out["coded_pixels"] = out["width"] * out["height"]
        out["width"], out["height"] = min(crop[0], out["width"]), min(crop[1], out["height"])
    out["orientation"] = _heif_orientation(ops)
    return out


def _heif_orientation(ops: list[tuple[str, int]]) -> int:
    """The EXIF orientation equivalent to HEIF's irot/imir, applied in order.

    irot is an anticlockwise rotation by 90 degrees x n; imir axis 0 mirrors
    left-right, axis 1 top-bottom. The result is found by applying the same
    operations to a 2x2 marker grid and matching the EXIF table.
    """
    grid = ((0, 1), (2, 3))
    for op, arg in ops:
        if op == "rot":
            for _ in range(arg):  # one anticlockwise quarter turn
                grid = tuple(zip(*grid))[::-1]
        elif arg == 0:
            grid = tuple(row[::-1] for row in grid)
        else:
            grid = grid[::-1]
    return _EXIF_GRIDS.get(tuple(map(tuple, grid)), 1)


# What each EXIF orientation's correction does to the stored 2x2 grid ((0, 1), (2, 3)).
_EXIF_GRIDS = {((0, 1), (2, 3)): 1, ((1, 0), (3, 2)): 2, ((3, 2), (1, 0)): 3,
               ((2, 3), (0, 1)): 4, ((0, 2), (1, 3)): 5, ((2, 0), (3, 1)): 6,
               ((3, 1), (2, 0)): 7, ((1, 3), (0, 2)): 8}


def _children(data: bytes, start: int, end: int):
    """Yield (type, payload start, payload end) of every child box in data[start:end]."""
    pos = start
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > end:
            return
        size, box = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield box, pos + header, min(pos + size, end)
        pos += size


def _boxes(data: bytes, start: int, end: int, kind: bytes):
    """Yield (payload start, payload end) of each child box of type `kind` in data[start:end]."""
    for box, payload_start, payload_end in _children(data, start, end):
        if box == kind:
            yield payload_start, payload_end


_PARSERS = {"jpeg": _jpeg, "png": _png, "gif": _gif, "webp": _webp, "bmp": _bmp,
            "tiff": _tiff, "heic": _isobmff, "avif": _isobmff}
