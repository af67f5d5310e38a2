"""One run at a time per output location: an exclusive lock on local paths and gs://.

Two runs writing one output interleave (curate deletes the other's shards as
stale, score runs delete each other's partition). Each job therefore takes a
lock on every location it publishes to before its first write, checks it
still holds it before deleting or marking anything complete, and releases it
only after the `_SUCCESS` marker is written.

The protocol needs only what both local disks and GCS (and the GCS emulator,
which ignores `ifGenerationMatch` preconditions) guarantee: a whole object
appears atomically, names are unique, and a listing shows every object whose
write finished before the listing started. A lock is a folder LOCK_DIR; a run
takes it by

    1. writing its own candidate LOCK_DIR/<attempt>.json (unique name, no race),
    2. listing LOCK_DIR: alone -> it holds the lock. Otherwise it deletes the
       others only if they are dead: stale (older than ttl_hours), left by a
       process on this machine that is gone, or (with the same --run_id, or
       with --break_lock) built before this run; then it lists again. If a
       live other remains, the run withdraws its candidate, waits a random
       moment and retries a few times, then fails naming the holder; except
       the oldest candidate in the listing (by build time, then attempt),
       which keeps its candidate and lists again first, so that contenders
       that all see each other do not all withdraw (under load they did,
       every try: nobody held the lock).
    3. a run that holds writes LOCK_DIR/<attempt>.held beside its candidate,
       so that the oldest candidate withdraws at once from a holder and
       otherwise stays until the younger are gone (at most STAY_SECONDS:
       a fixed moment was too short under load, the younger were still
       withdrawing when the oldest gave up). A .held counts only beside its
       candidate: the lock is the candidate, the flag only says it is held.

Two runs cannot both hold it: a run holds only when a listing shows no other
candidate, and a holder's candidate stays from its write to its release. If
A's listing missed B's candidate, B's write finished after A's listing began,
so B's own later listing sees A and B does not hold. Staying and the flag
change nothing there: the oldest still holds only once a listing shows it
alone, and a flag is written only by a run that already holds.
Takeovers keep that: a --run_id retry or --break_lock only removes runs
built before it, so of two such runs racing only the younger can win.
A killed run leaves its candidate: a run on the same machine once that
process is gone (local runs), a retry of the same --run_id, a run after
ttl_hours, or --break_lock takes it over; the taken-over run, if it was alive
after all, finds its candidate gone at its next check and fails before it
deletes or marks anything.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import posixpath
import random
import socket
import time
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.errors import JobFailed, Refused
from transforms.io.allowed_roots import literal

DEFAULT_TTL_HOURS = 24.0
# Every job's output: OUT/_LOCK/<attempt>.json while a run writes OUT, OUT/_SUCCESS
# (or a partition's) written last, when it is complete.
MARKER = "_SUCCESS"
LOCK = "_LOCK"
RETRIES = 4
HELD = ".held"
# How long, per try, the oldest of several candidates waits at most for the
# younger ones to withdraw, and how often it looks meanwhile. It stops waiting
# as soon as one of them is flagged held; the bound is for a holder killed
# before it wrote its flag (or a run of an older version, which writes none).
STAY_SECONDS = 30.0
STAY_POLL_SECONDS = 0.1


class LockHeld(Refused):
    """Another live run holds the lock (one line naming it)."""


class LockLost(Refused):
    """This run's lock was taken over (or never taken): it must not publish."""


