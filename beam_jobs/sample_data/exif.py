"""A minimal, hand-written EXIF (APP1) segment: camera, time, orientation, GPS.

Written with ``struct`` (little-endian TIFF) so generation needs no imaging
library at runtime. The GPS block is there on purpose: the pipeline must
strip EXIF before anything is written for training or scoring.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

_ASCII, _SHORT, _LONG, _RATIONAL, _BYTE = 2, 3, 4, 5, 1
_TAG_MAKE, _TAG_MODEL, _TAG_ORIENTATION, _TAG_DATETIME, _TAG_GPS = 0x010F, 0x0110, 0x0112, 0x0132, 0x8825

_CAMERAS = (
    ("Apple", "iPhone 13"),
    ("Apple", "iPhone 12 mini"),
    ("samsung", "SM-G991B"),
    ("Google", "Pixel 7"),
    ("Xiaomi", "Redmi Note 10"),
    ("motorola", "moto g(60)"),
)


@dataclass(frozen=True)
class CameraTags:
    """The metadata a phone writes: make, model, capture time, position."""

    make: str
    model: str
    datetime: str  # "YYYY:MM:DD HH:MM:SS"
    latitude: float
    longitude: float


def random_camera_tags(rng: np.random.Generator) -> CameraTags:
    """Draw a plausible phone, a 2023 capture time and a random position."""
    make, model = _CAMERAS[int(rng.integers(len(_CAMERAS)))]
    day = int(rng.integers(0, 365))
    month, mday = 1 + day // 31 % 12, 1 + day % 28
    stamp = f"2023:{month:02d}:{mday:02d} {int(rng.integers(7, 23)):02d}:{int(rng.integers(60)):02d}:{int(rng.integers(60)):02d}"
    return CameraTags(make, model, stamp, float(rng.uniform(-45, 60)), float(rng.uniform(-125, 150)))


def exif_segment(tags: CameraTags, orientation: int) -> bytes:
    """Return a complete APP1 segment (marker, length, "Exif\\0\\0", TIFF) with
    IFD0 {Make, Model, Orientation, DateTime, GPSInfo} and a GPS IFD."""
    ifd0_entries = 5
    data_start = 8 + 2 + 12 * ifd0_entries + 4
    data = bytearray()

    def put(blob: bytes) -> int:
        offset = data_start + len(data)
        data.extend(blob + b"\0" * (len(blob) % 2))  # keep offsets word-aligned
        return offset

    make = tags.make.encode("ascii") + b"\0"
    model = tags.model.encode("ascii") + b"\0"
    when = tags.datetime.encode("ascii") + b"\0"
    entries = [
        _entry(_TAG_MAKE, _ASCII, len(make), put(make)),
        _entry(_TAG_MODEL, _ASCII, len(model), put(model)),
        struct.pack("<HHIHH", _TAG_ORIENTATION, _SHORT, 1, orientation, 0),
        _entry(_TAG_DATETIME, _ASCII, len(when), put(when)),
    ]
    gps_offset = data_start + len(data)
    entries.append(_entry(_TAG_GPS, _LONG, 1, gps_offset))
    data.extend(_gps_ifd(gps_offset, tags.latitude, tags.longitude))

    ifd0 = struct.pack("<H", ifd0_entries) + b"".join(entries) + struct.pack("<I", 0)
    tiff = b"II" + struct.pack("<HI", 42, 8) + ifd0 + bytes(data)
    payload = b"Exif\0\0" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def insert_after_soi(jpeg: bytes, segment: bytes) -> bytes:
    """Insert a marker segment right after the JPEG start-of-image marker."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream (no SOI marker)")
    return jpeg[:2] + segment + jpeg[2:]


def _entry(tag: int, kind: int, count: int, value_offset: int) -> bytes:
    return struct.pack("<HHII", tag, kind, count, value_offset)


def _gps_ifd(offset: int, latitude: float, longitude: float) -> bytes:
    """GPS IFD at TIFF offset ``offset``: version, lat/lon refs and D/M/S rationals."""
    n = 5
    values_at = offset + 2 + 12 * n + 4
    lat_ref = b"N\0" if latitude >= 0 else b"S\0"
    lon_ref = b"E\0" if longitude >= 0 else b"W\0"
    entries = [
        struct.pack("<HHI4B", 0x0000, _BYTE, 4, 2, 3, 0, 0),  # GPSVersionID 2.3.0.0
        struct.pack("<HHI2s2x", 0x0001, _ASCII, 2, lat_ref),
        _entry(0x0002, _RATIONAL, 3, values_at),
        struct.pack("<HHI2s2x", 0x0003, _ASCII, 2, lon_ref),
        _entry(0x0004, _RATIONAL, 3, values_at + 24),
    ]
    return (
        struct.pack("<H", n) + b"".join(entries) + struct.pack("<I", 0)
        + _dms_rationals(abs(latitude)) + _dms_rationals(abs(longitude))
    )


def _dms_rationals(degrees: float) -> bytes:
    """Degrees, minutes, seconds (to 1/100 s) as three unsigned rationals."""
    d = int(degrees)
    m = int((degrees - d) * 60)
    s100 = int(round(((degrees - d) * 60 - m) * 6000))
    return struct.pack("<6I", d, 1, m, 1, s100, 100)
