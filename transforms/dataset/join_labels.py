"""Beam composites that line up curate's verdicts with labels and metadata.

ReadCuratedRows  curate's features Parquet -> (uri, row)
ReadLabelRecords SCIN cases+labels (joined on case_id) or a plain labels CSV
                 -> (uri, record), with bad rows on the `dead` output
JoinLabels       -> labelled records ready for splitting, or dead letters
                 naming why an image cannot be used
"""
from __future__ import annotations

import os

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.fileio import EmptyMatchTreatment
from apache_beam.metrics import Metrics

from schemas import examples as E
from schemas.examples import dead_letter
from schemas import lighting
from schemas import scin
from schemas.features import features_glob
from transforms.io.inputs import join_root, normalize_uri, read_text
from transforms.io.run_lock import MARKER, marker_stamp
from transforms.dataset.labels import BadLabelRow, plain_record, scin_image_records

DEAD = "dead"
# (cluster_id, group_id) of every labelled image curate clustered, kept or
# not: a duplicate curate rejected still ties its group to its keeper's.
LINKS = "links"
CURATE_FIELDS = ("uri", "status", "reasons", "cluster_id", "sha256") + E.NUMERIC + lighting.INPUTS
# Read when present: curate outputs written before enhancement lack them.
OPTIONAL_CURATE_FIELDS = ("enhanced", "enhance_recipe")


def _parquet_rows(readable):
    with readable.open() as f:
        present = set(pq.read_schema(f).names)
        f.seek(0)
        columns = list(CURATE_FIELDS) + [c for c in OPTIONAL_CURATE_FIELDS if c in present]
        table = pq.read_table(f, columns=columns, use_threads=False)  # see evaluate_curate
    for row in table.to_pylist():
        yield row["uri"], row


def finished_outputs(curated_dir: str) -> dict:
    """{output folder: its marker's size and write time} of the finished curate
    output curated_dir names, or of several (a glob such as CURATED/dt=* over
    nightly partitions), from one listing; ValueError if one is unfinished.

    Without curate's marker, features/ may hold a killed or still-running
    job's partial shards: training on them would silently drop images. A
    curate rerun deletes its marker first and writes a new one last, so a
    stamp that changes later means the output was rewritten meanwhile.
    """
    root = curated_dir.rstrip("/")
    markers = FileSystems.match([f"{root}/{MARKER}"])[0].metadata_list
    done = {m.path.rsplit("/", 1)[0]: marker_stamp(m) for m in markers}
    if any(c in root for c in "*?["):
        started = {m.path.rsplit("/", 2)[0] for m in FileSystems.match([features_glob(root)])[0].metadata_list}
        if not done:
            raise ValueError(f"{root} matches no finished curate output (no {MARKER})")
        unfinished = sorted(started - set(done))
        if unfinished:
            raise ValueError(f"{', '.join(unfinished)} has no {MARKER}: curate has not finished there (rerun it)")
    elif not done:
        raise ValueError(f"{root} has no {MARKER}: curate has not finished there (rerun it)")
    return done


def curated_features(curated_dir: str) -> str:
    """The features glob of the finished curate output(s) curated_dir names
    (finished_outputs' checks)."""
    finished_outputs(curated_dir)
    return features_glob(curated_dir.rstrip("/"))


class ReadCuratedRows(beam.PTransform):
    """Feature rows of a finished curate output (checked at run time, so a
    Dataflow launch lists nothing): only of the outputs finished when it
    lists them (a night curate starts meanwhile is not read half-written).

    Once applied, `.finished` is a one-element PCollection, finished_outputs
    as listed, for run_lock.check_unchanged at the end of the job.
    """

    def __init__(self, curated_dir: str):
        super().__init__()
        self.curated_dir = curated_dir
        self.finished = None

    def expand(self, p):
        self.finished = (p
                         | "CuratedDir" >> beam.Create([self.curated_dir])
                         | "RequireFinished" >> beam.Map(finished_outputs))
        return (self.finished
                | "FeaturesGlobs" >> beam.FlatMap(lambda done: [features_glob(f) for f in sorted(done)])
                | "MatchFeatures" >> fileio.MatchAll(EmptyMatchTreatment.DISALLOW)
                | "ReadFeatureFiles" >> fileio.ReadMatches()
                | "FeatureRows" >> beam.FlatMap(_parquet_rows))


