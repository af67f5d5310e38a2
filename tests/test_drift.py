"""Drift alerts (issue 18.4): each nightly partition's summary against the
earlier nights beside it; alerts.json, the report's trend, a counter, and
--fail_on_drift failing the job after its outputs are complete."""
from __future__ import annotations

import json
import math
import shutil

import cv2
import numpy as np
import pytest

from beam_jobs import curate
from beam_jobs.cli import main
from schemas.policy import DriftThresholds, load_policy
from transforms.curate import drift
from transforms.curate.report import drift_section

T = load_policy(with_model=False).drift


# ---- pure functions ---------------------------------------------------------

def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    p = drift.shares([10, 20, 30, 40])
    assert drift.psi(p, p) == 0
    q = drift.shares([40, 30, 20, 10])
    # By hand: sum (p - q) ln(p / q) over the smoothed shares.
    expected = sum((a - b) * math.log(a / b) for a, b in zip(p, q))
    assert drift.psi(p, q) == pytest.approx(expected) and expected > 0.5
    assert drift.psi(p, q) == pytest.approx(drift.psi(q, p))  # symmetric
    with pytest.raises(ValueError, match="same bins"):
        drift.psi([0.5, 0.5], [1.0])


def test_shares_smooth_empty_bins_so_psi_stays_finite():
    s = drift.shares([0, 10])
    assert s == [pytest.approx(0.5 / 11), pytest.approx(10.5 / 11)]
    assert math.isfinite(drift.psi(drift.shares([0, 100]), drift.shares([100, 0])))


def test_the_baseline_is_the_median_night_so_one_odd_night_does_not_move_it():
    normal, odd = [50, 30, 20], [0, 0, 100]
    assert drift.median_shares([normal, normal, odd]) == pytest.approx(drift.shares(normal), abs=1e-9)


def test_psi_noise_is_what_samples_of_that_size_differ_by():
    # 3 occupied bins (the empty one in all does not count), n = 10, m = 40.
    assert drift.psi_noise([5, 5, 0, 0], [[10, 0, 10, 0], [10, 10, 0, 0]]) == pytest.approx(2 * (1 / 10 + 1 / 40))
    assert drift.psi_noise([0, 0], [[1, 1]]) == 0


def test_rate_check_allows_the_larger_of_the_fixed_change_and_the_sampling_error():
    # Large night: the fixed 5 points decide.
    big = drift.rate_check("blurry", 1200, 10_000, [0.05, 0.06, 0.07], 0.05, 3.0)
    assert big["baseline"] == 0.06 and big["threshold"] == 0.05 and big["alert"] and big["direction"] == "up"
    assert not drift.rate_check("blurry", 1000, 10_000, [0.06], 0.05, 3.0)["alert"]
    # 40 images: 3 standard errors of 6% are 11 points.
    small = drift.rate_check("blurry", 6, 40, [0.06], 0.05, 3.0)
    assert small["threshold"] == pytest.approx(3 * math.sqrt(0.06 * 0.94 / 40), abs=1e-4) and not small["alert"]


def test_volume_check_alerts_outside_the_ratio_both_ways():
    assert not drift.volume_check(150, [100, 90, 110], 2.0)["alert"]
    assert drift.volume_check(201, [100], 2.0)["alert"] and drift.volume_check(49, [100], 2.0)["alert"]
    assert drift.volume_check(5, [0, 0, 0], 2.0)["alert"]


def test_partition_date_is_the_last_part_of_the_output():
    assert drift.partition_date("gs://b/curated/dt=2026-11-03/") == "2026-11-03"
    assert drift.partition_date("/x/dt=2026-11-03") == "2026-11-03"
    assert drift.partition_date("/x/dt=2026-13-03") is None and drift.partition_date("/x/curated") is None


