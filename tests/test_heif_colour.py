"""HEIC/AVIF decoding, colour management to sRGB, and deep samples to 8 bits.

Real encoders throughout: pillow-heif (libheif + x265) writes HEIC, Pillow
and OpenCV (libavif) write AVIF, Pillow writes P3-tagged JPEG/PNG/WebP with
a Display P3 profile built by transforms.image.colour.
"""
from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageCms
from helpers import exif_bytes, heic, pil_bytes

from transforms.image.colour import display_p3_profile, to_srgb
from transforms.image.decode import ImageRejected, decode
from transforms.image.header import read_header
from transforms.image.preprocess import preprocess_to_jpeg

# Flat patches (so lossy codecs keep them): sRGB red, a skin tone, a dark skin tone, grey.
PATCHES = [(230, 30, 30), (224, 172, 140), (96, 64, 48), (128, 128, 128)]
P3 = display_p3_profile()
SRGB_TO_P3 = ImageCms.buildTransform(ImageCms.createProfile("sRGB"),
                                     ImageCms.ImageCmsProfile(io.BytesIO(P3)), "RGB", "RGB")


def patches(w=320, h=240) -> Image.Image:
    """Four vertical bands of PATCHES, RGB."""
    a = np.zeros((h, w, 3), np.uint8)
    for i, c in enumerate(PATCHES):
        a[:, i * w // 4:(i + 1) * w // 4] = c
    return Image.fromarray(a)


def centres(bgr: np.ndarray) -> list[tuple[int, int, int]]:
    h, w = bgr.shape[:2]
    return [tuple(int(v) for v in bgr[h // 2, (2 * i + 1) * w // 8][::-1]) for i in range(4)]


def close(got, want, tol):
    return all(abs(int(a) - int(b)) <= tol for g, w in zip(got, want) for a, b in zip(g, w))


# -- (1) decoding ---------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["heic", "avif"])
def test_heic_and_avif_decode_like_a_jpeg(fmt):
    img = patches()
    data = heic(img) if fmt == "heic" else pil_bytes(img, "AVIF", quality=95)
    d = decode(data, analysis_short_side=100)
    assert d.header.format == fmt and (d.width, d.height) == (320, 240)
    assert d.scale == 2 and d.image.shape == (120, 160, 3) and d.image.dtype == np.uint8
    assert close(centres(d.image), PATCHES, 4), centres(d.image)


@pytest.mark.parametrize("fmt", ["heic", "avif"])
def test_orientation_is_applied_once(fmt):
    img = patches(200, 100)
    data = heic(img, exif=exif_bytes(6)) if fmt == "heic" else pil_bytes(img, "AVIF", exif=exif_bytes(6))
    d = decode(data, analysis_short_side=50)
    # Upright is 100 wide, 200 high; the first (red) band is now at the top.
    assert (d.width, d.height) == (100, 200) and d.image.shape[:2] == (200 // d.scale, 100 // d.scale)
    top = d.image[2, d.image.shape[1] // 2][::-1]
    assert close([top], [PATCHES[0]], 6), top


def test_the_primary_image_of_a_multi_image_heic_is_decoded():
    # The primary is the smaller image: the header must not take the largest.
    heif = pillow_heif.from_pillow(Image.new("RGB", (400, 400), (0, 0, 255)))
    heif.add_from_pillow(patches())
    buf = io.BytesIO()
    heif.save(buf, format="HEIF", quality=95, primary_index=1)
    assert pillow_heif.open_heif(buf.getvalue()).primary_index == 1
    d = decode(buf.getvalue(), analysis_short_side=240)
    assert (d.width, d.height) == (320, 240)
    assert close(centres(d.image), PATCHES, 4)


def test_an_embedded_thumbnail_covering_the_analysis_size_is_decoded_instead():
    """Phones embed a ~320 px thumbnail; curate (224 px) uses it, the model path (256 px) cannot."""
    from transforms.image.decode import _pick_thumbnail, _thumbnail_sizes
    img = patches(1600, 1200)
    data = heic(img, thumbnails=[320], exif=exif_bytes(6))
    fast = decode(data, analysis_short_side=224)
    assert fast.image.shape == (320, 240, 3) and fast.scale == 5  # upright like the primary
    assert fast.thumbnail == 0 and fast.thumbnail_sizes == ((240, 320),)
    assert (fast.width, fast.height) == (1200, 1600)
    top = fast.image[2, 120][::-1]
    assert close([top], [PATCHES[0]], 6), top
    full = decode(data, analysis_short_side=256)  # 1/4 of the full decode: 300 x 400
    assert full.image.shape == (400, 300, 3) and full.scale == 4 and full.thumbnail is None
    small_thumb = decode(heic(img, thumbnails=[200]), analysis_short_side=224)
    assert small_thumb.image.shape == (300, 400, 3) and small_thumb.scale == 4
    # A thumbnail framed differently from the primary is never used.
    heif = pillow_heif.open_heif(data)
    primary = heif[heif.primary_index]
    assert _pick_thumbnail(_thumbnail_sizes(primary), read_header(data), 224) == 0
    other = read_header(heic(patches(1600, 900), exif=exif_bytes(6)))
    assert _pick_thumbnail(_thumbnail_sizes(primary), other, 224) is None


def test_heic_bomb_is_refused_from_the_header():
    data = heic(patches(64, 64))
    # Rewrite the primary's ispe to 60000 x 60000: refused before libheif runs.
    at = data.index(b"ispe") + 8
    bomb = data[:at] + struct.pack(">II", 60_000, 60_000) + data[at + 8:]
    with pytest.raises(ImageRejected) as e:
        decode(bomb)
    assert e.value.reason == "too_large"


def test_a_grid_is_charged_for_its_tiles_not_its_declared_size():
    """libheif decodes a grid primary as its tiles: a 24 KB file declaring
    640x480 whose grid repeated one 1024 px tile 576 times took 0.9 GB
    before libheif found the sizes disagree. Here a 2048 px grid of sixteen
    512 px tiles declares 64x64: it is charged its 4.2 MP and refused
    before libheif runs, not decoded and then found unreadable."""
    buf = io.BytesIO()
    pillow_heif.from_bytes("RGB", (2048, 2048), np.full((2048, 2048, 3), 128, np.uint8).tobytes()).save(
        buf, quality=10, tile_size=512)
    honest = buf.getvalue()
    at = honest.index(struct.pack(">II", 2048, 2048))
    small = honest[:at] + struct.pack(">II", 64, 64) + honest[at + 8:]
    header = read_header(small)
    assert (header.width, header.height) == (64, 64) and header.coded_pixels == 16 * 512 * 512
    for data, words in ((honest, "declared 2048x2048 = 4.2 MP"), (small, "declared coded size 4.2 MP")):
        with pytest.raises(ImageRejected) as e:
            decode(data, max_pixels=2_000_000)
        assert e.value.reason == "too_large" and words in str(e.value), str(e.value)


def test_a_huge_coded_extent_behind_a_small_crop_is_refused():
    """HEVC codes whole blocks and clap crops them: the decoder allocates the ispe size."""
    data = heic(patches(100, 60))
    assert read_header(data).coded_pixels > 100 * 60  # x265 padded 60 rows to 64: a clap box
    at = data.index(b"ispe") + 8
    bomb = data[:at] + struct.pack(">II", 20_000, 20_000) + data[at + 8:]
    assert read_header(bomb).width * read_header(bomb).height <= 100 * 60
    with pytest.raises(ImageRejected) as e:
        decode(bomb)
    assert e.value.reason == "too_large"


@pytest.mark.parametrize("fmt", ["heic", "avif"])
def test_truncated_heic_and_avif_are_unreadable(fmt):
    img = patches()
    data = heic(img) if fmt == "heic" else pil_bytes(img, "AVIF", quality=95)
    with pytest.raises(ImageRejected) as e:
        decode(data[: len(data) * 2 // 3])
    assert e.value.reason == "unreadable", str(e.value)


# -- (2) colour management -------------------------------------------------------

def p3_version(img: Image.Image) -> Image.Image:
    """The P3 code values of `img`, untagged (the caller embeds the profile or not)."""
    return Image.fromarray(np.asarray(ImageCms.applyTransform(img, SRGB_TO_P3)))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "AVIF", "HEIC"])
def test_p3_tagged_images_decode_to_their_srgb_colours(fmt):
    img = p3_version(patches())
    raw = np.asarray(img)
    assert not close([tuple(raw[120, 40])], [PATCHES[0]], 10)  # P3 code values really differ
    kw = {"icc_profile": P3}
    data = (heic(img, **kw) if fmt == "HEIC" else
            pil_bytes(img, fmt, quality=95, **kw) if fmt != "PNG" else pil_bytes(img, fmt, **kw))
    assert read_header(data).icc_profile == P3
    d = decode(data, analysis_short_side=200)
    assert close(centres(d.image), PATCHES, 4), (fmt, centres(d.image))


def test_nclx_p3_avif_is_converted():
    img = p3_version(patches())
    data = pil_bytes(img, "AVIF", quality=95)
    nclx = b"colrnclx" + struct.pack(">HH", 1, 13)
    assert nclx in data
    data = data.replace(nclx, b"colrnclx" + struct.pack(">HH", 12, 13))  # primaries: Display P3
    assert read_header(data).nclx[:2] == (12, 13)
    assert close(centres(decode(data, analysis_short_side=200).image), PATCHES, 4)


def test_ita_moves_by_the_share_of_pixels_that_round_the_other_way():
    """One level of b* is 1-2 degrees of ITA. A conversion or re-encode rounds some
    pixels the other way; the tone estimate must move by their share, not jump a level."""
    from transforms.image.skin_tone import ita_degrees, skin_tone
    lab = np.zeros((100, 100, 3), np.uint8)
    lab[..., 0], lab[..., 1] = 160, 140   # L* 62.7, a* 12: light skin
    mask = np.ones((100, 100), bool)

    def ita(share_up: float) -> float:
        lab[..., 2] = 145                  # b* 17 ...
        lab.reshape(-1, 3)[:round(share_up * lab.size / 3), 2] = 146  # ... or 18
        return skin_tone(lab, mask)["ita_deg"]

    assert ita(0.0) == pytest.approx(ita_degrees(160 / 2.55, 17.0))  # a uniform patch: its own level
    assert abs(ita_degrees(160 / 2.55, 17.0) - ita_degrees(160 / 2.55, 18.0)) > 1
    assert abs(ita(0.49) - ita(0.51)) < 0.1


def test_the_tone_medians_count_only_the_masked_pixels():
    from transforms.image.skin_tone import skin_medians
    lab = np.zeros((60, 100, 3), np.uint8)
    lab[:, :50] = (100, 140, 145)          # masked: L 100, b 145 on 60% of them, 146 on 40%
    lab[:24, :50, 2] = 146
    lab[:, 50:] = (220, 128, 100)          # not masked: far off in L and b
    mask = np.zeros((60, 100), bool)
    mask[:, :50] = True
    L_star, b_star = skin_medians(lab, mask)
    assert L_star == pytest.approx(100 / 2.55)
    # grouped median: level 145 spans [144.5, 145.5) and holds 60%: the half-way pixel lies 0.5/0.6 into it
    assert b_star == pytest.approx(144.5 + 0.5 / 0.6 - 128)


def test_srgb_profiles_and_no_profile_leave_pixels_alone():
    srgb_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = patches()
    plain = decode(pil_bytes(img, "PNG")).image
    for icc in (srgb_icc, b"not a profile" * 20):
        assert np.array_equal(decode(pil_bytes(img, "PNG", icc_profile=icc)).image, plain)
    a = np.asarray(img)[..., ::-1]
    assert to_srgb(a, None) is a and to_srgb(a, srgb_icc) is a


def test_model_input_is_colour_managed():
    """make_tfrecords and score share preprocess: a P3 upload gives the sRGB model image."""
    img = patches(512, 512)
    srgb, _ = preprocess_to_jpeg(pil_bytes(img, "PNG"), image_size=64)
    p3, _ = preprocess_to_jpeg(pil_bytes(p3_version(img), "PNG", icc_profile=P3), image_size=64)
    a, b = (cv2.imdecode(np.frombuffer(x, np.uint8), cv2.IMREAD_COLOR).astype(int) for x in (srgb, p3))
    assert np.abs(a - b).max() <= 3


# -- (3) deep samples ------------------------------------------------------------

def test_bit_depths_map_to_the_same_8bit_pixels():
    rgb8 = np.asarray(patches())
    want = decode(pil_bytes(patches(), "PNG")).image
    png16 = cv2.imencode(".png", rgb8[..., ::-1].astype(np.uint16) * 257)[1].tobytes()
    tiff16 = cv2.imencode(".tiff", rgb8[..., ::-1].astype(np.uint16) * 257)[1].tobytes()
    for data in (png16, tiff16):
        assert read_header(data).bit_depth == 16
        assert np.array_equal(decode(data).image, want)
    ten = (rgb8.astype(np.uint32) * 1023 + 127) // 255
    ok, avif10 = cv2.imencode(".avif", ten[..., ::-1].astype(np.uint16),
                              [cv2.IMWRITE_AVIF_DEPTH, 10, cv2.IMWRITE_AVIF_QUALITY, 100])
    assert ok and read_header(avif10.tobytes()).bit_depth == 10
    heic10 = pillow_heif.from_bytes("RGB;16", (320, 240), (ten.astype(np.uint16) << 6).tobytes())
    buf = io.BytesIO()
    heic10.save(buf, format="HEIF", quality=-1)  # lossless
    for data in (avif10.tobytes(), buf.getvalue()):
        d = decode(data)
        assert d.header.bit_depth == 10
        assert close(centres(d.image), PATCHES, 2), centres(d.image)


def test_the_fast_matrix_path_agrees_with_littlecms():
    """Matrix/TRC profiles skip LittleCMS's slower path; the result must be the same."""
    from transforms.image.colour import _MatrixShaper, _transform, nclx_profile
    pixels = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for icc in (P3, nclx_profile(9, 13)):
        assert isinstance(_transform(icc), _MatrixShaper)
        cms = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                      ImageCms.createProfile("sRGB"), "RGB", "RGB")
        want = np.asarray(ImageCms.applyTransform(Image.fromarray(pixels[..., ::-1]), cms))[..., ::-1]
        assert np.abs(to_srgb(pixels, icc).astype(int) - want).max() <= 1


# -- (3b) HDR: PQ and HLG tone-mapped to sRGB -----------------------------------
# The fixtures are built here from published constants (BT.2087's sRGB -> BT.2020
# matrix, BT.2020 luminance, the ST 2084 and BT.2100 HLG formulas), not from
# transforms.image.colour, so a wrong constant there cannot hide in both.

SRGB_TO_BT2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
BT2020_Y = np.array([0.2627, 0.6780, 0.0593])
PQ, HLG = 16, 18
# Diffuse white (BT.2408: 203 nits), the skin tones and grey of PATCHES.
HDR_PATCHES = [(255, 255, 255)] + PATCHES[1:]


def hdr_codes(rgb8: np.ndarray, transfer: int, white_nits: float = 203.0) -> np.ndarray:
    """10-bit BT.2020 PQ/HLG code values showing sRGB `rgb8` with its white at `white_nits`."""
    v = rgb8 / 255.0
    nits = (np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4) @ SRGB_TO_BT2020.T) * white_nits
    if transfer == PQ:  # inverse ST 2084 EOTF
        m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
        y = (nits / 10000) ** m1
        e = ((c1 + c2 * y) / (1 + c3 * y)) ** m2
    else:  # inverse OOTF at 1000 nits (gamma 1.2), then the HLG OETF
        ys = ((nits @ BT2020_Y) / 1000) ** (1 / 1.2)
        scene = nits / 1000 / np.maximum(ys, 1e-12)[..., None] ** 0.2
        a = 0.17883277
        b, c = 1 - 4 * a, 0.5 - a * np.log(4 * a)
        e = np.where(scene <= 1 / 12, np.sqrt(3 * scene), a * np.log(np.maximum(12 * scene - b, 1e-12)) + c)
    return np.round(np.clip(e, 0, 1) * 1023).astype(np.uint16)  # HLG cannot show over 1000 nits


def hdr_file(codes: np.ndarray, transfer: int, fmt: str) -> bytes:
    """10-bit HEIC (libheif/x265, nclx BT.2020 + PQ/HLG) or AVIF (OpenCV/libavif) of RGB codes."""
    if fmt == "avif":
        # OpenCV writes 10-bit AVIF with an nclx box (2, 2, 0): unspecified primaries
        # and transfer, identity matrix. Its transfer is set here, as a phone would write it.
        ok, buf = cv2.imencode(".avif", np.ascontiguousarray(codes[..., ::-1]),
                               [cv2.IMWRITE_AVIF_DEPTH, 10, cv2.IMWRITE_AVIF_QUALITY, 100])
        box = b"colrnclx" + struct.pack(">HHH", 2, 2, 0)
        assert ok and box in buf.tobytes()
        return buf.tobytes().replace(box, b"colrnclx" + struct.pack(">HHH", 9, transfer, 0))
    h, w = codes.shape[:2]
    heif = pillow_heif.from_bytes("RGB;16", (w, h), (codes << 6).tobytes())
    buf = io.BytesIO()
    lossless = fmt == "heic lossless"
    heif.save(buf, format="HEIF", quality=-1 if lossless else 90, color_primaries=9,
              transfer_characteristics=transfer, full_range_flag=1,
              **({"matrix_coefficients": 0} if lossless else {}))
    return buf.getvalue()


def hdr_patches(values, w=320, h=240) -> np.ndarray:
    a = np.zeros((h, w, 3), np.float64)
    for i, c in enumerate(values):
        a[:, i * w // len(values):(i + 1) * w // len(values)] = c
    return a


def patch_ita(rgb) -> float:
    from transforms.image.skin_tone import ita_degrees, lab_float
    L, _, b = lab_float(np.array([[rgb[::-1]]], np.uint8))[0, 0]
    return ita_degrees(float(L), float(b))


@pytest.mark.parametrize("transfer", [PQ, HLG])
@pytest.mark.parametrize("fmt,tol", [("heic lossless", 1), ("heic", 4), ("avif", 1)])
def test_hdr_is_tone_mapped_to_srgb(transfer, fmt, tol):
    """Diffuse white (203 nits) is near sRGB white; skin tones keep their SDR values."""
    data = hdr_file(hdr_codes(hdr_patches(HDR_PATCHES), transfer), transfer, fmt)
    assert read_header(data).nclx[:2] == (9, transfer) and read_header(data).bit_depth == 10
    got = centres(decode(data, analysis_short_side=200).image)
    white, skin = got[0], got[1:]
    # The old reading (PQ/HLG codes as if sRGB) put this white at 148 (PQ) or 191 (HLG).
    assert min(white) >= 236 and max(white) - min(white) <= 2, white
    assert close(skin, HDR_PATCHES[1:], tol), (skin, HDR_PATCHES[1:])
    for g, want in zip(skin[:2], HDR_PATCHES[1:3]):  # the two skin tones
        assert abs(patch_ita(g) - patch_ita(want)) <= 1.5, (g, want)


def test_an_hdr_heics_thumbnail_is_tone_mapped_like_its_primary():
    """Curate decodes the embedded thumbnail, make_tfrecords/score the primary: same colours."""
    codes = hdr_codes(hdr_patches(HDR_PATCHES, 1600, 1200), PQ)
    heif = pillow_heif.from_bytes("RGB;16", (1600, 1200), (codes << 6).tobytes())
    buf = io.BytesIO()
    heif.save(buf, format="HEIF", quality=90, color_primaries=9, transfer_characteristics=PQ,
              full_range_flag=1, thumbnails=[320])
    thumb = decode(buf.getvalue(), analysis_short_side=224)
    primary = decode(buf.getvalue(), analysis_short_side=256)
    assert thumb.image.shape == (240, 320, 3) and primary.image.shape == (300, 400, 3)
    assert close(centres(thumb.image), centres(primary.image), 2)
    assert close(centres(primary.image)[1:], HDR_PATCHES[1:], 4) and min(centres(primary.image)[0]) >= 236


def test_hdr_highlights_roll_off_and_the_mapping_is_deterministic():
    nits = [50, 100, 203, 400, 1000, 4000]  # 4000: over the 1000 nit peak, clips (PQ only)
    grey = hdr_patches([(255, 255, 255)] * len(nits), w=60 * len(nits), h=60)
    levels = {}
    for transfer in (PQ, HLG):
        codes = np.concatenate([hdr_codes(grey[:, i * 60:(i + 1) * 60], transfer, white_nits=n)
                                for i, n in enumerate(nits)], axis=1)  # white at n nits
        files = [hdr_file(codes, transfer, "heic lossless"), hdr_file(codes, transfer, "avif")]
        images = [decode(f, analysis_short_side=60).image for f in files + files]
        assert all(np.array_equal(images[0], im) for im in images[1:])  # decoders and runs agree
        levels[transfer] = [int(images[0][30, i * 60 + 30, 1]) for i in range(len(nits))]
        row = levels[transfer][:5]
        assert row == sorted(row) and len(set(row)) == len(row), row  # brighter stays brighter
        assert row[2] >= 236 and row[3] < 255 and row[4] == 255, row
    # HLG and PQ of the same scene agree below the roll-off.
    assert all(abs(p - h) <= 1 for p, h in zip(levels[PQ][:3], levels[HLG][:3])), levels
