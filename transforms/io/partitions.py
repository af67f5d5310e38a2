"""Date partitions of the nightly jobs (score, curate): which dates a run
covers and what a dt=YYYY-MM-DD/ folder of uploads holds.

Uploads land under INPUT/dt=YYYY-MM-DD/; a run names one night (--date) or a
backfill range (--start_date..--end_date), and `today`/`yesterday` resolve
in UTC at launch. Listing a night gives FOUND (images), EMPTY (the folder
exists but holds none; on GCS its placeholder object) or MISSING (no folder:
a typo or uploads not there yet), which the jobs treat alike: an EMPTY night
is complete only with --allow_empty, a MISSING one never.
"""
from __future__ import annotations

import datetime as dt
import os
import re

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from transforms.errors import UsageError
from transforms.io.allowed_roots import literal
from transforms.io.read import listed_name

UNDATED = "undated"  # the partition of a run without dates
MAX_DATES = 400
# Schedulers that cannot template a date (Cloud Scheduler) pass these; they
# resolve in UTC at launch, so a 03:00 UTC run of `yesterday` covers the day
# that just ended.
RELATIVE_DATES = {"today": 0, "yesterday": -1}
# What listing a partition found: images, none in an existing folder (or
# manifest, or glob), or no dt= folder at all.
FOUND, EMPTY, MISSING = "found", "empty", "missing"


def parse_date(text: str, flag: str, today: dt.date | None = None) -> dt.date:
    """A YYYY-MM-DD date, or `today`/`yesterday` (UTC)."""
    if (text or "").lower() in RELATIVE_DATES:
        today = today or dt.datetime.now(dt.timezone.utc).date()
        return today + dt.timedelta(days=RELATIVE_DATES[text.lower()])
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text or ""):
        raise UsageError(f"--{flag} {text!r} is not a YYYY-MM-DD date (or today, yesterday)")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as e:
        raise UsageError(f"--{flag} {text}: {e}") from None


def dates_of(o) -> list[str]:
    """The partitions a run covers, oldest first, from options with --date or
    --start_date/--end_date (the spec has checked they go together); [] for an
    undated run."""
    if o.date and (o.start_date or o.end_date):
        raise UsageError("give --date or --start_date/--end_date, not both")
    if o.date:
        return [parse_date(o.date, "date").isoformat()]
    if o.start_date:
        start, end = parse_date(o.start_date, "start_date"), parse_date(o.end_date, "end_date")
        if end < start:
            raise UsageError(f"--end_date {end} is before --start_date {start}")
        n = (end - start).days + 1
        if n > MAX_DATES:
            raise UsageError(f"backfill of {n} dates exceeds {MAX_DATES}; split it")
        return [(start + dt.timedelta(days=i)).isoformat() for i in range(n)]
    return []


def partition_folder(input_root: str, date: str) -> str:
    """INPUT/dt=DATE/, the folder of one night's uploads."""
    return f"{input_root.rstrip('/')}/dt={date}/"


def night_glob(input_root: str, date: str | None) -> str:
    """What a run lists as one night's uploads: INPUT/dt=DATE/** (every file
    under the night's folder); without a date, --input is the glob itself.
    A dated run's INPUT is a folder name, so its *, ? and [ are escaped: a
    root named up[1] listed up1's night, or none."""
    if date is None:
        return input_root
    return literal(input_root.rstrip("/")) + f"/dt={date}/**"


def match_files(pattern: str, limit: int | None = None) -> list[str]:
    """Paths matching `pattern`, without folder placeholder objects.

    Placeholders (gs://b/up/dt=D/, made by the console or uploaders) are not
    images. A listing error propagates: read as "no images", it could mark a
    night complete with --allow_empty.
    """
    found = FileSystems.match([pattern], limits=[limit] if limit else None)[0].metadata_list
    uris = [listed_name(m.path) for m in found if not m.path.endswith("/")]
    if limit is None or len(uris) < limit:
        uris += unstatable_matches(pattern)[:None if limit is None else limit - len(uris)]
    return uris


