"""decode: one decode per image, at the smallest DCT scale, upright, 8-bit BGR, or a reason."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from helpers import crafted_jpeg, crafted_png, encode, exif_bytes, isobmff, with_repeated_scan

from transforms.image import decode as decode_module
from transforms.image.decode import Decoded, ImageRejected, apply_orientation, decode, jpeg_scale

RNG = np.random.default_rng(3)
REPO = Path(__file__).resolve().parents[1]


def photo(width: int, height: int) -> np.ndarray:
    """A smooth RGB test picture with mild noise and a red block marking its top-left corner."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.dstack([128 + 100 * np.sin(x / 97), 128 + 100 * np.cos(y / 71),
                     (x + y) * 255 / (width + height)])
    rgb += RNG.normal(0, 4, rgb.shape)
    rgb[: height // 8, : width // 8] = (230, 20, 20)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def rejected(data: bytes, **kw) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        decode(data, **kw)
    return info.value


def bgr_of(rgb) -> np.ndarray:
    return np.asarray(rgb, dtype=np.uint8)[..., ::-1]


# --- refusals -------------------------------------------------------------------------------

def test_empty():
    e = rejected(b"")
    assert e.reason == "empty" and e.header is None


def test_html_named_jpg_is_unsupported():
    e = rejected(b"<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>")
    assert e.reason == "unsupported_format" and "HTML" in str(e)
    assert e.header.format == "unknown"


def test_header_only_heic_is_unreadable():
    # HEIC is decoded (libheif); a file with a header and no image data is not.
    e = rejected(isobmff(b"heic", [b"mif1", b"heic"], ispe=[(4032, 3024)]))
    assert e.reason == "unreadable" and e.header.format == "heic"


def test_truncated_jpeg_is_unreadable():
    data = encode("JPEG", Image.fromarray(photo(320, 240)))
    e = rejected(data[: len(data) * 2 // 3])
    assert (e.reason, str(e)) == ("unreadable", "truncated JPEG: no end-of-image marker")


def test_jpeg_without_frame_header_is_unreadable():
    e = rejected(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    assert e.reason == "unreadable" and "no image size" in str(e)


@pytest.mark.parametrize("data, message", [
    (crafted_png(100_000, 100_000), "declared 100000x100000 = 10000 MP exceeds max_pixels 100 MP"),
    (crafted_jpeg(60_000, 60_000), "declared 60000x60000 = 3600 MP exceeds max_pixels 100 MP"),
])
def test_pixel_bombs_are_refused_before_decoding(data, message, monkeypatch):
    def no_decode(*args):
        raise AssertionError("decoded a pixel bomb")

    monkeypatch.setattr(decode_module.cv2, "imdecode", no_decode)
    start = time.perf_counter()
    e = rejected(data)
    assert time.perf_counter() - start < 0.05
    assert (e.reason, str(e)) == ("too_large", message)


def test_a_progressive_jpeg_with_more_scans_than_any_encoder_writes_is_refused_before_decoding(monkeypatch):
    """Each scan is a pass over every block, and nothing else bounds their
    number: a small file can cost seconds (see MAX_JPEG_SCANS)."""
    data = encode("JPEG", Image.fromarray(photo(400, 300)), progressive=True, quality=90)
    assert decode(with_repeated_scan(data, 200)).image.shape == (300, 400, 3)  # odd but bounded: decoded

    def no_decode(*args):
        raise AssertionError("decoded a scan bomb")
    monkeypatch.setattr(decode_module.cv2, "imdecode", no_decode)
    e = rejected(with_repeated_scan(data, decode_module.MAX_JPEG_SCANS))
    assert e.reason == "too_large" and f"over {decode_module.MAX_JPEG_SCANS}" in str(e), str(e)


def test_max_pixels_is_the_callers_limit():
    data = encode("PNG", Image.fromarray(photo(100, 80)))
    assert rejected(data, max_pixels=7999).reason == "too_large"
    assert decode(data, max_pixels=8000).image.shape == (80, 100, 3)


def test_corrupt_png_data_is_unreadable():
    data = bytearray(encode("PNG", Image.fromarray(photo(64, 48))))
    idat = data.find(b"IDAT")
    data[idat + 10: idat + 60] = bytes(50)
    e = rejected(bytes(data))
    assert e.reason == "unreadable" and "PNG" in str(e)


def test_opencv_errors_become_unreadable(monkeypatch):
    def failing(*args):
        raise cv2.error("simulated decoder failure")

    monkeypatch.setattr(decode_module.cv2, "imdecode", failing)
    e = rejected(encode("PNG", Image.fromarray(photo(32, 24))))
    assert e.reason == "unreadable" and str(e).startswith("OpenCV failed to decode PNG")


def test_opencv_pixel_limit_is_capped_in_a_fresh_process():
    # 20000x10000 = 200 MP: under OpenCV's default 1024 MP limit, over the 100 MP backstop.
    code = ("import sys; sys.path.insert(0, 'tests'); import transforms.image.decode; import cv2;"
            "import numpy as np; from helpers import crafted_png\n"
            "try: print(cv2.imdecode(np.frombuffer(crafted_png(20000, 10000), np.uint8), 1))\n"
            "except cv2.error as e: print(e.err)")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert "CV_IO_MAX_IMAGE_PIXELS" in out.stdout, out.stdout + out.stderr


# --- JPEG scale and orientation ---------------------------------------------------------------

@pytest.mark.parametrize("width, height, short_side, scale", [
    (4032, 3024, 256, 8), (640, 480, 256, 1), (1024, 768, 256, 2), (3024, 4032, 384, 4),
    (2048, 1536, 256, 4), (2047, 1535, 192, 8), (100, 50, 256, 1), (4032, 3024, 512, 4),
])
def test_jpeg_scale(width, height, short_side, scale):
    assert jpeg_scale(width, height, short_side) == scale


def test_decode_uses_the_chosen_scale():
    d = decode(encode("JPEG", Image.fromarray(photo(1024, 768)), quality=90))
    assert (d.scale, d.image.shape, d.width, d.height) == (2, (384, 512, 3), 1024, 768)
    small = encode("JPEG", Image.fromarray(photo(640, 480)))
    assert decode(small).scale == 2  # 240 px still covers the default 224 px analysis size
    assert decode(small, analysis_short_side=256).scale == 1


def test_reduced_decode_matches_area_downscaled_full_decode():
    data = encode("JPEG", Image.fromarray(photo(2016, 1512)), quality=90)
    reduced = decode(data)
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert reduced.scale == 4 and reduced.image.shape == (378, 504, 3)
    expected = cv2.resize(full, (504, 378), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.image.astype(np.int16) - expected).mean() < 2.0


# Stored pixels for an upright picture, per orientation: the inverse of apply_orientation.
STORE = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, 1), 8: lambda a: np.rot90(a, -1)}


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_gives_upright_output(orientation):
    upright = photo(1024, 768)
    stored = np.ascontiguousarray(STORE[orientation](upright))
    data = encode("JPEG", Image.fromarray(stored), quality=92, exif=exif_bytes(orientation))
    d = decode(data)
    assert (d.width, d.height) == (1024, 768) and d.header.orientation == orientation
    assert d.image.shape == (768 // d.scale, 1024 // d.scale, 3)
    expected = cv2.resize(bgr_of(upright), d.image.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(d.image.astype(np.int16) - expected).mean() < 3.0
    corner = d.image[: d.image.shape[0] // 10, : d.image.shape[1] // 10].reshape(-1, 3).mean(0)
    assert corner[2] > 180 and corner[1] < 60  # the red block is top-left: rotated exactly once


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_agrees_with_opencv_exif_handling(orientation):
    # Without IMREAD_IGNORE_ORIENTATION OpenCV 5 rotates JPEG (also reduced), PNG and WebP itself.
    exif = exif_bytes(orientation)
    jpeg = encode("JPEG", Image.fromarray(photo(600, 400)), exif=exif)
    d = decode(jpeg, analysis_short_side=100)
    opencv_rotated = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_REDUCED_COLOR_4)
    assert d.scale == 4 and np.array_equal(d.image, opencv_rotated)
    for fmt in ("PNG", "WEBP"):
        data = encode(fmt, Image.fromarray(photo(60, 40)), exif=exif, lossless=True)
        opencv_rotated = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(decode(data).image, opencv_rotated)


def test_apply_orientation_1_is_no_copy():
    image = photo(8, 6)
    assert apply_orientation(image, 1) is image


# --- colour, depth and alpha ------------------------------------------------------------------

def test_cmyk_jpeg_colours_match_pillow():
    patches = [(0, 0, 0, 0), (255, 0, 0, 0), (0, 200, 50, 0), (20, 60, 200, 30), (0, 0, 0, 200),
               (120, 30, 80, 10)]
    cmyk = Image.new("CMYK", (32 * len(patches), 32))
    for i, colour in enumerate(patches):
        cmyk.paste(colour, (32 * i, 0, 32 * i + 32, 32))
    data = encode("JPEG", cmyk, quality=95)
    d = decode(data)
    assert d.header.components == 4 and d.image.shape == (32, 32 * len(patches), 3)
    pillow = bgr_of(Image.open(io.BytesIO(data)).convert("RGB"))
    centres = np.s_[8:24, :]
    assert np.abs(d.image[centres].astype(np.int16) - pillow[centres]).max() <= 3
    reduced = decode(data, analysis_short_side=16)  # the DCT-scaled path converts CMYK too
    assert reduced.scale == 2
    patch_centres = np.s_[8, 8::16]
    diff = reduced.image[patch_centres].astype(np.int16) - pillow[::2, ::2][patch_centres]
    assert np.abs(diff).max() <= 4


def test_png_16_bit_is_scaled_with_rounding():
    values = np.array([[0, 300, 510, 25700, 32896, 51399, 65535]], np.uint16)
    d = decode(encode("PNG", Image.fromarray(values)))
    assert d.header.bit_depth == 16
    assert d.image[0, :, 0].tolist() == [0, 1, 2, 100, 128, 200, 255]
    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[...] = (510, 25700, 65535)  # B, G, R for cv2
    d = decode(cv2.imencode(".png", rgb16)[1].tobytes())
    assert d.image[0, 0].tolist() == [2, 100, 255]


def test_palette_png():
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, :10] = (200, 30, 40)
    rgb[:, 10:] = (10, 220, 90)
    d = decode(encode("PNG", Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)))
    assert d.header.color_type == 3 and np.array_equal(d.image, bgr_of(rgb))


def test_rgba_png_is_composited_over_white():
    rgba = np.zeros((4, 3, 4), np.uint8)
    rgba[..., :3] = (200, 40, 0)
    rgba[:, 0, 3], rgba[:, 1, 3], rgba[:, 2, 3] = 0, 255, 128
    d = decode(encode("PNG", Image.fromarray(rgba)))
    assert d.image[0, 0].tolist() == [255, 255, 255]  # transparent -> white
    assert d.image[0, 1].tolist() == [0, 40, 200]  # opaque -> its own colour (BGR)
    assert d.image[0, 2].tolist() == [127, 147, 227]  # half -> halfway to white


def test_opaque_rgba_and_la_png():
    opaque = np.dstack([photo(16, 12), np.full((12, 16), 255, np.uint8)])
    d = decode(encode("PNG", Image.fromarray(opaque)))
    assert np.array_equal(d.image, bgr_of(opaque[..., :3]))
    la = Image.fromarray(np.dstack([np.full((4, 4), 100, np.uint8), np.zeros((4, 4), np.uint8)]),
                         "LA")
    assert decode(encode("PNG", la)).image[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_grayscale_becomes_three_equal_channels(fmt):
    gray = photo(64, 48)[..., 1]
    d = decode(encode(fmt, Image.fromarray(gray)))
    assert d.image.shape == (48, 64, 3)
    assert (d.image == d.image[..., :1]).all()


def test_png_bytes_named_jpg_decode_as_png():
    rgb = photo(40, 30)
    d = decode(encode("PNG", Image.fromarray(rgb)))  # the name never matters: only the bytes
    assert d.header.format == "png" and np.array_equal(d.image, bgr_of(rgb))


# --- other formats ----------------------------------------------------------------------------

def test_progressive_jpeg():
    data = encode("JPEG", Image.fromarray(photo(1024, 768)), progressive=True, quality=90)
    d = decode(data)
    assert d.header.progressive and d.scale == 2 and d.image.shape == (384, 512, 3)


def test_webp_lossy_and_lossless_with_alpha():
    rgb = photo(64, 48)
    lossy = decode(encode("WEBP", Image.fromarray(rgb), quality=90))
    assert lossy.header.format == "webp"
    assert np.abs(lossy.image.astype(np.int16) - bgr_of(rgb)).mean() < 6
    rgba = np.dstack([rgb, np.zeros((48, 64), np.uint8)])
    rgba[:, :32, 3] = 255
    d = decode(encode("WEBP", Image.fromarray(rgba), lossless=True))
    assert np.array_equal(d.image[:, :32], bgr_of(rgb)[:, :32]) and (d.image[:, 32:] == 255).all()


def test_animated_gif_gives_first_frame():
    colours = [(200, 20, 20), (20, 200, 20), (20, 20, 200)]
    frames = [Image.new("RGB", (30, 20), c).convert("P", palette=Image.Palette.ADAPTIVE)
              for c in colours]
    data = encode("GIF", frames[0], save_all=True, append_images=frames[1:], duration=50, loop=0)
    d = decode(data)
    assert d.header.animated and d.image.shape == (20, 30, 3)
    assert np.abs(d.image[10, 15].astype(int) - colours[0][::-1]).max() <= 2


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_bmp_and_tiff(fmt):
    rgb = photo(40, 30)
    d = decode(encode(fmt, Image.fromarray(rgb)))
    assert d.header.format == fmt.lower() and np.array_equal(d.image, bgr_of(rgb))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_tiff_orientation_applied_once(orientation):
    # OpenCV's TIFF decoder rotates by itself even when told not to: no second turn.
    upright = photo(40, 30)
    stored = np.ascontiguousarray(STORE[orientation](upright))
    d = decode(encode("TIFF", Image.fromarray(stored), exif=exif_bytes(orientation)))
    assert (d.width, d.height) == (40, 30) and np.array_equal(d.image, bgr_of(upright))


def test_avif_decodes_when_opencv_has_the_codec():
    data = encode("AVIF", Image.fromarray(photo(64, 48)), quality=90)
    if not decode_module._cv2_decodes("avif"):
        assert rejected(data).reason == "unsupported_format"
        return
    d = decode(data)
    assert d.header.format == "avif" and d.image.shape == (48, 64, 3)


@pytest.mark.parametrize("fmt, kw", [
    ("JPEG", {"exif": exif_bytes(6)}), ("PNG", {"exif": exif_bytes(6)}),
    ("WEBP", {"exif": exif_bytes(8)}), ("GIF", {}), ("BMP", {}), ("TIFF", {"exif": exif_bytes(5)}),
])
def test_output_invariants(fmt, kw):
    image = Image.fromarray(photo(300, 280))
    d = decode(encode(fmt, image.convert("P") if fmt == "GIF" else image, **kw))
    assert isinstance(d, Decoded)
    assert d.image.dtype == np.uint8 and d.image.ndim == 3 and d.image.shape[2] == 3
    assert d.image.flags.c_contiguous
    assert (d.width, d.height) == (d.header.display_width, d.header.display_height)
    assert d.image.shape[:2] == (-(-d.height // d.scale), -(-d.width // d.scale))
