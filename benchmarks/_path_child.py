"""Child of benchmarks/curate_per_image.py --compare-rev: times one source
tree's per-image path beside the decode-only floor, in its own process.

    python benchmarks/_path_child.py ROOT IMAGES OUT REPEATS

ROOT is a checkout (the current one, or a worktree of an older revision);
its own schemas and transforms are imported, under the package layout of
either era (transforms.image.analyze, or transforms.analyze before it).
IMAGES is a pickle of [(uri, bytes)]; OUT gets a JSON list of per-image
[decode-only ms, path ms] medians. Per image, the two alternate in order
from repeat to repeat, so load hits both alike. Imports nothing of the
project before ROOT is on the path.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import pickle  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402


def main(root: str, images_path: str, out: str, repeats: int, thumbnail_px: int = 96) -> None:
    sys.path.insert(0, root)
    import cv2
    import numpy as np
    from schemas.policy import load_policy
    try:
        from transforms.image.analyze import analyze_image
    except ImportError:  # before the transforms/image package
        from transforms.analyze import analyze_image
    cv2.setNumThreads(1)
    policy = load_policy()
    with open(images_path, "rb") as f:
        images = pickle.load(f)

    def path(uri, data):
        return analyze_image(uri, data, policy, thumbnail_px=thumbnail_px)

    def decode_only(data, flag):
        return cv2.imdecode(np.frombuffer(data, np.uint8), flag)

    # Each image's floor is the decode at the DCT scale its path picked (the
    # row says which), and running the path once per image warms it up: lazy
    # imports, the model, the allocator.
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}
    floors = [flags[path(uri, data)[0]["decode_scale"]] for uri, data in images]
    times = [([], []) for _ in images]
    for r in range(repeats):
        for i, (uri, data) in enumerate(images):
            calls = ((0, decode_only, (data, floors[i])), (1, path, (uri, data)))
            for k, fn, args in (calls if r % 2 else calls[::-1]):
                t0 = time.perf_counter()
                fn(*args)
                times[i][k].append((time.perf_counter() - t0) * 1000)
    with open(out, "w") as f:
        json.dump([[statistics.median(d), statistics.median(p)] for d, p in times], f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), *map(int, sys.argv[5:]))
