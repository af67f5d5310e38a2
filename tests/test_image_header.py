"""read_header: formats, sizes, orientation and JPEG details from headers alone."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from helpers import PIXELS, crafted_jpeg, crafted_png, encode, exif_bytes, isobmff, tiff_ifd, with_segment

from transforms.image.header import FORMATS, Header, read_header

RNG = np.random.default_rng(7)


# --- JPEG ---------------------------------------------------------------------------------

def test_jpeg_baseline():
    h = read_header(encode("JPEG", quality=90))
    assert (h.format, h.width, h.height, h.components, h.bit_depth) == ("jpeg", 50, 40, 3, 8)
    assert not h.progressive and h.has_eoi and not h.exif_present and h.orientation == 1


def test_jpeg_progressive_grayscale_and_cmyk():
    assert read_header(encode("JPEG", progressive=True)).progressive
    gray = read_header(encode("JPEG", Image.fromarray(PIXELS[..., 0])))
    assert gray.components == 1
    cmyk = read_header(encode("JPEG", Image.new("CMYK", (30, 20), (0, 50, 100, 0))))
    assert (cmyk.components, cmyk.width, cmyk.height) == (4, 30, 20)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_and_display_size(orientation):
    h = read_header(encode("JPEG", exif=exif_bytes(orientation)))
    assert h.exif_present and h.orientation == orientation
    expected = (40, 50) if orientation >= 5 else (50, 40)
    assert (h.display_width, h.display_height) == expected
    assert (h.width, h.height) == (50, 40)


@pytest.mark.parametrize("order", [b"II", b"MM"])
def test_jpeg_exif_either_byte_order(order):
    data = with_segment(encode("JPEG"), 0xE1, b"Exif\0\0" + tiff_ifd(6, order))
    assert read_header(data).orientation == 6


def test_jpeg_out_of_range_orientation_is_1():
    data = with_segment(encode("JPEG"), 0xE1, b"Exif\0\0" + tiff_ifd(9, b"MM"))
    h = read_header(data)
    assert h.exif_present and h.orientation == 1


def test_jpeg_fill_bytes_and_other_segments_are_skipped():
    data = encode("JPEG", exif=exif_bytes(8))
    data = with_segment(data, 0xE2, b"ICC_PROFILE\0" + bytes(200))
    data = data[:2] + b"\xff\xff\xff" + data[2:]  # fill bytes before a marker
    h = read_header(data)
    assert (h.width, h.height, h.orientation) == (50, 40, 8)


def test_jpeg_end_of_image():
    data = encode("JPEG")
    assert not read_header(data[: len(data) // 2]).has_eoi
    assert not read_header(data[:-2]).has_eoi
    assert read_header(data + bytes(4096)).has_eoi  # zero padding
    assert read_header(data + b"ftypmp42" + bytes(1000)).has_eoi  # appended motion-photo video
    # The Exif thumbnail's own FFD9 (inside APP1) must not count for a truncated main image.
    thumb = encode("JPEG", Image.fromarray(PIXELS[:8, :8]))
    truncated = with_segment(data, 0xE1, b"Exif\0\0" + tiff_ifd(1, b"II") + thumb)[:-200]
    assert not read_header(truncated).has_eoi


def test_jpeg_huge_declared_size():
    h = read_header(crafted_jpeg(60000, 60000))
    assert (h.format, h.width, h.height, h.has_eoi) == ("jpeg", 60000, 60000, True)


# --- other formats --------------------------------------------------------------------------

def test_png_variants():
    rgb = read_header(encode("PNG"))
    assert (rgb.format, rgb.width, rgb.height) == ("png", 50, 40)
    assert (rgb.bit_depth, rgb.color_type) == (8, 2)
    assert rgb.components == 3 and not rgb.has_alpha and not rgb.animated
    assert read_header(encode("PNG", Image.fromarray(PIXELS).convert("RGBA"))).has_alpha
    palette = Image.fromarray(PIXELS).convert("P")
    assert read_header(encode("PNG", palette)).color_type == 3
    assert read_header(encode("PNG", palette, transparency=0)).has_alpha
    gray16 = Image.fromarray(RNG.integers(0, 65535, (4, 6), dtype=np.uint16))
    deep = read_header(encode("PNG", gray16))
    assert (deep.bit_depth, deep.color_type, deep.components) == (16, 0, 1)


def test_png_animated_and_exif():
    base = Image.fromarray(PIXELS)
    assert read_header(encode("PNG", base, save_all=True, append_images=[base.rotate(90)])).animated
    h = read_header(encode("PNG", exif=exif_bytes(6)))
    assert h.exif_present and h.orientation == 6 and (h.display_width, h.display_height) == (40, 50)


def test_png_huge_declared_size():
    h = read_header(crafted_png(100_000, 100_000))
    assert (h.format, h.width, h.height) == ("png", 100_000, 100_000)


def test_gif_static_and_animated():
    frames = [Image.fromarray(np.roll(PIXELS, i * 7, axis=1)).convert("P") for i in range(3)]
    static = read_header(encode("GIF", frames[0]))
    assert (static.format, static.width, static.height, static.animated) == ("gif", 50, 40, False)
    animated = encode("GIF", frames[0], save_all=True, append_images=frames[1:], duration=50)
    assert read_header(animated).animated


def test_webp_variants():
    lossy = read_header(encode("WEBP", quality=80))
    assert (lossy.format, lossy.width, lossy.height) == ("webp", 50, 40)
    rgba = Image.fromarray(np.dstack([PIXELS, np.full((40, 50), 128, np.uint8)]))
    lossless = read_header(encode("WEBP", rgba, lossless=True))
    assert (lossless.width, lossless.height, lossless.has_alpha) == (50, 40, True)
    extended = read_header(encode("WEBP", exif=exif_bytes(8)))
    assert (extended.width, extended.height, extended.orientation) == (50, 40, 8)
    base = Image.fromarray(PIXELS)
    animated = encode("WEBP", base, save_all=True, append_images=[base.rotate(90)])
    assert read_header(animated).animated


def test_bmp_and_tiff():
    bmp = read_header(encode("BMP"))
    assert (bmp.format, bmp.width, bmp.height, bmp.bit_depth) == ("bmp", 50, 40, 24)
    tiff = read_header(encode("TIFF", exif=exif_bytes(3)))
    assert (tiff.format, tiff.width, tiff.height, tiff.orientation) == ("tiff", 50, 40, 3)


def test_heic_and_avif_by_brand():
    assert read_header(isobmff(b"heic", [b"mif1", b"heic"])).format == "heic"
    heic = read_header(isobmff(b"mif1", [b"heic"], ispe=[(512, 512), (4032, 3024), (320, 240)]))
    assert (heic.format, heic.width, heic.height) == ("heic", 4032, 3024)
    assert read_header(isobmff(b"avif", [b"mif1", b"avif"], ispe=[(64, 48)])).format == "avif"
    assert read_header(isobmff(b"isom", [b"mp42"])).format == "unknown"  # a video, not an image
    avif = read_header(encode("AVIF"))
    assert (avif.format, avif.width, avif.height) == ("avif", 50, 40)


@pytest.mark.parametrize("data", [b"", b"<!DOCTYPE html><html></html>", b"BM is not a bitmap",
                                  b"\x00" * 64, b"GIF8", b"RIFF\x00\x00\x00\x00WAVE"])
def test_unknown(data):
    assert read_header(data) == Header(format="unknown")


def test_formats_vocabulary():
    assert set(FORMATS) == {"jpeg", "png", "gif", "webp", "bmp", "tiff", "heic", "avif", "unknown"}


SAMPLES = {
    "jpeg": lambda: encode("JPEG", exif=exif_bytes(6), progressive=True),
    "png": lambda: encode("PNG", exif=exif_bytes(6)),
    "gif": lambda: encode("GIF", Image.fromarray(PIXELS).convert("P"), save_all=True,
                          append_images=[Image.fromarray(PIXELS[::-1]).convert("P")]),
    "webp": lambda: encode("WEBP", exif=exif_bytes(6)),
    "bmp": lambda: encode("BMP"),
    "tiff": lambda: encode("TIFF", exif=exif_bytes(6)),
    "heic": lambda: isobmff(b"heic", [b"mif1"], ispe=[(64, 48)]),
    "avif": lambda: encode("AVIF"),
}


@pytest.mark.parametrize("fmt", SAMPLES)
def test_never_raises_on_truncated_or_corrupted_input(fmt):
    data = SAMPLES[fmt]()
    assert read_header(data).format == fmt
    for end in range(0, min(len(data), 1500)):  # every prefix through the headers
        assert read_header(data[:end]).format in FORMATS
    rng = np.random.default_rng(1)
    for _ in range(200):  # random byte corruption after the signature
        corrupt = bytearray(data)
        at = rng.integers(4, min(len(data), 600), size=8)
        corrupt[at[0]:at[0] + 1] = b"\xff"
        for i in at[1:]:
            corrupt[i] = rng.integers(0, 256)
        assert read_header(bytes(corrupt)).format in FORMATS
