"""Helpers shared by the benchmark scripts: cached sample data, tables, JSON.

Not a benchmark itself. Sample sets are generated once per parameter set into
/tmp/bench_cache/<key> (written to a temporary directory, then renamed, so an
interrupted or concurrent run never leaves a half-written set behind) and
reused by later runs.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("BENCH_CACHE", "/tmp/bench_cache"))


def proc_status_kb(key: str) -> int:
    """A kB figure of this process from /proc/self/status: VmRSS, or VmHWM, its
    own peak RSS (Linux's ru_maxrss is at least the RSS its parent had when it
    forked: the hiwater of the pre-exec copy)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def reset_peak_rss() -> int:
    """Resets VmHWM to the current RSS (Linux >= 4.0); returns that RSS in kB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return proc_status_kb("VmRSS")


def median(values) -> float:
    return float(statistics.median(values))


def cases_for(min_images: int = 0, min_none: int = 0, seed: int = 0) -> int:
    """Smallest case count whose planned dataset has >= min_images images and
    >= min_none defect-free ones (planning is cheap: no pixels are rendered)."""
    from beam_jobs.sample_data.plan import plan_dataset

    def ok(c):
        items = plan_dataset(c, seed).images
        return len(items) >= min_images and sum(i.defect == "none" for i in items) >= min_none

    lo, hi = 0, 1
    while not ok(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # counts grow monotonically with cases in practice; check the answer anyway
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def _generator_version() -> str:
    """Short hash of the sample-data generator's source, so a changed generator
    never reuses images cached by an older one."""
    import beam_jobs.sample_data as pkg

    digest = hashlib.sha256()
    for f in sorted(Path(pkg.__file__).parent.glob("*.py")):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:10]


def sample_set(cases: int, seed: int, size: tuple[int, int], log=print) -> Path:
    """Directory holding generate(dir, cases, seed, size) output, generated on first use."""
    from beam_jobs.sample_data import generate

    w, h = size
    final = CACHE_ROOT / f"sample_{w}x{h}_cases{cases}_seed{seed}_gen{_generator_version()}"
    if (final / "ground_truth.csv").exists():
        return final
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=CACHE_ROOT))
    t0 = time.perf_counter()
    log(f"generating {cases} cases at {w}x{h} (seed {seed}) into {final} ...", flush=True)
    try:
        summary = generate(tmp, cases, seed, size=size)
        try:
            tmp.rename(final)
        except OSError:  # another run got there first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"  {summary['images']} images in {time.perf_counter() - t0:.0f} s", flush=True)
    return final


def ground_truth(root: Path) -> list[dict]:
    with open(root / "ground_truth.csv", newline="") as f:
        return list(csv.DictReader(f))


def table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    """A plain fixed-width table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    # First column and text columns left-aligned, numeric columns right-aligned.
    right = [i > 0 and all(_numeric(r[i]) for r in cells[1:]) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.rjust(w) if rj else c.ljust(w) for c, w, rj in zip(r, widths, right)).rstrip()

    out = [title] if title else []
    out += [line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]
    return "\n".join(out)


def _numeric(text: str) -> bool:
    t = text.replace(",", "").replace("%", "").lstrip("<>=~ ")
    try:
        float(t)
    except ValueError:
        return text in ("", "n/a")
    return True


def _fmt(c) -> str:
    if isinstance(c, float):
        if c == 0 or abs(c) >= 100:
            return f"{c:.0f}"
        if abs(c) >= 10:
            return f"{c:.1f}"
        return f"{c:.2f}" if abs(c) >= 0.1 else f"{c:.3g}"
    return str(c)


def environment() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write_json(path: str | None, doc: dict) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({**doc, "environment": environment()}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {p}")