def _csv_rows(readable, required, source):
    return scin.read_csv_rows(read_text(readable), required, f"{source} ({readable.metadata.path})")


class _ScinRecords(beam.DoFn):
    def __init__(self, image_root, min_weight):
        self.image_root, self.min_weight = image_root, min_weight

    def process(self, kv):
        case_id, grouped = kv
        cases, labels = list(grouped["cases"]), list(grouped["labels"])
        if cases:  # labels for a case with no images: nothing to align
            yield from self._records(case_id, cases, labels)

    def _records(self, case_id, cases, labels):
        # A plain generator: Beam warns about `return` in a yielding process().
        try:
            if len(labels) > 1:
                raise BadLabelRow(f"{len(labels)} label rows for case {case_id}")
            for record in scin_image_records(cases[0], labels[0] if labels else None,
                                             self.image_root, self.min_weight):
                yield record["uri"], record
        except (BadLabelRow, ValueError) as e:
            for path, _shot in scin.case_images(cases[0]):
                yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                    join_root(self.image_root, path), "bad_metadata", str(e), case_id))


class ReadLabelRecords(beam.PTransform):
    """(uri, record) for every image the labels describe; bad rows to `dead`."""

    def __init__(self, image_root, scin_cases=None, scin_labels=None, labels_csv=None, min_weight=0.0):
        super().__init__()
        self.image_root, self.min_weight = image_root, min_weight
        self.scin_cases, self.scin_labels, self.labels_csv = scin_cases, scin_labels, labels_csv

    def expand(self, p):
        if self.labels_csv:
            root = self.image_root

            def plain(row):
                try:
                    record = plain_record(row, root)
                    yield record["uri"], record
                except BadLabelRow as e:
                    yield beam.pvalue.TaggedOutput(DEAD, dead_letter(row.get("image_uri"), "bad_metadata", str(e)))

            return (p
                    | "MatchLabelsCsv" >> fileio.MatchFiles(self.labels_csv, EmptyMatchTreatment.DISALLOW)
                    | "ReadLabelsCsv" >> fileio.ReadMatches()
                    | "LabelsCsvRows" >> beam.FlatMap(_csv_rows, ("image_uri", "label"), "labels_csv")
                    | "PlainRecords" >> beam.FlatMap(plain).with_outputs(DEAD, main="records"))
        cases = (p
                 | "MatchCases" >> fileio.MatchFiles(self.scin_cases, EmptyMatchTreatment.DISALLOW)
                 | "ReadCases" >> fileio.ReadMatches()
                 | "CaseRows" >> beam.FlatMap(_csv_rows, scin.REQUIRED_CASE_COLUMNS, "scin_cases")
                 | "KeyCases" >> beam.Map(lambda r: (r[scin.CASE_ID], r)))
        labels = (p
                  | "MatchLabels" >> fileio.MatchFiles(self.scin_labels, EmptyMatchTreatment.DISALLOW)
                  | "ReadLabels" >> fileio.ReadMatches()
                  | "LabelRows" >> beam.FlatMap(_csv_rows, scin.REQUIRED_LABEL_COLUMNS, "scin_labels")
                  | "KeyLabels" >> beam.Map(lambda r: (r[scin.CASE_ID], r)))
        return ({"cases": cases, "labels": labels}
                | "JoinOnCaseId" >> beam.CoGroupByKey()
                | "ImageRecords" >> beam.ParDo(_ScinRecords(self.image_root, self.min_weight))
                .with_outputs(DEAD, main="records"))


