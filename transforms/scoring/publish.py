"""score's partitions: lock, skip when complete, publish staged shards, drop staging.

A partition OUT/predictions/dt=D/model=V/ (schemas/predictions.py) is complete
when its _SUCCESS marker exists; a run replaces its files only while it holds
the partition's lock (transforms/io/run_lock.py).
"""
from __future__ import annotations

import json
import logging
import os
import time

from apache_beam.io.filesystems import FileSystems

from schemas import predictions as P
from transforms.errors import Refused
from transforms.io import run_lock
from transforms.io.run_lock import MARKER
from transforms.io.sharded_write import write_atomically


def partition_lock_dir(output: str, partition: str, version: str) -> str:
    """Where a partition's lock lives: beside the partitions, not inside one
    (publishing empties the partition folder, and readers glob dt=*)."""
    return FileSystems.join(output, "predictions", "_locks", f"dt={partition}", f"model={version}")


def claim_partition(partition, output, version, force, me, lock, model_sha256=None) -> bool:
    """Lock the partition; keep it (True) unless it is complete and not forced.
    Refused if it is complete from another model of the same version."""
    where, lock_dir = P.partition_dir(output, partition, version), partition_lock_dir(output, partition, version)
    run_lock.acquire(lock_dir, me, where, **lock)
    try:
        if force or not is_complete(output, partition, version, model_sha256):
            return True
    except Refused:
        run_lock.release(lock_dir, me, where)
        raise
    run_lock.release(lock_dir, me, where)
    # INFO: Dataflow's worker log shows it; a local launch already said it once
    logging.info("score: dt=%s is complete for model %s: skipped (--force rescores it)", partition, version)
    return False


def publish_partition(partition, output, version, status_counts, written, me=None, model_sha256=None):
    """Replace the partition's files with this run's staged shards (exactly the
    ones its writers reported, never stray files), then write _SUCCESS; only
    while this run holds the partition's lock (released by the next step)."""
    final = P.partition_dir(output, partition, version)
    dead_dir = P.dead_letter_dir(output, partition, version)
    marker = FileSystems.join(final, MARKER)
    if me is not None:
        run_lock.check(partition_lock_dir(output, partition, version), me, final)
    if FileSystems.exists(marker):
        FileSystems.delete([marker])
    old = [m.path for folder in (final, dead_dir)
           for m in FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list]
    if old:
        FileSystems.delete(old)
    staged = sorted(path for group, _i, _n, _count, path in written if group == partition)
    # Dead letters live outside predictions/, so the predictions tree is pure
    # hive-partitioned Parquet (pyarrow.dataset, BigQuery external tables).
    targets = [FileSystems.join(dead_dir if name.startswith("dead_letters") else final, name)
               for name in (path.rsplit("/", 1)[1] for path in staged)]
    for folder in sorted({final} | {t.rsplit("/", 1)[0] for t in targets}):
        if not FileSystems.exists(folder):
            FileSystems.mkdirs(folder)  # local renames need the directory; GCS has none
    if staged:
        FileSystems.rename(staged, targets)
    counts = dict(status_counts.get(partition, {}))
    write_atomically(marker, json.dumps({"partition": partition, "model_version": version,
                                         "model_sha256": model_sha256,
                                         "images": sum(counts.values()), **counts}, sort_keys=True).encode())
    return partition


# No run stages for this long; older staging folders are leftovers of killed
# runs. (Younger ones may belong to a run still going, so they stay.)
STALE_STAGING_SECONDS = 24 * 3600


def drop_staging(staging: str, now: float | None = None) -> list[str]:
    """Delete this run's staging folder and other runs' stale ones; returns what went."""
    root, _run = staging.rstrip("/").rsplit("/", 1)
    now = time.time() if now is None else now
    newest: dict[str, float] = {}
    for m in FileSystems.match([FileSystems.join(root, "**")])[0].metadata_list:
        run = m.path[len(root) + 1:].split("/", 1)[0]
        newest[run] = max(newest.get(run, 0.0), m.last_updated_in_seconds or 0.0)
    gone = [FileSystems.join(root, run) for run, t in sorted(newest.items())
            if FileSystems.join(root, run) != staging.rstrip("/") and now - t > STALE_STAGING_SECONDS]
    if FileSystems.exists(staging):
        gone.insert(0, staging)
    if gone:
        FileSystems.delete(gone)
    if "://" not in root:
        try:  # no empty _staging/ left behind; rmdir (empty only) keeps a live run's
            os.rmdir(root)
        except OSError:
            pass
    return gone


def is_complete(output: str, date: str, version: str, model_sha256: str | None = None) -> bool:
    """Whether the partition's _SUCCESS is there. Refused if it records
    another model than model_sha256: a version named two models (one given
    again to another training), and skipping would keep the other's scores.
    Markers from before the hash, and bundles without one, are taken as same."""
    marker = FileSystems.join(P.partition_dir(output, date, version), MARKER)
    if not FileSystems.exists(marker):
        return False
    if model_sha256 is None:
        return True
    try:
        with FileSystems.open(marker) as f:
            recorded = json.loads(f.read()).get("model_sha256")
    except (OSError, ValueError, AttributeError):  # unreadable: complete, as before the hash
        return True
    if recorded not in (None, model_sha256):
        raise Refused(f"dt={date} model={version} is complete from another model with the same version "
                      f"(model_sha256 {str(recorded)[:12]} there, {model_sha256[:12]} here): give this model its "
                      f"own version, or --force to replace that model's scores")
    return True