def new_lock_info(job: str, run_id: str | None = None) -> dict:
    """Who a run is, fixed when its pipeline is built: what the lock records."""
    now = time.time()
    return {"job": job, "run_id": run_id or uuid.uuid4().hex, "attempt": uuid.uuid4().hex,
            "host": socket.gethostname(), "pid": os.getpid(), "started_unix": now,
            "started": dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")}


def _candidate(lock_dir: str, attempt: str) -> str:
    return FileSystems.join(lock_dir, f"{attempt}.json")


def _flag(candidate: str) -> str:
    return candidate[:-len(".json")] + HELD


def _others(lock_dir: str, me: dict) -> list[dict]:
    """The other candidates in lock_dir, with their recorded info (or what is known)."""
    return _listing(lock_dir, me)[1]


def _listing(lock_dir: str, me: dict) -> tuple[bool, list[dict], list[str]]:
    """(whether me's candidate is there; the other candidates, each with its
    recorded info and `held`; flags whose candidate is gone)."""
    # No try: a listing that fails must not read as "nobody there". (A local
    # folder that does not exist yet lists as empty.) lock_dir is escaped: an
    # output named out[1] must not list out1's lock.
    found = {posixpath.basename(m.path): m for m in
             FileSystems.match([FileSystems.join(literal(lock_dir), "*")])[0].metadata_list}
    flags = {name for name in found if name.endswith(HELD)}
    mine = f"{me['attempt']}.json"
    out = []
    for name, m in sorted(found.items()):
        if not name.endswith(".json") or name == mine:
            continue
        try:
            with FileSystems.open(m.path) as f:
                info = json.loads(f.read())
        except Exception:  # deleted meanwhile, or unreadable: judge by its age alone
            if not FileSystems.exists(m.path):
                continue
            info = {"run_id": "?", "job": "?", "host": "?", "started_unix": m.last_updated_in_seconds or 0}
        out.append(dict(info, path=m.path, held=_flag(name) in flags))
    orphan_flags = [found[f].path for f in sorted(flags) if f[:-len(HELD)] + ".json" not in found]
    return mine in found, out, orphan_flags


def _dead_here(info: dict) -> bool:
    """The holder ran on this machine and its process is gone (a killed local run)."""
    if info.get("host") != socket.gethostname() or not info.get("pid"):
        return False
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):  # alive under another user, or a bad record
        return False
    return False


def _older(other: dict, me: dict) -> bool:
    """other's run was built before mine (a failed earlier try, or a holder
    that --break_lock means to replace; never a contender that came later)."""
    return float(other.get("started_unix") or 0) < float(me["started_unix"])


def _rank(info: dict) -> tuple:
    """Candidates' order for the tie-break: the earlier built first (a total order)."""
    return float(info.get("started_unix") or 0), str(info.get("attempt") or info.get("path") or "")


def _age_hours(info: dict, now: float) -> float:
    return (now - float(info.get("started_unix") or 0)) / 3600


def _ago(hours: float) -> str:
    return f"{hours * 60:.0f} min ago" if hours < 1 else f"{hours:.1f} h ago"


def _held_message(where: str, other: dict, ttl_hours: float, now: float) -> str:
    age = _age_hours(other, now)
    held = (f"{where} is locked by run {other.get('run_id')} ({other.get('job')} on {other.get('host')}, "
            f"since {other.get('started') or '?'} UTC, {_ago(age)})")
    if age > ttl_hours:  # dead by its age, yet still there: its delete failed
        return (f"{held}, older than --lock_ttl_hours={ttl_hours:g}, but its lock {other.get('path')} could not "
                f"be deleted: remove it, then rerun")
    return (f"{held}: another run is writing there. "
            f"Wait for it to finish; if it died, rerun with its --run_id or with --break_lock "
            f"(locks older than --lock_ttl_hours={ttl_hours:g} are taken over automatically)")