class _Join(beam.DoFn):
    def __init__(self, keep_unlabeled: bool):
        self.keep_unlabeled = keep_unlabeled
        self.counts = {}
        self.lighting = lighting.load_thresholds()

    def _count(self, name):
        if name not in self.counts:
            self.counts[name] = Metrics.counter("make_tfrecords", name)
        self.counts[name].inc()

    def process(self, kv):
        uri, g = kv
        if list(g.get("bad_rows", ())):
            # A labels/cases row for this image could not be used: the reader's
            # bad_metadata dead letter is its one outcome (not also no_label_row).
            self._count("image_of_a_bad_label_row")
            return
        rows, records = list(g["curated"]), list(g["labels"])
        # Listed twice (a labels CSV repeating an image, or two SCIN cases
        # naming one path): the same label is one record, picked by group so
        # the choice does not depend on arrival order; different labels are
        # a conflict no rule can settle, reported below.
        records = sorted(records, key=lambda r: (r["group_id"], r["case_id"] or ""))
        record = records[0] if records else None
        case_id = record["case_id"] if record else None
        if not rows:
            self._count("dead_no_image")
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                uri, "no_image", "labels name this image but curate's output has no row for it", case_id))
            return
        row = rows[0]
        if row.get("cluster_id"):
            for r in records:
                yield beam.pvalue.TaggedOutput(LINKS, (row["cluster_id"], r["group_id"]))
        if row["status"] != "accepted":
            self._count("excluded_rejected_by_curate")
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                uri, "rejected_by_curate", ",".join(row["reasons"]), case_id))
            return
        labels = sorted({str(r["label"]) for r in records})
        if len(labels) > 1:
            self._count("dead_conflicting_labels")
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                uri, "conflicting_labels",
                f"listed {len(records)} times with different labels: {', '.join(labels)}"[:500], case_id))
            return
        if record is None:
            self._count("dead_no_label_row")
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                uri, "no_label_row", "accepted by curate but absent from the labels/cases files"))
            return
        missing = [k for k in E.NUMERIC if row.get(k) is None]
        if missing:
            self._count("dead_bad_metadata")
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                uri, "bad_metadata", f"curate features missing: {', '.join(missing)}", case_id))
            return
        merged = dict(record, uri=uri, cluster_id=row["cluster_id"], sha256=row["sha256"],
                      **{k: float(row[k]) for k in E.NUMERIC},
                      lighting_id=lighting.lighting_id(row, self.lighting),
                      enhance_recipe=row.get("enhance_recipe") if row.get("enhanced") else None)
        if merged["label"] is None:
            self._count("unlabeled")
            if not self.keep_unlabeled:
                yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
                    uri, "unlabeled", "case has no condition label", case_id))
                return
        yield merged


class JoinLabels(beam.PTransform):
    """CoGroup curate rows and label records by uri -> usable records (+ dead).

    Both sides are keyed by normalize_uri, relative local paths resolved
    against the launcher's working directory (captured here, at construction):
    a labels CSV naming `data/x.png` meets curate's `/abs/data/x.png`.
    An optional third input, ReadLabelRecords' dead letters, names images
    whose label row was unusable: that dead letter is their one outcome.
    """

    def __init__(self, keep_unlabeled: bool, cwd: str | None = None):
        super().__init__()
        self.keep_unlabeled = keep_unlabeled
        self.cwd = cwd or os.getcwd()

    def expand(self, pcolls):
        curated, labels, *bad_rows = pcolls
        cwd = self.cwd
        curated = curated | "NormalizeCuratedUris" >> beam.Map(lambda kv: (normalize_uri(kv[0], cwd), kv[1]))
        labels = labels | "NormalizeLabelUris" >> beam.Map(lambda kv: (normalize_uri(kv[0], cwd), kv[1]))
        groups = {"curated": curated, "labels": labels}
        if bad_rows:  # the reader's dead letters: their images get no second one here
            groups["bad_rows"] = (bad_rows[0]
                                  | "BadRowUris" >> beam.FlatMap(lambda d: [(normalize_uri(d["uri"], cwd), 1)]
                                                                 if d.get("uri") else []))
        return (groups
                | "CoGroupByUri" >> beam.CoGroupByKey()
                | "Align" >> beam.ParDo(_Join(self.keep_unlabeled)).with_outputs(DEAD, LINKS, main="records"))
