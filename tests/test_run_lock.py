"""The output lock (transforms/io/run_lock.py) on a local disk and on gs:// (the
real GCS emulator): one holder at a time, stale and same-run takeover, a
holder that lost its lock cannot release or publish."""
from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from apache_beam.io.filesystems import FileSystems

from transforms.io import run_lock
from transforms.io.run_lock import LockHeld, LockLost

LOCK_BUCKET = "lock-tests"


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.e2e)])
def lock_dir(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out" / "_LOCK")
    emulator = request.getfixturevalue("gcs_emulator")
    emulator.create_bucket(LOCK_BUCKET)
    return f"gs://{LOCK_BUCKET}/{uuid.uuid4().hex}/out/_LOCK"


def _candidates(lock_dir):
    try:
        return sorted(m.path.rsplit("/", 1)[1] for m in
                      FileSystems.match([FileSystems.join(lock_dir, "*.json")])[0].metadata_list)
    except Exception:
        return []


def _files(lock_dir):
    """Everything in the lock folder: candidates, their flags, half-written files."""
    try:
        found = FileSystems.match([FileSystems.join(lock_dir, "*")])[0].metadata_list
        return sorted(m.path.rsplit("/", 1)[1] for m in found)
    except Exception:
        return []


def test_second_acquire_fails_in_one_line_naming_the_holder_until_released(lock_dir):
    a, b = run_lock.new_lock_info("curate", "night-1"), run_lock.new_lock_info("curate", "backfill-7")
    run_lock.acquire(lock_dir, a, "OUT")
    run_lock.acquire(lock_dir, a, "OUT")  # idempotent for the same attempt (a retried bundle)
    with pytest.raises(LockHeld) as e:
        run_lock.acquire(lock_dir, b, "OUT", retries=2)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("OUT is locked by run night-1 (curate on ")
    assert a["started"] in msg and "--break_lock" in msg and "--lock_ttl_hours=24" in msg
    assert _candidates(lock_dir) == [f"{a['attempt']}.json"]  # the loser withdrew
    run_lock.check(lock_dir, a, "OUT")
    run_lock.release(lock_dir, a, "OUT")
    assert _candidates(lock_dir) == []
    run_lock.acquire(lock_dir, b, "OUT")  # free again
    run_lock.release(lock_dir, b, "OUT")


def test_release_or_check_by_a_non_holder_is_refused_and_removes_nothing(lock_dir):
    a, b = run_lock.new_lock_info("score", "r1"), run_lock.new_lock_info("score", "r2")
    run_lock.acquire(lock_dir, a, "P")
    for call in (run_lock.release, run_lock.check):
        with pytest.raises(LockLost) as e:
            call(lock_dir, b, "P")
        assert "no longer holds its lock" in str(e.value) and "run r1" in str(e.value)
    assert run_lock.release_own(lock_dir, b) is False  # the pipelines' release step: never another's
    assert _candidates(lock_dir) == [f"{a['attempt']}.json"]
    assert run_lock.release_own(lock_dir, a) is True
    assert run_lock.release_own(lock_dir, a) is False  # run again by a runner's retry: no error
    assert _candidates(lock_dir) == []


def _plant(lock_dir, info, held=False):
    from transforms.io.sharded_write import write_atomically
    write_atomically(FileSystems.join(lock_dir, f"{info['attempt']}.json"), json.dumps(info).encode())
    if held:
        _plant_flag(lock_dir, info["attempt"])


def _plant_flag(lock_dir, attempt):
    from transforms.io.sharded_write import write_atomically
    write_atomically(FileSystems.join(lock_dir, f"{attempt}{run_lock.HELD}"), b"")


def test_stale_same_run_and_broken_locks_are_taken_over_and_the_old_holder_cannot_publish(lock_dir):
    dead = run_lock.new_lock_info("curate", "killed")
    dead["started_unix"] -= 25 * 3600  # older than the default 24 h
    _plant(lock_dir, dead, held=True)
    _plant_flag(lock_dir, "killed-before-releasing-its-flag")  # a flag whose candidate is gone
    new = run_lock.new_lock_info("curate", "next")
    run_lock.acquire(lock_dir, new, "OUT")
    # The dead run's candidate and flag went, and the orphan flag; the holder flagged itself.
    assert _files(lock_dir) == [f"{new['attempt']}.held", f"{new['attempt']}.json"]
    with pytest.raises(LockLost):  # the stale holder, were it alive, stops before publishing
        run_lock.check(lock_dir, dead, "OUT")

    # A young lock is live under the default TTL, stale under a shorter one.
    with pytest.raises(LockHeld):
        run_lock.acquire(lock_dir, run_lock.new_lock_info("curate", "other"), "OUT", retries=1)
    time.sleep(0.05)
    short = run_lock.new_lock_info("curate", "impatient")
    run_lock.acquire(lock_dir, short, "OUT", ttl_hours=0.01 / 3600)
    # A retry of the same run (same --run_id, a new attempt) takes its failed attempt's lock.
    retry = run_lock.new_lock_info("curate", "impatient")
    run_lock.acquire(lock_dir, retry, "OUT", retries=1)
    # --break_lock takes over whoever holds it.
    breaker = run_lock.new_lock_info("curate", "operator")
    run_lock.acquire(lock_dir, breaker, "OUT", break_lock=True, retries=1)
    assert _candidates(lock_dir) == [f"{breaker['attempt']}.json"]
    for old in (short, retry):
        with pytest.raises(LockLost):
            run_lock.release(lock_dir, old, "OUT")
    run_lock.release(lock_dir, breaker, "OUT")


def test_racing_acquirers_never_both_hold(lock_dir):
    """Many threads race for one lock, holding it briefly; at no time do two
    believe they hold it, and every one either held it or was refused."""
    holders, overlaps, outcomes = set(), [], []
    guard = threading.Lock()

    def contend(i):
        me = run_lock.new_lock_info("score", f"run-{i}")
        try:
            run_lock.acquire(lock_dir, me, "P", retries=2)
        except LockHeld:
            outcomes.append("refused")
            return
        with guard:
            if holders:
                overlaps.append((i, set(holders)))
            holders.add(i)
        time.sleep(0.05)
        with guard:
            holders.discard(i)
        run_lock.release(lock_dir, me, "P")
        outcomes.append("held")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlaps
    assert len(outcomes) == 6 and "held" in outcomes
    assert _candidates(lock_dir) == []


@pytest.mark.parametrize("withdraw_seconds", [0.0, 1.5])
def test_contenders_that_all_see_each_other_do_not_all_withdraw(lock_dir, monkeypatch, withdraw_seconds):
    """The worst interleaving, made certain: every contender has written its
    candidate before any of them lists. Each then sees all the others; when
    each withdrew, nobody held the lock, every try (seen on a loaded machine).
    The oldest stays, the younger withdraw, and exactly one holds it: also when
    the younger take longer to withdraw than the oldest stayed (1.5 s; under
    load the oldest gave up first and, again, nobody held it)."""
    n = 4
    written = threading.Barrier(n)
    first_listing = threading.local()
    real_listing, real_delete = run_lock._listing, FileSystems.delete
    runs = [run_lock.new_lock_info("score", f"run-{i}") for i in range(n)]
    oldest = min(runs, key=lambda me: (me["started_unix"], me["attempt"]))

    def listing_after_all_wrote(lock_dir_, me):
        if not getattr(first_listing, "done", False):
            first_listing.done = True
            written.wait(timeout=60)
        return real_listing(lock_dir_, me)

    def slow_withdrawal(paths):
        if any(p.endswith(".json") and oldest["attempt"] not in p for p in paths):
            time.sleep(withdraw_seconds)
        return real_delete(paths)

    monkeypatch.setattr(run_lock, "_listing", listing_after_all_wrote)
    monkeypatch.setattr(run_lock.FileSystems, "delete", slow_withdrawal)
    outcomes = {}

    def contend(me):
        try:
            run_lock.acquire(lock_dir, me, "P", retries=1)
            outcomes[me["run_id"]] = "held"
        except LockHeld:
            outcomes[me["run_id"]] = "refused"

    threads = [threading.Thread(target=contend, args=(me,)) for me in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == {me["run_id"]: "held" if me is oldest else "refused" for me in runs}
    assert _candidates(lock_dir) == [f"{oldest['attempt']}.json"]


def test_a_run_meeting_a_holder_it_is_older_than_is_refused_without_waiting_out_its_stay(lock_dir, monkeypatch):
    """A run built first can reach its lock step last (a Dataflow job whose
    workers took minutes to start). It is then the oldest candidate, and the
    oldest stays for the younger to withdraw; a holder never will. Its flag
    tells it apart: the older run withdraws at once, as from any holder."""
    older, holder = run_lock.new_lock_info("score", "launched-first"), run_lock.new_lock_info("score", "ran-first")
    assert older["started_unix"] <= holder["started_unix"]
    run_lock.acquire(lock_dir, holder, "P")
    monkeypatch.setattr(run_lock, "STAY_SECONDS", 20.0)  # were the flag not read: 40 s, two tries' stays
    started = time.monotonic()
    with pytest.raises(LockHeld) as e:
        run_lock.acquire(lock_dir, older, "P", retries=2)
    assert time.monotonic() - started < 10
    assert "locked by run ran-first" in str(e.value)
    run_lock.release(lock_dir, holder, "P")
    assert _candidates(lock_dir) == [] and _files(lock_dir) == []


def test_a_run_whose_candidate_is_removed_under_it_writes_it_again_and_never_holds_without_it(lock_dir, monkeypatch):
    """A --break_lock run may delete a contender's candidate while it waits.
    The contender must not take a listing without its own candidate for the
    lock: it writes it again, and if it keeps vanishing it is refused in one
    line (it raised ValueError from min() of nobody)."""
    me = run_lock.new_lock_info("score", "victim")
    real_listing = run_lock._listing

    def listing_after_removal(lock_dir_, me_):
        FileSystems.delete([FileSystems.join(lock_dir_, f"{me_['attempt']}.json")])  # another run's takeover
        return real_listing(lock_dir_, me_)

    monkeypatch.setattr(run_lock, "_listing", listing_after_removal)
    with pytest.raises(LockHeld, match=r"lock candidate was removed by another run on each of 2 tries"):
        run_lock.acquire(lock_dir, me, "P", retries=2)
    assert _files(lock_dir) == []
    monkeypatch.setattr(run_lock, "_listing", real_listing)
    run_lock.acquire(lock_dir, me, "P")  # left alone, it holds
    assert _files(lock_dir) == [f"{me['attempt']}.held", f"{me['attempt']}.json"]


def test_a_dead_lock_that_cannot_be_deleted_is_refused_not_looped_on(lock_dir, monkeypatch):
    """A stale candidate whose delete fails (a permission, a storage error)
    was listed, found takeable and deleted again, for ever: the run hung."""
    stale = run_lock.new_lock_info("curate", "stuck")
    stale["started_unix"] -= 25 * 3600
    _plant(lock_dir, stale)
    stuck = FileSystems.join(lock_dir, f"{stale['attempt']}.json")
    real_delete = FileSystems.delete

    def delete_failing_for_stuck(paths):
        if stuck in paths:
            raise OSError("permission denied")
        return real_delete(paths)

    monkeypatch.setattr(run_lock.FileSystems, "delete", delete_failing_for_stuck)
    outcome = []

    def contend():
        try:
            run_lock.acquire(lock_dir, run_lock.new_lock_info("curate", "next"), "OUT", retries=1)
            outcome.append("held")
        except LockHeld as e:
            outcome.append(str(e))

    t = threading.Thread(target=contend, daemon=True)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), "acquire looped on a lock it could not delete"
    assert outcome and outcome[0].startswith("OUT is locked by run stuck")
    assert f"but its lock {stuck} could not be deleted: remove it, then rerun" in outcome[0]
    assert _candidates(lock_dir) == [f"{stale['attempt']}.json"]


def test_a_lock_left_by_a_killed_process_on_this_machine_is_taken_over_at_once(lock_dir):
    import subprocess
    proc = subprocess.Popen(["sleep", "30"])
    killed = run_lock.new_lock_info("curate", "local-run")
    killed["pid"] = proc.pid
    _plant(lock_dir, killed)
    with pytest.raises(LockHeld):  # alive: held
        run_lock.acquire(lock_dir, run_lock.new_lock_info("curate", "x"), "OUT", retries=1)
    proc.kill()
    proc.wait()
    elsewhere = dict(run_lock.new_lock_info("curate", "remote"), host="another-machine", pid=proc.pid)
    _plant(lock_dir, elsewhere)
    with pytest.raises(LockHeld):  # a pid on another machine says nothing about it
        run_lock.acquire(lock_dir, run_lock.new_lock_info("curate", "y"), "OUT", retries=1)
    assert _candidates(lock_dir) == [f"{elsewhere['attempt']}.json"]  # the dead local one went
    FileSystems.delete([FileSystems.join(lock_dir, f"{elsewhere['attempt']}.json")])
    new = run_lock.new_lock_info("curate", "z")
    run_lock.acquire(lock_dir, new, "OUT", retries=1)
    assert _candidates(lock_dir) == [f"{new['attempt']}.json"]


@pytest.mark.parametrize("extra, message", [
    (["--lock_ttl_hours", "0"], "--lock_ttl_hours must be a positive number of hours, got 0.0"),
    # nan passed `<= 0`: a lock no age would ever make stale
    (["--lock_ttl_hours", "nan"], "--lock_ttl_hours must be a positive number of hours, got nan"),
    (["--run_id", "a b"], "--run_id 'a b': use letters, digits and _.:+=@- only"),
])
def test_bad_lock_options_are_one_line_errors_before_work(extra, message, tmp_path, capsys):
    from beam_jobs import curate
    from beam_jobs.cli import main
    assert main(curate.run, ["--input", f"{tmp_path}/*.jpg", "--output", str(tmp_path / "o"), *extra],
                prog="curate") == 2
    assert capsys.readouterr().err == f"curate: error: {message}\n"
    assert not (tmp_path / "o").exists()


def test_run_id_retries_and_break_lock_take_over_only_runs_built_before_them(lock_dir):
    """Two tries of one run id (or two --break_lock runs) racing cannot both
    win: only a younger run takes an older one's lock."""
    first = run_lock.new_lock_info("score", "scheduled__2026-11-22")
    time.sleep(0.01)
    retry = run_lock.new_lock_info("score", "scheduled__2026-11-22")
    run_lock.acquire(lock_dir, first, "P")
    run_lock.acquire(lock_dir, retry, "P", retries=1)  # the failed first try's lock is taken over
    with pytest.raises(LockHeld):  # the first try, alive after all, cannot take it back
        run_lock.acquire(lock_dir, first, "P", retries=1)
    built_before = dict(run_lock.new_lock_info("score", "ops"), started_unix=retry["started_unix"] - 1)
    with pytest.raises(LockHeld):
        run_lock.acquire(lock_dir, built_before, "P", break_lock=True, retries=1)
    assert _candidates(lock_dir) == [f"{retry['attempt']}.json"]
    breaker = run_lock.new_lock_info("score", "ops")
    run_lock.acquire(lock_dir, breaker, "P", break_lock=True, retries=1)
    assert _candidates(lock_dir) == [f"{breaker['attempt']}.json"]


def test_a_killed_runs_half_written_candidate_is_removed_once_it_is_old(lock_dir):
    """A run killed while writing its candidate leaves write_atomically's
    temporary file: no listing counts it (not *.json), and nothing removed it,
    so every such kill left litter in the output's lock folder for good."""
    half = FileSystems.join(lock_dir, f".tmp-{uuid.uuid4().hex}-{uuid.uuid4().hex}.json.partial")
    with FileSystems.create(half) as f:
        f.write(b'{"job": "cur')
    me = run_lock.new_lock_info("score", "r1")
    run_lock.acquire(lock_dir, me, "OUT", retries=1)  # not in the way, and young: a contender's write may be going on
    assert FileSystems.exists(half)
    run_lock.release(lock_dir, me, "OUT")
    if "://" in lock_dir:  # no way to age an object: the same listing, judged later
        run_lock._reap_abandoned_writes(lock_dir, now=time.time() + run_lock.ABANDONED_WRITE_SECONDS + 60)
    else:
        import os
        old = time.time() - run_lock.ABANDONED_WRITE_SECONDS - 60
        os.utime(half, (old, old))
        run_lock.acquire(lock_dir, run_lock.new_lock_info("score", "r2"), "OUT", retries=1)
    assert not FileSystems.exists(half)