def acquire(lock_dir: str, me: dict, where: str, ttl_hours: float = DEFAULT_TTL_HOURS,
            break_lock: bool = False, retries: int = RETRIES) -> str:
    """Take the lock for `me` (new_lock_info) or raise LockHeld; returns lock_dir.

    Idempotent for the same attempt (a retried bundle finds its own candidate).
    """
    from transforms.io.sharded_write import write_atomically
    mine = _candidate(lock_dir, me["attempt"])
    for attempt in range(retries):
        write_atomically(mine, json.dumps(me, sort_keys=True).encode())
        stayed_since = None  # the first listing that shows others
        removed = set()      # once each: one that cannot be deleted counts as live, not as a loop
        while True:
            now = time.time()
            present, others, orphan_flags = _listing(lock_dir, me)
            if not present:  # taken over meanwhile (--break_lock, a --run_id retry): write it again
                break
            takeable = [o for o in others if o["path"] not in removed and (
                _age_hours(o, now) > ttl_hours or _dead_here(o)
                or ((break_lock or o.get("run_id") == me["run_id"]) and _older(o, me)))]
            removed.update(o["path"] for o in takeable)
            for o in takeable:  # their run is dead (or declared so): its lock goes
                _delete_quietly([o["path"], _flag(o["path"])])
            if takeable:
                continue
            if not others:
                write_atomically(_flag(mine), b"")
                _delete_quietly(orphan_flags)  # left by killed holders
                _reap_abandoned_writes(lock_dir)
                return lock_dir
            # A live other: a holder, or a contender that listed when we did.
            # The oldest candidate stays for the younger to withdraw, unless
            # one of them holds (a holder will not withdraw).
            if stayed_since is None:
                stayed_since = time.monotonic()
            if (_rank(me) < min(_rank(o) for o in others) and not any(o["held"] for o in others)
                    and time.monotonic() - stayed_since < STAY_SECONDS):
                time.sleep(STAY_POLL_SECONDS)
                continue
            break
        release_own(lock_dir, me)  # withdraw (unless it was taken over)
        if attempt < retries - 1:
            time.sleep(random.uniform(0.2, 0.6) * (attempt + 1))
    if not others:  # its candidate was deleted under it on every try, by nobody still there
        raise LockHeld(f"{where}: this run's lock candidate was removed by another run on each of {retries} "
                       f"tries (a --break_lock or --run_id retry of it?): rerun once no other run writes there")
    holder = min(others, key=lambda o: float(o.get("started_unix") or 0))
    raise LockHeld(_held_message(where, holder, ttl_hours, time.time()))


def _delete_quietly(paths: list[str]) -> None:
    """Delete each of paths that is there (another run may have removed it first)."""
    for path in paths:
        try:
            FileSystems.delete([path])
        except Exception:
            pass


# A candidate is a few hundred bytes, written in milliseconds: a temporary
# file this old in a lock folder is a killed run's half-written candidate.
# (A younger one may be a contender's write in progress; deleting it would
# fail that run's rename, where it should be told who holds the lock.)
ABANDONED_WRITE_SECONDS = 600


def _reap_abandoned_writes(lock_dir: str, now: float | None = None) -> None:
    """Delete killed runs' half-written candidates (write_atomically's
    `.tmp-*.partial`), which no listing counts but nothing else removes."""
    now = time.time() if now is None else now
    old = [m.path for m in FileSystems.match([FileSystems.join(lock_dir, ".tmp-*.partial")])[0].metadata_list
           if now - (m.last_updated_in_seconds or now) > ABANDONED_WRITE_SECONDS]
    try:
        if old:
            FileSystems.delete(old)
    except Exception:  # another holder-to-be reaped them first
        pass


def check(lock_dir: str, me: dict, where: str) -> None:
    """Raise LockLost unless `me` still holds the lock on lock_dir."""
    if not FileSystems.exists(_candidate(lock_dir, me["attempt"])):
        others = _others(lock_dir, me)
        by = f" by run {others[0].get('run_id')} ({others[0].get('job')} on {others[0].get('host')})" if others else ""
        raise LockLost(f"{where}: this run ({me['run_id']}) no longer holds its lock (taken over{by}); "
                       f"it stopped before publishing anything; rerun once the other run is done")


def release(lock_dir: str, me: dict, where: str) -> None:
    """Give the lock up; LockLost if `me` does not hold it (never removes another's)."""
    check(lock_dir, me, where)
    release_own(lock_dir, me)


