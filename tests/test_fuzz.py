"""Fuzz the per-image path with random and mutated JPEG/PNG/HEIC/AVIF bytes (hypothesis).

Properties, for every generated input:
- transforms.image.analyze.analyze_image returns a complete features row (never
  raises); status and reasons come from schemas/reasons.py; error text is
  short, printable and carries no image bytes; a thumbnail, when there is one,
  is a JPEG without EXIF;
- transforms.scoring.prepare.prepare returns or raises only ImageRejected (with an
  input reason code);
- each call finishes within PER_CALL_SECONDS (time.perf_counter) and the
  whole example within the hypothesis deadline;
- peak memory stays bounded: the process's peak RSS (VmHWM, reset before each
  example through /proc/self/clear_refs where the kernel allows it) never
  rises more than MAX_PEAK_GROWTH_MB above the RSS before the example, and
  ru_maxrss over the whole run grows less than that too;
- an image whose header declares more than policy.max_pixels is rejected as
  too_large, by both paths, before any decode (fast, no allocation).

Deterministic (derandomize=True, no example database written to the tree).
"""
from __future__ import annotations

import io
import re
import resource
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import heic
from jpeg_markers import metadata_problems
from schemas.features import FIELDS
from schemas.policy import load_policy
from schemas.reasons import INPUT_REASONS, REASONS, ordered
from transforms.image.analyze import analyze_image
from transforms.image.decode import ImageRejected
from transforms.image.header import read_header
from transforms.scoring.prepare import prepare

POLICY = load_policy()
PER_CALL_SECONDS = 2.0
MAX_PEAK_GROWTH_MB = 300
MUTATION_EXAMPLES = 2500
RANDOM_EXAMPLES = 500
FIELD_NAMES = {f.name for f in FIELDS}
PREPARE_ARGS = dict(image_size=224, crop_fraction=0.875, jpeg_quality=90)


# ---------------------------------------------------------------- seeds