def _summary(matched=100, dark=3, lum=None):
    lum = lum or [2, 2, 3] + [0] * 10 + [10, 20, 30, 20, 10, 3, 0]
    return {"matched": matched, "accepted": matched - dark, "rejected": dark,
            "reasons": {"too_dark": dark} if dark else {},
            "histograms": {"lum_p99": {"counts": lum}},
            "fairness": {"ita_category": {"light": {"images": matched // 2}, "tan": {"images": matched // 2}}}}


def test_compare_needs_enough_history_and_a_dated_partition():
    few = drift.compare(_summary(), [("2026-11-01", _summary())], T, "2026-11-02", 7)
    assert few["alerts"] == [] and few["status"].startswith("not enough history: 1 complete earlier night(s), 3")
    assert few["baseline_dates"] == ["2026-11-01"] and len(few["trend"]) == 2
    undated = drift.compare(_summary(), [], T, None, 7)
    assert undated["alerts"] == [] and undated["status"].startswith("not a dated partition")


def test_compare_flags_a_dark_night_and_not_a_normal_one():
    base = [(f"2026-11-0{i}", _summary(dark=2 + i % 2)) for i in range(1, 5)]
    normal = drift.compare(_summary(matched=110, dark=4), base, T, "2026-11-05", 7, {"2026-11-01": 0})
    assert normal["alerts"] == [], normal["alerts"]
    assert {c["kind"] for c in normal["checks"]} == {"volume", "rejection_rate", "histogram", "tone_mix"}
    assert normal["trend"][0]["alerts"] == 0 and normal["trend"][-1]["alerts"] == 0
    broken = drift.compare(_summary(dark=50, lum=[40, 5, 5] + [0] * 10 + [5, 10, 15, 10, 5, 5, 0]), base, T,
                           "2026-11-05", 7)
    names = {(a["kind"], a["name"]) for a in broken["alerts"]}
    assert {("rejection_rate", "too_dark"), ("rejection_rate", "all"), ("histogram", "lum_p99")} <= names
    assert ("volume", "matched") not in names and ("tone_mix", "ita_category") not in names
    page = drift_section(broken)
    assert "too_dark rejection rate 50.0% vs 2.5%" in page and "2026-11-04" in page and "trend over nights" in page


def test_the_drift_thresholds_are_validated():
    good = {"window_nights": 7, "min_baseline_nights": 3, "max_rate_change": 0.05, "rate_z": 3,
            "max_feature_psi": 0.25, "max_tone_psi": 0.25, "max_volume_ratio": 2}
    assert DriftThresholds.from_dict(good).max_volume_ratio == 2.0
    with pytest.raises(ValueError, match="drift.max_volume_ratio must be > 1"):
        DriftThresholds.from_dict({**good, "max_volume_ratio": 1})


# ---- nights curated end to end ----------------------------------------------

def _night(images, root, seed: int, n: int = 40, dark_half: bool = False):
    """An upload folder of n of the sample images (a seeded pick); with
    dark_half the camera "breaks": every other decodable photo comes out black-ish."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    picked = sorted(rng.choice(len(images), size=n, replace=False))
    for k, i in enumerate(picked):
        src, dst = images[i], root / images[i].name
        pixels = cv2.imread(str(src)) if dark_half and k % 2 == 0 else None
        if pixels is not None:
            cv2.imwrite(str(dst), (pixels * 0.03).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
        else:
            shutil.copy(src, dst)
    return root


@pytest.mark.e2e
def test_a_night_whose_camera_breaks_raises_an_alert_and_fails_the_job_normal_nights_do_not(
        sample_dir, tmp_path, capsys):
    images = sorted((sample_dir / "dataset" / "images").iterdir())
    uploads, out = tmp_path / "uploads", tmp_path / "curated"

    def curate_night(date, seed, *flags, dark_half=False, through_main=False):
        src = _night(images, uploads / f"dt={date}", seed, dark_half=dark_half)
        argv = ["--input", f"{src}/", "--output", str(out / f"dt={date}"), *flags]
        return main(curate.run, argv, prog="curate") if through_main else curate.run(argv)

    for i, date in enumerate(["2026-11-01", "2026-11-02", "2026-11-03"]):
        curate_night(date, seed=i)
    first = json.loads((out / "dt=2026-11-01" / drift.ALERTS_FILE).read_text())
    assert first["status"].startswith("not enough history: 0") and first["alerts"] == []
    third = json.loads((out / "dt=2026-11-03" / drift.ALERTS_FILE).read_text())
    assert third["baseline_dates"] == ["2026-11-01", "2026-11-02"] and third["alerts"] == []

    # The broken night: alerts, counted, and shown in the report's trend.
    result = curate_night("2026-11-04", seed=3, dark_half=True)
    broken = json.loads((out / "dt=2026-11-04" / drift.ALERTS_FILE).read_text())
    assert broken["baseline_dates"] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    names = {(a["kind"], a["name"]) for a in broken["alerts"]}
    assert ("rejection_rate", "too_dark") in names and ("histogram", "lum_p99") in names, broken["alerts"]
    counters = result.metrics().query()["counters"]
    assert sum(c.committed for c in counters if c.key.metric.name == "drift_alerts") == len(broken["alerts"])
    report = (out / "dt=2026-11-04" / "report.html").read_text()
    assert "Drift against earlier nights" in report and "2026-11-03" in report

    # Again with --fail_on_drift: the same outputs, complete, and a failed job with one line.
    capsys.readouterr()
    shutil.rmtree(uploads / "dt=2026-11-04")
    assert curate_night("2026-11-04", 3, "--fail_on_drift", dark_half=True, through_main=True) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("curate: error: drift: ") and "too_dark" in err[0], err
    assert (out / "dt=2026-11-04" / "_SUCCESS").exists()
    assert json.loads((out / "dt=2026-11-04" / drift.ALERTS_FILE).read_text()) == broken

    # A normal night after it: the median baseline is not moved by the broken one.
    assert curate_night("2026-11-05", 4, "--fail_on_drift", through_main=True) == 0
    normal = json.loads((out / "dt=2026-11-05" / drift.ALERTS_FILE).read_text())
    assert normal["alerts"] == [] and len(normal["baseline_dates"]) == 4
    assert normal["status"] == "compared with 4 earlier night(s): 0 alert(s)"
    assert [r["alerts"] for r in normal["trend"]] == [0, 0, 0, len(broken["alerts"]), 0]

    # Dated runs over the same dt= folders (--start_date/--end_date): a night
    # that failed on drift is complete, so a plain rerun skips it and exits 0 ...
    dated = ["--input", str(uploads), "--output", str(out), "--fail_on_drift"]
    stamp = (out / "dt=2026-11-05" / "_SUCCESS").stat().st_mtime_ns
    capsys.readouterr()
    assert main(curate.run, [*dated, "--start_date", "2026-11-01", "--end_date", "2026-11-05"], prog="curate") == 0
    assert "skipping 5 partition(s) already complete" in capsys.readouterr().err
    # ... --force recomputes its alerts and fails, and the backfill stops there:
    # the next night is not rerun.
    assert main(curate.run, [*dated, "--start_date", "2026-11-04", "--end_date", "2026-11-05", "--force"],
                prog="curate") == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("curate: error: drift: ")
    assert (out / "dt=2026-11-05" / "_SUCCESS").stat().st_mtime_ns == stamp
    # Run again without --force, it carries on after the drifted night.
    (out / "dt=2026-11-05" / "_SUCCESS").unlink()
    assert main(curate.run, [*dated, "--start_date", "2026-11-04", "--end_date", "2026-11-05"], prog="curate") == 0
    assert json.loads((out / "dt=2026-11-05" / drift.ALERTS_FILE).read_text())["alerts"] == []


def _partition(root: str, date: str, summary: dict | None, complete: bool = True, alerts: int | None = None):
    from transforms.io.sharded_write import write_atomically
    from apache_beam.io.filesystems import FileSystems
    folder = FileSystems.join(root, f"dt={date}")
    if summary is not None:
        write_atomically(FileSystems.join(folder, drift.SUMMARY_FILE), json.dumps(summary).encode())
    if alerts is not None:
        write_atomically(FileSystems.join(folder, drift.ALERTS_FILE), json.dumps({"alerts": [{}] * alerts}).encode())
    if complete:
        write_atomically(FileSystems.join(folder, drift.MARKER), b"{}")


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_the_baseline_is_the_complete_earlier_partitions_newest_window(where, tmp_path, request):
    if where == "gcs":
        emulator = request.getfixturevalue("gcs_emulator")
        emulator.create_bucket("drift-out")
        root = "gs://drift-out/curated"
    else:
        root = str(tmp_path / "curated")
    for day in range(1, 7):
        _partition(root, f"2026-11-0{day}", _summary(matched=100 + day), alerts=day % 2)
    _partition(root, "2026-11-07", _summary(), complete=False)   # still being written: not a baseline night
    _partition(root, "2026-11-09", _summary())                   # later than tonight
    _partition(root, "2026-11-02x", _summary())                  # not a date
    _partition(root, "2026-10-31", None)                         # no summary (an older layout): left out
    tonight = f"{root}/dt=2026-11-08"
    found = drift.find_baseline(tonight, 4)
    assert [d for d, _ in found] == ["2026-11-03", "2026-11-04", "2026-11-05", "2026-11-06"]
    assert [d for d, _ in drift.read_baseline(drift.find_baseline(tonight, 8))[0]][:2] == ["2026-11-01", "2026-11-02"]
    nights, alerts = drift.read_baseline(found)
    assert [(d, s["matched"]) for d, s in nights] == [("2026-11-03", 103), ("2026-11-04", 104), ("2026-11-05", 105),
                                                      ("2026-11-06", 106)]
    assert alerts == {"2026-11-03": 1, "2026-11-04": 0, "2026-11-05": 1, "2026-11-06": 0}
    assert drift.find_baseline(f"{root}/latest", 4) == [] and drift.find_baseline(tonight, 0) == []


def test_a_bad_drift_window_is_a_one_line_error(tmp_path, capsys):
    assert main(curate.run, ["--input", f"{tmp_path}/", "--output", str(tmp_path / "out" / "dt=2026-11-01"),
                             "--drift_window", "0"], prog="curate") == 2
    assert capsys.readouterr().err == "curate: error: --drift_window must be positive, got 0\n"
