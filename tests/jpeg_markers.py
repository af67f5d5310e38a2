"""A small, independent JPEG marker walker for the privacy and fuzz tests.

Walks a JPEG stream from SOI through the marker segments up to the first SOS
(start of scan), which is where every metadata segment (APP0-APP15, COM) lives.
It is deliberately written from the JPEG spec (ITU T.81 B.1.1) rather than
reusing transforms/image/header.py, so a bug there cannot hide a leak here.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
APP1, APP13 = 0xE1, 0xED
EXIF_SIGNATURE = b"Exif\x00\x00"
XMP_SIGNATURE = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_EXTENSION_SIGNATURE = b"http://ns.adobe.com/xmp/extension/\x00"
# Markers that carry no length field: TEM and RST0-7 (SOI/EOI handled apart).
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


@dataclass(frozen=True)
class Segment:
    marker: int        # the byte after 0xFF, e.g. 0xE1 for APP1
    offset: int        # offset of the 0xFF of the marker
    payload: bytes     # the segment's data after the 2-byte length


class NotJpeg(ValueError):
    pass


def segments(data: bytes) -> list[Segment]:
    """The marker segments between SOI and the first SOS (SOS included).

    Raises NotJpeg when the stream does not start with SOI or a segment runs
    past the end of the data (a writer of ours must never produce either).
    """
    if data[:2] != b"\xff\xd8":
        raise NotJpeg(f"no SOI marker: starts with {data[:4].hex()}")
    out: list[Segment] = []
    i = 2
    while i < len(data):
        if data[i] != 0xFF:
            raise NotJpeg(f"expected a marker at offset {i}, found 0x{data[i]:02x}")
        while i < len(data) and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= len(data):
            break
        marker = data[i]
        start = i - 1
        i += 1
        if marker in _STANDALONE:
            continue
        if marker == EOI:
            break
        if i + 2 > len(data):
            raise NotJpeg(f"segment 0x{marker:02x} at {start} has no length")
        (length,) = struct.unpack(">H", data[i:i + 2])
        if length < 2 or i + length > len(data):
            raise NotJpeg(f"segment 0x{marker:02x} at {start} runs past the end")
        out.append(Segment(marker, start, data[i + 2:i + length]))
        i += length
        if marker == SOS:
            break
    return out


def metadata_problems(data: bytes) -> list[str]:
    """What, if anything, in a JPEG's header would carry upload metadata.

    Flags any APP1 (EXIF and XMP both live in APP1; our writers emit none),
    any APP13 (Photoshop/IPTC), and the EXIF/XMP signatures in any segment.
    An empty list means clean.
    """
    problems = []
    for seg in segments(data):
        name = f"0xFF{seg.marker:02X} at offset {seg.offset}"
        if seg.marker == APP1:
            if seg.payload.startswith(EXIF_SIGNATURE):
                problems.append(f"EXIF APP1 segment {name}")
            elif seg.payload.startswith((XMP_SIGNATURE, XMP_EXTENSION_SIGNATURE)):
                problems.append(f"XMP APP1 segment {name}")
            else:
                problems.append(f"unexpected APP1 segment {name}")
        elif seg.marker == APP13:
            problems.append(f"APP13 (Photoshop/IPTC) segment {name}")
        elif EXIF_SIGNATURE in seg.payload or XMP_SIGNATURE in seg.payload:
            problems.append(f"EXIF/XMP signature inside segment {name}")
    return problems


def pillow_exif(data: bytes) -> dict:
    """Pillow's reading of the image's EXIF (empty dict when there is none)."""
    import io

    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        exif = dict(im.getexif())
        info_exif = im.info.get("exif")
        xmp = im.info.get("xmp")
    if info_exif:
        exif["__info_exif__"] = info_exif
    if xmp:
        exif["__xmp__"] = xmp
    return exif
