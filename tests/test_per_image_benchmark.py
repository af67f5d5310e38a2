"""benchmarks.curate_per_image --compare-rev: two source trees' per-image paths
timed on the same images, each beside its own decode floor."""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np

from benchmarks import curate_per_image as bench

REPO = Path(__file__).resolve().parent.parent


def _jpeg(seed: int, progressive: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur((rng.random((480, 640, 3)) * 255).astype(np.uint8), (0, 0), 3)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    return buf.tobytes()


def _worktrees() -> str:
    return subprocess.run(["git", "worktree", "list"], cwd=REPO, check=True, capture_output=True, text=True).stdout


def test_compare_rev_times_both_trees_on_the_same_images_and_removes_its_worktree():
    images = [("a.jpg", _jpeg(0)), ("b.jpg", _jpeg(1, progressive=True))]
    before = _worktrees()
    out = bench.compare_revision(images, "HEAD", rounds=2, repeats=1, thumbnail_px=96)
    assert set(out) == {"this tree", "HEAD"}
    for kinds in out.values():
        assert {k: v["images"] for k, v in kinds.items()} == {"all": 2, "baseline": 1, "progressive": 1}
        for v in kinds.values():
            assert v["decode_only_ms"] > 0 and v["path_ms"] > 0
            assert v["path_vs_decode_only"] == v["path_vs_decode_only"] > 0   # a number, not NaN
    assert _worktrees() == before


def test_the_bench_summary_shows_the_baseline_jpeg_ratio_beside_the_mix():
    from benchmarks.run_all import headline
    doc = {"images_per_s": {"path": 40.0},
           "ratios": {"path_vs_decode_only": 0.77, "path_vs_naive": 15.0, "path_vs_decode_only_baseline": 0.72}}
    rows = {figure.strip(): (value, target) for _name, figure, value, target in headline("curate_per_image", doc)}
    assert rows["... baseline JPEGs only"] == (0.72, ">= 0.8")
    assert rows["path / decode-only (images/s)"] == (0.77, ">= 0.8")
