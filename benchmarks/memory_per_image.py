"""Peak memory of the per-image path on the worst inputs a decoder can be handed.

Small files that decode to huge arrays: a 16-bit RGBA PNG of 10000x9999 is
under 1 MB on disk and 800 MB decoded. Each input is written here without
ever holding its pixels (PNG rows are deflated once and repeated), then
`analyze_image` runs on it in a fresh process and reports its peak RSS
above the process's RSS just before the call, and the time taken.

    python -m benchmarks.memory_per_image [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

_PNG_COLOR = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_png(path: str, width: int, height: int, channels: int = 4, depth: int = 16) -> int:
    """A valid PNG of vertical stripes; memory and time independent of its pixel count.

    Every row is the same, so after a full flush its deflate bytes repeat:
    they are computed once and written `height` times, with the zlib
    checksum and the chunk CRC kept running over what is written.
    """
    sample = depth // 8
    stripe = bytes((i * 37) % 256 for i in range(width * channels * sample))
    row = b"\x00" + stripe  # filter type 0
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    first = comp.compress(row) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(row) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.flush()
    adler = 1
    for _ in range(height):
        adler = zlib.adler32(row, adler)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, _PNG_COLOR[channels], 0, 0, 0)
    length = 2 + len(first) + len(again) * (height - 1) + len(tail) + 4
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr))
        f.write(struct.pack(">I", length) + b"IDAT")
        crc = zlib.crc32(b"IDAT")
        for part in [b"\x78\x01", first] + [again] * (height - 1) + [tail, struct.pack(">I", adler)]:
            f.write(part)
            crc = zlib.crc32(part, crc)
        f.write(struct.pack(">I", crc) + _chunk(b"IEND", b""))
    return os.path.getsize(path)


def _pattern(height: int, width: int, channels: int, dtype="uint8"):
    import numpy as np
    row = (np.arange(width * channels, dtype=np.uint32) * 37 % 256).astype(np.uint8)
    img = np.broadcast_to(row.reshape(1, width, channels), (height, width, channels))
    if dtype == "uint16":
        img = img.astype(np.uint16) * 257
    return np.ascontiguousarray(img)


def write_cv2(path: str, width: int, height: int, channels: int, dtype="uint8", params=()) -> int:
    """Encode a striped array with OpenCV (holds the pixels once, while writing)."""
    import cv2
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if path.endswith(".jpg") else params
    ok, buf = cv2.imencode(os.path.splitext(path)[1], _pattern(height, width, channels, dtype), list(params))
    assert ok, path
    buf.tofile(path)
    return os.path.getsize(path)


def write_gif(path: str, width: int, height: int) -> int:
    from PIL import Image
    Image.fromarray(_pattern(height, width, 1)[..., 0], "L").convert("P").save(path, "GIF")
    return os.path.getsize(path)


# name -> (writer, args): the worst of each format the per-image path decodes.
WORST = {
    "png16_rgba_10000x9999.png": (write_png, (10000, 9999, 4, 16)),
    "png8_rgba_10000x9999.png": (write_png, (10000, 9999, 4, 8)),
    "png8_rgb_10000x9999.png": (write_png, (10000, 9999, 3, 8)),
    "tiff16_rgb_8000x8000.tiff": (write_cv2, (8000, 8000, 3, "uint16")),
    "webp_rgba_16383x6000.webp": (write_cv2, (16383, 6000, 4, "uint8", (64, 101))),  # lossless: fast to make
    "gif_10000x9999.gif": (write_gif, (10000, 9999)),
    "jpeg_progressive_10000x9999.jpg": (write_cv2, (10000, 9999, 3, "uint8")),
    # the largest of each that max_decode_bytes (400 MB) still lets through
    "png16_rgba_5000x4999.png": (write_png, (5000, 4999, 4, 16)),
    "png8_rgba_7070x7070.png": (write_png, (7070, 7070, 4, 8)),
    "png8_rgb_8160x8160.png": (write_png, (8160, 8160, 3, 8)),
    "tiff16_rgb_5770x5770.tiff": (write_cv2, (5770, 5770, 3, "uint16")),
    "webp_rgba_16383x3050.webp": (write_cv2, (16383, 3050, 4, "uint8", (64, 101))),
    "gif_7070x7070.gif": (write_gif, (7070, 7070)),
}


def make_inputs(out: str, names=None) -> dict[str, str]:
    os.makedirs(out, exist_ok=True)
    paths = {}
    for name in names or WORST:
        writer, args = WORST[name]
        path = os.path.join(out, name)
        if not os.path.exists(path):
            writer(path, *args)
        paths[name] = path
    return paths


_CHILD = """
import json, resource, sys, time
from schemas.policy import load_policy
from transforms.image.analyze import analyze_image
policy = load_policy()
data = open(sys.argv[1], 'rb').read()
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1])
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak to the current RSS
before = status('VmRSS')
t = time.perf_counter()
row, _ = analyze_image(sys.argv[1], data, policy, thumbnail_px=96)
took = time.perf_counter() - t
print(json.dumps({'peak_above_start_mb': (status('VmHWM') - before) / 1024,
                  'process_peak_mb': status('VmHWM') / 1024,
                  'seconds': round(took, 2), 'status': row['status'], 'reasons': row['reasons'],
                  'error': row['error']}))
"""


def measure(path: str) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _CHILD, path], capture_output=True, text=True, cwd=root,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "worst_images"))
    ap.add_argument("--names", nargs="*", help="only these inputs (default: all)")
    ap.add_argument("--make_only", action="store_true", help="write the inputs, measure nothing")
    a = ap.parse_args(argv)
    paths = make_inputs(a.out, a.names)
    if a.make_only:
        return
    for name, path in paths.items():
        r = measure(path)
        print(f"{name:32s} {os.path.getsize(path) / 1e6:8.2f} MB  peak +{r['peak_above_start_mb']:7.0f} MB  "
              f"process {r['process_peak_mb']:6.0f} MB  {r['seconds']:6.2f} s  {r['status']} {r['reasons']} "
              f"{(r['error'] or '')[:70]}")


if __name__ == "__main__":
    main()