def _skin_like(h: int, w: int, seed: int) -> np.ndarray:
    """A textured, skin-coloured BGR test image (gradient + blobs + noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([110 + 20 * np.sin(x / 9), 140 + 25 * np.cos(y / 7), 200 + 15 * np.sin((x + y) / 11)], -1)
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, 14)
        base[(y - cy) ** 2 + (x - cx) ** 2 < r * r] -= (40, 50, 30)
    base += rng.normal(0, 6, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def _cv2_encode(ext: str, image: np.ndarray, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def _pillow_jpeg_with_exif(image_bgr: np.ndarray, orientation: int) -> bytes:
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = orientation            # Orientation
    exif[0x010F] = "FuzzCam"              # Make
    gps = exif.get_ifd(0x8825)            # GPS IFD
    gps.update({1: "N", 2: (51.0, 30.0, 12.5), 3: "W", 4: (0.0, 7.0, 39.0)})
    buf = io.BytesIO()
    Image.fromarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)).save(buf, "JPEG", quality=85, exif=exif)
    return buf.getvalue()


def _make_seeds() -> dict[str, bytes]:
    small = _skin_like(72, 96, 1)
    mid = _skin_like(240, 320, 2)
    png16 = (_skin_like(40, 56, 3).astype(np.uint16) * 257)
    rgba = np.dstack([_skin_like(48, 40, 4), np.full((48, 40), 200, np.uint8)])
    seeds = {
        "jpeg_baseline": _cv2_encode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85]),
        "jpeg_baseline_mid": _cv2_encode(".jpg", mid, [cv2.IMWRITE_JPEG_QUALITY, 80]),
        "jpeg_progressive": _cv2_encode(".jpg", small, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "jpeg_gray": _cv2_encode(".jpg", cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)),
        "jpeg_exif_orientation6": _pillow_jpeg_with_exif(small, 6),
        "png8": _cv2_encode(".png", small),
        "png16": _cv2_encode(".png", png16),
        "png_rgba": _cv2_encode(".png", rgba),
        # Phone formats (issue 13): HEIC through libheif, AVIF through libavif.
        "heic": _heic(small),
        "avif": _cv2_encode(".avif", small, [cv2.IMWRITE_AVIF_QUALITY, 80]),
    }
    return seeds


def _heic(image_bgr: np.ndarray) -> bytes:
    from PIL import Image
    return heic(Image.fromarray(image_bgr[..., ::-1].copy()), quality=80)


SEEDS = _make_seeds()
SEED_NAMES = sorted(SEEDS)


def test_seeds_are_valid_and_what_they_claim():
    """The fuzz starts from images both paths decode (else mutations prove little)."""
    for name, data in SEEDS.items():
        row, thumb = analyze_image(name, data, POLICY, thumbnail_px=64)
        assert not set(row["reasons"]) & set(INPUT_REASONS), (name, row["reasons"], row["error"])
        assert thumb and not metadata_problems(thumb)
        reasons, model_input = prepare(data, POLICY, gate=False, **PREPARE_ARGS)
        assert reasons == [] and model_input.shape == (224, 224, 3)
    assert read_header(SEEDS["jpeg_progressive"]).progressive
    assert read_header(SEEDS["png16"]).bit_depth == 16
    assert read_header(SEEDS["jpeg_exif_orientation6"]).orientation == 6
    assert metadata_problems(SEEDS["jpeg_exif_orientation6"])  # the input does carry EXIF


# ---------------------------------------------------------------- mutations

def _fix_png_crc(data: bytearray, chunk_at: int) -> None:
    """Recompute the CRC of the PNG chunk whose length field starts at chunk_at."""
    (length,) = struct.unpack(">I", data[chunk_at:chunk_at + 4])
    end = chunk_at + 8 + length
    if end + 4 <= len(data):
        data[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(data[chunk_at + 4:end])) & 0xFFFFFFFF)


def set_dimensions(data: bytes, width: int, height: int, fix_crc: bool = True) -> bytes:
    """Write width/height into the first JPEG SOFn, the PNG IHDR or every HEIF ispe found."""
    out = bytearray(data)
    if data[4:8] == b"ftyp":
        for m in re.finditer(rb"ispe", bytes(out)):  # full box: 4 bytes version/flags, then w, h
            out[m.start() + 8:m.start() + 16] = struct.pack(">II", width & 0xFFFFFFFF, height & 0xFFFFFFFF)
        return bytes(out)
    ihdr = out.find(b"IHDR")
    if ihdr >= 4 and ihdr + 12 <= len(out):
        out[ihdr + 4:ihdr + 12] = struct.pack(">II", width & 0xFFFFFFFF, height & 0xFFFFFFFF)
        if fix_crc:
            _fix_png_crc(out, ihdr - 4)
        return bytes(out)
    for m in re.finditer(rb"\xff[\xc0-\xc3\xc5-\xc7\xc9-\xcb\xcd-\xcf]", bytes(out)):
        at = m.start() + 5  # FF Cn, length(2), precision(1), height(2), width(2)
        if at + 4 <= len(out):
            out[at:at + 4] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
            return bytes(out)
    return bytes(out)


def apply(data: bytes, op: tuple) -> bytes:
    kind = op[0]
    n = len(data)
    if kind == "flip" and n:
        pos = op[1] % n
        return data[:pos] + bytes([data[pos] ^ op[2]]) + data[pos + 1:]
    if kind == "truncate":
        return data[:op[1] % (n + 1)]
    if kind == "insert":
        pos = op[1] % (n + 1)
        return data[:pos] + op[2] + data[pos:]
    if kind == "delete" and n:
        pos = op[1] % n
        return data[:pos] + data[pos + op[2]:]
    if kind == "splice_header":   # another seed's header bytes, inserted
        pos = op[1] % (n + 1)
        return data[:pos] + SEEDS[op[2]][:op[3]] + data[pos:]
    if kind == "swap_header":     # another seed's header, replacing ours
        return SEEDS[op[1]][:op[2]] + data[op[2]:]
    if kind == "duplicate" and n:  # copy a region elsewhere (repeated markers/chunks)
        src = op[1] % n
        return data[:op[3] % (n + 1)] + data[src:src + op[2]] + data[op[3] % (n + 1):]
    if kind == "marker":          # a JPEG marker with a length, inserted
        pos = op[1] % (n + 1)
        return data[:pos] + bytes([0xFF, op[2]]) + struct.pack(">H", op[3]) + data[pos:]
    if kind == "dims":
        return set_dimensions(data, op[1], op[2], op[3])
    if kind == "drop_eoi":
        return data[:-2] if data.endswith(b"\xff\xd9") else data
    return data


_pos = st.one_of(st.integers(0, 700), st.integers(0, 1 << 20))
_interesting = st.sampled_from([0, 1, 2, 7, 8, 9, 255, 256, 4096, 8192, 9999, 10000, 10001,
                                16384, 32767, 32768, 65535])
_png_interesting = st.one_of(_interesting, st.sampled_from([100_000, 1 << 20, (1 << 31) - 1,
                                                            1 << 31, (1 << 32) - 1]))
_ops = st.one_of(
    st.tuples(st.just("flip"), _pos, st.integers(1, 255)),
    st.tuples(st.just("truncate"), _pos),
    st.tuples(st.just("insert"), _pos, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), _pos, st.integers(1, 512)),
    st.tuples(st.just("splice_header"), _pos, st.sampled_from(SEED_NAMES), st.integers(2, 300)),
    st.tuples(st.just("swap_header"), st.sampled_from(SEED_NAMES), st.integers(2, 300)),
    st.tuples(st.just("duplicate"), _pos, st.integers(1, 400), _pos),
    st.tuples(st.just("marker"), _pos, st.integers(0, 255), st.integers(0, 65535)),
    st.tuples(st.just("dims"), _png_interesting, _png_interesting, st.booleans()),
    st.tuples(st.just("drop_eoi")),
)
mutated = st.builds(lambda seed, ops: (seed, ops), st.sampled_from(SEED_NAMES),
                    st.lists(_ops, min_size=1, max_size=4))
random_bytes = st.one_of(
    st.binary(max_size=4096),
    st.builds(lambda magic, rest: magic + rest,
              st.sampled_from([b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
                               b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
                               b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a", b"BM", b"II*\x00",
                               b"\x00\x00\x00\x18ftypheic", b"<html>"]),
              st.binary(max_size=2048)),
)


# ---------------------------------------------------------------- the check

STATS = {"examples": 0, "slowest_s": 0.0, "slowest_what": "", "peak_growth_mb": 0.0,
         "statuses": {}, "prepare_rejected": 0, "prepare_ok": 0}


def _hwm_reset_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


HWM_RESET = _hwm_reset_supported()


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> int:
    """Reset VmHWM to the current RSS (Linux >= 4.0) and return the RSS in kB."""
    if HWM_RESET:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    return _status_kb("VmRSS")


def check_example(data: bytes, gate: bool, *, analyze=analyze_image, prep=prepare,
                  time_limit: float = PER_CALL_SECONDS, label: str = "") -> None:
    """Every property the fuzz asserts, for one input. Raises on any violation."""
    rss_before = _reset_peak()

    t0 = time.perf_counter()
    row, thumb = analyze("fuzz://case", data, POLICY, thumbnail_px=64)
    t_analyze = time.perf_counter() - t0
    assert t_analyze < time_limit, f"analyze_image took {t_analyze:.2f}s ({label})"
    assert isinstance(row, dict) and set(row) == FIELD_NAMES
    assert row["status"] in ("accepted", "rejected"), row["status"]
    assert set(row["reasons"]) <= REASONS.keys(), row["reasons"]
    assert list(row["reasons"]) == ordered(row["reasons"])
    assert (row["status"] == "rejected") == bool(row["reasons"])
    assert row["file_size"] == len(data)
    if row["error"] is not None:
        assert len(row["error"]) < 500 and row["error"].isprintable(), row["error"]
    if set(row["reasons"]) & set(INPUT_REASONS):
        assert len(row["reasons"]) == 1 and thumb is None, row
    if thumb is not None:
        assert thumb[:3] == b"\xff\xd8\xff" and not metadata_problems(thumb)

    t0 = time.perf_counter()
    try:
        reasons, model_input = prep(data, POLICY, gate=gate, **PREPARE_ARGS)
    except ImageRejected as e:
        assert e.reason in INPUT_REASONS, e.reason
        STATS["prepare_rejected"] += 1
        if row["reasons"] == ["too_large"]:
            assert e.reason == "too_large"  # same header, same limit
    else:
        STATS["prepare_ok"] += 1
        assert set(reasons) <= REASONS.keys()
        if reasons:
            assert model_input is None
        else:
            assert model_input.shape == (224, 224, 3) and model_input.dtype == np.uint8
        assert not set(row["reasons"]) & {"too_large", "empty", "unsupported_format"}, row["reasons"]
    t_prepare = time.perf_counter() - t0
    assert t_prepare < time_limit, f"prepare took {t_prepare:.2f}s ({label})"

    # An input whose header declares more than max_pixels is refused as too_large.
    header = read_header(data) if data else None
    if header and header.format in ("jpeg", "png") and header.width * header.height > POLICY.max_pixels:
        assert row["reasons"] == ["too_large"], (header, row["reasons"], row["error"])

    peak_growth_mb = (_status_kb("VmHWM") - rss_before) / 1024 if HWM_RESET else 0.0
    assert peak_growth_mb < MAX_PEAK_GROWTH_MB, f"peak RSS grew {peak_growth_mb:.0f} MB ({label})"

    STATS["examples"] += 1
    slowest = max(t_analyze, t_prepare)
    if slowest > STATS["slowest_s"]:
        STATS["slowest_s"], STATS["slowest_what"] = slowest, label
    STATS["peak_growth_mb"] = max(STATS["peak_growth_mb"], peak_growth_mb)
    STATS["statuses"][tuple(row["reasons"]) or ("accepted",)] = \
        STATS["statuses"].get(tuple(row["reasons"]) or ("accepted",), 0) + 1


@pytest.fixture(scope="module")
def whole_run_memory():
    """Warm-up, then ru_maxrss before the fuzz tests (checked by the test after them)."""
    # gate=False so the TensorFlow decode op really runs (its first call costs
    # seconds and ~250 MB, which is not the image's doing).
    prepare(SEEDS["jpeg_baseline_mid"], POLICY, gate=False, **PREPARE_ARGS)
    STATS["ru_maxrss_before"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


FUZZ = settings(derandomize=True, database=None, deadline=2 * PER_CALL_SECONDS * 1000 + 500,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture],
                print_blob=False)


@pytest.mark.e2e  # the fuzz campaign: hundreds of mutated and random inputs
@settings(FUZZ, max_examples=MUTATION_EXAMPLES)
@given(case=mutated, gate=st.booleans())
def test_mutated_images_never_crash_hang_or_blow_up(whole_run_memory, case, gate):
    seed, ops = case
    data = SEEDS[seed]
    for op in ops:
        data = apply(data, op)
    check_example(data, gate, label=f"{seed} {[o[:3] if o[0] != 'insert' else o[:2] for o in ops]}")


@pytest.mark.e2e  # the fuzz campaign: hundreds of mutated and random inputs
@settings(FUZZ, max_examples=RANDOM_EXAMPLES)
@given(data=random_bytes, gate=st.booleans())
def test_random_bytes_never_crash_hang_or_blow_up(whole_run_memory, data, gate):
    check_example(data, gate, label=f"random {data[:12]!r}+{len(data)}B")


_BOMB_SIZES = [(65535, 65535), (20000, 5001), (10001, 10000)]  # JPEG SOF sizes are 16-bit
_PNG_BOMB_SIZES = _BOMB_SIZES + [(1 << 20, 1 << 20), ((1 << 31) - 1, 1), (100_000, 100_000)]


@pytest.mark.parametrize("seed,width,height",
                         [(s, w, h) for s in SEED_NAMES
                          for w, h in (_BOMB_SIZES if s.startswith("jpeg") else _PNG_BOMB_SIZES)])
def test_declared_pixel_bombs_are_refused_before_decode(whole_run_memory, seed, width, height):
    """Huge declared sizes: too_large from the header alone, in milliseconds, no allocation."""
    data = set_dimensions(SEEDS[seed], width, height)
    header = read_header(data)
    assert (header.width, header.height) == (width, height) or header.coded_pixels == width * height
    rss_before = _reset_peak()
    t0 = time.perf_counter()
    row, thumb = analyze_image("bomb", data, POLICY, thumbnail_px=64)
    with pytest.raises(ImageRejected) as e:
        prepare(data, POLICY, gate=True, **PREPARE_ARGS)
    elapsed = time.perf_counter() - t0
    assert row["reasons"] == ["too_large"] and thumb is None and e.value.reason == "too_large"
    assert row["width"] is None and row["decode_scale"] is None  # nothing was decoded
    assert elapsed < 0.05, f"{elapsed * 1000:.0f} ms: was something decoded?"
    if HWM_RESET:
        assert (_status_kb("VmHWM") - rss_before) / 1024 < 20


@pytest.mark.e2e
def test_memory_over_the_whole_fuzz_run_is_bounded(whole_run_memory):
    """Runs after the fuzz tests above (file order): no leak or blow-up across them."""
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - STATS["ru_maxrss_before"]) / 1024
    print(f"\nfuzz: {STATS['examples']} examples checked; slowest call {STATS['slowest_s'] * 1000:.0f} ms "
          f"({STATS['slowest_what']}); worst per-example peak RSS growth {STATS['peak_growth_mb']:.1f} MB "
          f"(VmHWM reset {'on' if HWM_RESET else 'unavailable'}); ru_maxrss growth over the run "
          f"{growth_mb:.1f} MB; prepare ok/rejected "
          f"{STATS['prepare_ok']}/{STATS['prepare_rejected']}; "
          f"outcomes {dict(sorted(STATS['statuses'].items(), key=lambda kv: -kv[1]))}")
    assert STATS["examples"] >= MUTATION_EXAMPLES // 2, "the fuzz tests did not run first"
    assert growth_mb < MAX_PEAK_GROWTH_MB, f"ru_maxrss grew {growth_mb:.0f} MB over the fuzz run"
    assert STATS["peak_growth_mb"] < MAX_PEAK_GROWTH_MB


# ---------------------------------------------------------------- the checks can fail

def test_the_check_catches_crashes_wrong_rows_and_hangs():
    """check_example is what makes the fuzz meaningful: show it rejects bad behaviour."""
    data = SEEDS["jpeg_baseline"]

    def crashes(*a, **k):
        raise ValueError("boom")

    def bad_status(*a, **k):
        row, thumb = analyze_image(*a, **k)
        return dict(row, status="maybe"), thumb

    def bad_reason(*a, **k):
        row, thumb = analyze_image(*a, **k)
        return dict(row, status="rejected", reasons=["cursed"]), thumb

    def leaks_bytes(*a, **k):
        row, thumb = analyze_image(*a, **k)
        return dict(row, status="rejected", reasons=["unreadable"], error=repr(data)), None

    def slow(*a, **k):
        time.sleep(0.06)
        return analyze_image(*a, **k)

    def prepare_wrong_error(*a, **k):
        raise cv2.error("decoder exploded")

    with pytest.raises(ValueError):
        check_example(data, True, analyze=crashes)
    for fake in (bad_status, bad_reason, leaks_bytes):
        with pytest.raises(AssertionError):
            check_example(data, True, analyze=fake)
    with pytest.raises(AssertionError, match="took"):
        check_example(data, True, analyze=slow, time_limit=0.05)
    with pytest.raises(cv2.error):
        check_example(data, True, prep=prepare_wrong_error)
    check_example(data, True)  # and the real functions pass on a valid image


# ---------------------------------------------------------------- found by the fuzz (fixed)

@pytest.mark.parametrize("ext", [".jpg", ".png"])
@pytest.mark.parametrize("height,width", [(1, 1), (1, 300), (300, 1)])
def test_one_pixel_wide_image_is_a_row_not_a_crash(ext, height, width):
    data = _cv2_encode(ext, np.full((height, width, 3), 128, np.uint8))
    row, _ = analyze_image("one-pixel", data, POLICY)
    assert row["status"] == "rejected" and "too_small" in row["reasons"]
    try:
        reasons, _ = prepare(data, POLICY, gate=True, **PREPARE_ARGS)
    except ImageRejected:
        return
    assert "too_small" in reasons


@pytest.mark.skipif(not HWM_RESET, reason="needs /proc/self/clear_refs to measure one call's peak RSS")
def test_tiny_progressive_jpeg_declaring_the_max_pixels_stays_within_memory_bound():
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(_skin_like(72, 96, 1)[..., ::-1]).save(buf, "JPEG", progressive=True,
                                                           subsampling=0, quality=85)
    side = int(POLICY.max_pixels ** 0.5)
    data = set_dimensions(buf.getvalue(), side, side)
    assert len(data) < 4096 and read_header(data).progressive
    assert read_header(data).width * read_header(data).height <= POLICY.max_pixels
    rss_before = _reset_peak()
    row, _ = analyze_image("progressive-bomb", data, POLICY)
    growth_mb = (_status_kb("VmHWM") - rss_before) / 1024
    assert growth_mb < MAX_PEAK_GROWTH_MB, f"peak RSS grew {growth_mb:.0f} MB for {len(data)} bytes ({row['reasons']})"
