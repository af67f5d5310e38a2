"""Builders shared by several test files: crafted image bytes, a skin-like
photo, a tiny Keras bundle. Test files import these from here, never from
one another (a test module imported by another is collected twice over in
readers' heads and breaks when it is renamed). Fixtures stay in conftest.py.
"""
from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

PIXELS = np.random.default_rng(7).integers(0, 256, (40, 50, 3), dtype=np.uint8)  # 50 wide, 40 high


# -- encoded images -------------------------------------------------------------------------

def encode(fmt: str, image: Image.Image | None = None, **kw) -> bytes:
    """An image (default: PIXELS, random 50x40 RGB) encoded by Pillow."""
    buf = io.BytesIO()
    (image or Image.fromarray(PIXELS)).save(buf, fmt, **kw)
    return buf.getvalue()


def pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    """img saved by Pillow as fmt ("JPEG", "PNG", "AVIF", ...)."""
    return encode(fmt, img, **kw)


def heic(img: Image.Image, quality: int = 95, **kw) -> bytes:
    """img as HEIC (pillow_heif), e.g. icc_profile=... for a tagged one."""
    import pillow_heif
    buf = io.BytesIO()
    pillow_heif.from_pillow(img).save(buf, format="HEIF", quality=quality, **kw)
    return buf.getvalue()


def exif_bytes(orientation: int) -> bytes:
    """An EXIF block holding only the Orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def tiff_ifd(orientation: int, order: bytes) -> bytes:
    """A minimal TIFF structure with one IFD0 entry: Orientation (SHORT)."""
    e = "<" if order == b"II" else ">"
    magic = struct.pack(e + "H", 42)
    entry = struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return order + magic + struct.pack(e + "I", 8) + struct.pack(e + "H", 1) + entry + b"\0\0\0\0"


def with_segment(jpeg: bytes, marker: int, body: bytes) -> bytes:
    """Insert a marker segment right after SOI."""
    return jpeg[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def crafted_png(width: int, height: int) -> bytes:
    """A PNG header declaring any size, with no pixel data behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b""))
            + png_chunk(b"IEND", b""))


def crafted_jpeg(width: int, height: int) -> bytes:
    """A JPEG whose frame header declares any size, with no real scan data."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sos = b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    return (b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof
            + b"\xff\xda" + struct.pack(">H", len(sos) + 2) + sos + b"\x00" * 16 + b"\xff\xd9")


def with_repeated_scan(progressive_jpeg: bytes, copies: int) -> bytes:
    """The progressive JPEG with its smallest scan (marker, header and coded
    data) repeated `copies` more times before EOI: a valid-looking file whose
    decode makes that many extra passes (the scan-count exploit)."""
    i, scans = 2, []
    while progressive_jpeg[i + 1] != 0xD9:
        length = struct.unpack(">H", progressive_jpeg[i + 2:i + 4])[0]
        end = i + 2 + length
        if progressive_jpeg[i + 1] == 0xDA:
            while True:  # the coded data runs to the next marker that is not FF00 or RSTn
                end = progressive_jpeg.index(b"\xff", end)
                if progressive_jpeg[end + 1] == 0 or 0xD0 <= progressive_jpeg[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
            scans.append(progressive_jpeg[i:end])
        i = end
    assert scans, "not a JPEG with scans"
    return progressive_jpeg[:i] + min(scans, key=len) * copies + progressive_jpeg[i:]


def isobmff(brand: bytes, compatible: list[bytes], ispe: list[tuple[int, int]] = ()) -> bytes:
    """An ISOBMFF (HEIC/AVIF) skeleton: ftyp, meta with ispe sizes, empty mdat."""
    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload) + 8) + kind + payload

    ftyp = box(b"ftyp", brand + b"\0\0\0\0" + b"".join(compatible))
    props = b"".join(box(b"ispe", b"\0\0\0\0" + struct.pack(">II", w, h)) for w, h in ispe)
    meta = box(b"meta", b"\0\0\0\0" + box(b"hdlr", b"\0" * 24) + box(b"iprp", box(b"ipco", props)))
    return ftyp + meta + box(b"mdat", b"\0" * 32)


def skin_photo(w: int = 400, h: int = 300) -> Image.Image:
    """A noisy skin-tone frame (Monk ~6, RGB) with a horizontal gradient: decodes as a photo."""
    rng = np.random.default_rng(4)
    base = np.array([150, 110, 90], np.float32)
    img = base + rng.normal(0, 14, (h, w, 3)) + np.linspace(-20, 20, w)[None, :, None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


# -- models ---------------------------------------------------------------------------------

def tiny_bundle(out, vocabulary=("a", "b", "c"), version: str = "tiny", image_size: int = 32, seed: int = 3):
    """A fixed-weight Keras bundle (uint8 image_size^2 x 3 in, softmax over the
    vocabulary out) written to `out` by schemas.model_bundle; returns the model."""
    import keras
    from schemas.model_bundle import write_bundle
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255.0)(keras.ops.cast(inputs, "float32"))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(x))
    model = keras.Model(inputs, keras.layers.Dense(len(vocabulary), activation="softmax")(x))
    write_bundle(str(out), model, {"label_vocabulary": list(vocabulary), "version": version,
                                   "image_size": image_size})
    return model


def returns_without_a_writer(call, fifo, seconds: float = 60.0):
    """call()'s result, failing the test if it is still blocked on opening the
    FIFO `fifo` (waiting for a writer) after `seconds`; the FIFO is then
    opened for writing so the blocked reader and the test run can go on."""
    import threading

    import pytest
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("value", call()), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        with open(fifo, "wb"):
            pass
        worker.join(seconds)
        pytest.fail(f"still waiting for a writer on {fifo} after {seconds:.0f} s")
    return result["value"]


def unreadable_file(kind: str, path):
    """`path` made into a file an operator may name by mistake (a key of UNREADABLE)."""
    if kind == "missing":
        return path
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:  # a spreadsheet saved as UTF-16
        path.write_bytes("uri,label\n/a.jpg,1\n".encode("utf-16"))
    return path


# What every job says of each (flag: "--manifest", "policy file", ...).
UNREADABLE = {"missing": "cannot read {flag} {path}: no such file",
              "fifo": "cannot read {flag} {path}: a FIFO, not a regular file (never read)",
              "folder": "cannot read {flag} {path}: a directory, not a regular file (never read)",
              "utf16": "{flag} {path} is not UTF-8 text (byte 0: invalid start byte); save it as UTF-8"}