def release_own(lock_dir: str, me: dict) -> bool:
    """Drop `me`'s candidate if it is still there, never anyone else's; True if
    it was. For a pipeline's last step, which a runner may run again after it
    succeeded (so "already released" is not an error)."""
    mine = _candidate(lock_dir, me["attempt"])
    if FileSystems.exists(mine):
        FileSystems.delete([mine])  # the lock is free from here; the flag is only a note on it
        _delete_quietly([_flag(mine)])
        return True
    return False


def release_quietly(lock_dir: str, me: dict) -> bool:
    """release_own, ignoring storage errors (cleanup after a failed local run)."""
    try:
        return release_own(lock_dir, me)
    except Exception:
        return False


def marker_stamp(metadata) -> str:
    """What tells one writing of a marker from another: its size and write
    time (Beam FileMetadata). A rerun deletes the output's marker first and
    writes a new one last, so a job reading another's output takes the stamp
    before it reads and compares it before writing its own (check_unchanged)."""
    return f"{metadata.size_in_bytes} bytes at {metadata.last_updated_in_seconds!r}"


def finished_stamp(folder: str) -> str | None:
    """marker_stamp of folder's marker; None if it has none (not finished)."""
    found = FileSystems.match([FileSystems.join(folder, MARKER)])[0].metadata_list
    return marker_stamp(found[0]) if found else None


def check_unchanged(read: dict, flag: str, writer: str, job: str, lost: str) -> None:
    """JobFailed, in one line, if a folder of `read` ({folder: its finished_stamp
    when read}) has lost its marker or has another since: it was rewritten (or
    is being rewritten) while this run read it. `flag` is the option naming it,
    `writer` the job whose rerun rewrote it, `job` this one, `lost` what this
    run did not do and why. Called just before a job marks its output complete."""
    changed = [folder for folder, stamp in sorted(read.items()) if finished_stamp(folder) != stamp]
    if changed:
        raise JobFailed(f"{flag} {', '.join(changed)} was rewritten while this run read it ({writer} ran there "
                        f"again): {lost}: rerun {job} once {writer} is done there")


class LockOutput(beam.PTransform):
    """Takes the output's lock (OUT/_LOCK, see acquire), then deletes OUT/_SUCCESS.

    Yields one element once both are done, the marker's path. Every write of a
    job waits for it as a side input, so nothing is written before the lock is
    held and an old output stops reading as complete before any of it changes.
    """

    def __init__(self, out: str, me: dict, lock_options: dict, marker: str = MARKER, lock: str = LOCK):
        super().__init__()
        self.out, self.me, self.lock_options = out, me, lock_options
        self.marker_path, self.lock_dir = FileSystems.join(out, marker), FileSystems.join(out, lock)

    def expand(self, pbegin):
        lock_dir, me, out, options = self.lock_dir, self.me, self.out, self.lock_options
        return (pbegin
                | "Start" >> beam.Create([self.marker_path])
                | "AcquireLock" >> beam.Map(lambda marker: (acquire(lock_dir, me, out, **options), marker)[1])
                | "ClearMarker" >> beam.Map(_clear_marker))


class FinalizeOutput(beam.PTransform):
    """The end of every job that writes one output: once its side inputs are
    ready, finalize(element, **kwargs) writes the last files and the marker
    (checking the lock before each, see check), then the output's lock is
    released. Applied to the pipeline (one None element) or to a PCollection
    whose elements are finalize's first argument; yields release_own's result."""

    def __init__(self, out: str, me: dict, finalize, /, **kwargs):  # kwargs may hold finalize's own `me`
        super().__init__()
        self.lock_dir, self.me, self.finalize, self.kwargs = FileSystems.join(out, LOCK), me, finalize, kwargs

    def expand(self, start):
        lock_dir, me = self.lock_dir, self.me
        if isinstance(start, beam.pvalue.PBegin):
            start = start | "Start" >> beam.Create([None])
        return (start
                | "Write" >> beam.Map(self.finalize, **self.kwargs)
                | "ReleaseLock" >> beam.Map(lambda _written: release_own(lock_dir, me)))


def _clear_marker(path: str) -> str:
    if FileSystems.exists(path):
        FileSystems.delete([path])
    return path