def unstatable_matches(pattern: str) -> list[str]:
    """Local names a glob matches that Beam's listing leaves out without a
    word: a dangling symlink or a symlink loop (Beam skips any name whose size
    it cannot read), and a symlink to a folder whose files the glob would
    reach (the walk does not follow it). Every input must be accounted for,
    so the jobs list these too and the read turns them into dead letters (missing,
    not_a_regular_file, outside_allowed_root). Walks the folder as Beam's
    local match does and matches with Beam's own pattern translation, so a
    name is listed here exactly when Beam would have listed it had it a size.
    [] for gs:// and other remote patterns (no symlinks there)."""
    if "://" in pattern:
        return []
    if pattern.endswith("/"):
        pattern += "*"
    prefix = re.match(r"^[^[*?]*", pattern).group(0)
    if prefix == pattern:  # no glob: Beam names it only if it exists
        return [listed_name(pattern)] if os.path.islink(pattern) and not os.path.exists(pattern) else []
    folder = os.path.dirname(prefix)
    if not os.path.isdir(folder):
        return []
    wanted = re.compile(FileSystem.translate_pattern(pattern))
    found = []
    for dirpath, dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.exists(path) and os.path.islink(path) and wanted.match(path):
                found.append(listed_name(path))
        # A symlink to a folder: the walk does not follow it, so the files the
        # pattern would reach under it were dropped without a word. It is
        # listed itself, and its read refuses it (not_a_regular_file, or
        # outside_allowed_root): a row that says so, not a silent gap.
        for name in dirs:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and wanted.match(path + "/x"):
                found.append(listed_name(path))
    return sorted(found)


def list_refs(partition: str, input_root: str | None, manifest: str | None,
              allow_empty: bool = False, limit: int | None = None) -> tuple[dict[str, str], str]:
    """({image URI: image_id}, FOUND | EMPTY | MISSING) of one partition.

    A date lists INPUT/dt=DATE/**; MISSING when nothing at all is there, not
    even the folder (locally a directory, on GCS the dt=DATE/ placeholder
    object). Undated runs list the --input glob and the --manifest rows.
    Raises ValueError for an unparseable manifest (or an empty one without
    allow_empty). `limit` caps each listing (enough to tell FOUND from EMPTY).
    image_id is curate's (the manifest's id, else the file stem).
    """
    from transforms.io.inputs import parse_manifest, read_named_text, stem
    if partition != UNDATED:
        folder = partition_folder(input_root, partition)
        uris = match_files(night_glob(input_root, partition), limit)
        if uris:
            return {u: stem(u) for u in uris}, FOUND
        return {}, EMPTY if FileSystems.exists(folder) else MISSING
    refs = {u: stem(u) for u in match_files(input_root, limit)} if input_root else {}
    if manifest:
        text = read_named_text(manifest, "--manifest")
        if text.strip() or not allow_empty:
            refs.update((r.uri, r.image_id) for r in parse_manifest(text, manifest))  # the manifest's id wins
    return refs, FOUND if refs else EMPTY


def list_partition(partition: str, input_root: str | None, manifest: str | None,
                   allow_empty: bool = False, limit: int | None = None) -> tuple[list[str], str]:
    """(sorted image URIs, FOUND | EMPTY | MISSING) of one partition; see list_refs."""
    refs, state = list_refs(partition, input_root, manifest, allow_empty, limit)
    return sorted(refs), state


def publishable(state: str | None, allow_empty: bool) -> bool:
    """Whether a partition so listed may be marked complete."""
    return state == FOUND or (state == EMPTY and allow_empty)


def unlisted_message(states: dict, input_root: str | None, manifest: str | None, done: str = "scored") -> str:
    """One line naming the partitions that listed no images, and what to do;
    `done` is what the job does to a partition (scored, curated)."""
    if UNDATED in states:
        where = " and ".join(filter(None, [input_root and f"--input {input_root} matches no files",
                                          manifest and f"--manifest {manifest} lists no images"]))
        return f"{where}; nothing {done} (--allow_empty accepts an empty input)"
    missing = [d for d, s in sorted(states.items()) if s == MISSING]
    empty = [d for d, s in sorted(states.items()) if s == EMPTY]
    parts = []
    if missing:
        parts.append(f"no folder under --input {input_root} for " + ", ".join(f"dt={d}" for d in missing))
    if empty:
        parts.append("no images in " + ", ".join(f"dt={d}" for d in empty)
                     + " (--allow_empty marks empty nights complete)")
    return "; ".join(parts) + f"; those partitions are not {done} nor marked complete"
