"""Where images come from: a glob, a manifest, or SCIN's cases CSV.

All three become ImageRef elements; listing is deferred to run time
(MatchFiles), so a Dataflow job builds without touching storage.
"""
from __future__ import annotations

import csv
import io
import json
import posixpath
from typing import NamedTuple, Optional

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.fileio import EmptyMatchTreatment
from apache_beam.metrics import Metrics

from schemas import scin

URI_COLUMNS = ("uri", "image_uri", "path", "gcs_path")
ID_COLUMNS = ("image_id", "id")


class ImageRef(NamedTuple):
    uri: str
    image_id: Optional[str] = None
    case_id: Optional[str] = None
    size: Optional[int] = None  # bytes, when a listing said: too large is refused without a request


def join_root(root: str, path: str) -> str:
    """Resolve a relative path against a local or gs:// root."""
    if "://" in path or path.startswith("/"):
        return path
    return posixpath.join(root.rstrip("/"), path) if "://" in root else \
        posixpath.normpath(posixpath.join(root, path))


def stem(uri: str) -> str:
    return posixpath.splitext(posixpath.basename(uri))[0]


def parse_manifest(text: str, source: str = "manifest") -> list[ImageRef]:
    """A CSV with a header (uri[,image_id][,case_id]) or JSONL of such objects."""
    stripped = text.lstrip()
    if not stripped:
        # An empty list is far more likely a failed export than a night with
        # no uploads; a job that silently curates nothing hides it.
        raise ValueError(f"{source} is empty")
    if stripped.startswith("{"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{source}: line {n} is not JSON: {e}") from None
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    refs = []
    for n, row in enumerate(rows, 1):
        uri = next((str(row[c]).strip() for c in URI_COLUMNS if row.get(c)), "")
        if not uri:
            raise ValueError(f"{source}: row {n} has no {'/'.join(URI_COLUMNS)} value")
        image_id = next((str(row[c]) for c in ID_COLUMNS if row.get(c)), None) or stem(uri)
        case_id = str(row["case_id"]) if row.get("case_id") else None
        refs.append(ImageRef(uri, image_id, case_id))
    return refs


def parse_scin_cases(text: str, image_root: str, source: str = "scin_cases") -> list[ImageRef]:
    """One ImageRef per non-empty image_{1,2,3}_path; the case id travels along."""
    refs = []
    for row in scin.read_csv_rows(text, scin.REQUIRED_CASE_COLUMNS, source):
        for path, _shot in scin.case_images(row):
            uri = join_root(image_root, path)
            refs.append(ImageRef(uri, stem(path), row[scin.CASE_ID]))
    return refs


def read_text(readable_file) -> str:
    """A fileio.ReadableFile's whole content as text (a BOM, as Excel writes, is dropped)."""
    return readable_file.read().decode("utf-8-sig")


class ReadImageRefs(beam.PTransform):
    """Every image to process, once: glob matches + manifest rows + SCIN cases.

    A URI listed more than once is processed once (counted in the
    `duplicate_listings` counter). The grouping by URI also redistributes the
    work, acting as the reshuffle before the expensive per-image step.
    """

    def __init__(self, input_glob=None, manifest=None, scin_cases=None, image_root=None):
        super().__init__()
        self.input_glob, self.manifest = input_glob, manifest
        self.scin_cases, self.image_root = scin_cases, image_root

    def expand(self, pbegin):
        sources = []
        if self.input_glob:
            sources.append(
                pbegin
                | "MatchGlob" >> fileio.MatchFiles(self.input_glob, EmptyMatchTreatment.DISALLOW)
                | "GlobToRefs" >> beam.Map(lambda m: ImageRef(m.path, stem(m.path), None, m.size_in_bytes)))
        if self.manifest:
            sources.append(
                pbegin
                | "MatchManifest" >> fileio.MatchFiles(self.manifest, EmptyMatchTreatment.DISALLOW)
                | "ReadManifest" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
                | "ParseManifest" >> beam.FlatMap(lambda f: parse_manifest(read_text(f), f.metadata.path)))
        if self.scin_cases:
            root = self.image_root
            sources.append(
                pbegin
                | "MatchScinCases" >> fileio.MatchFiles(self.scin_cases, EmptyMatchTreatment.DISALLOW)
                | "ReadScinCases" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
                | "ParseScinCases" >> beam.FlatMap(lambda f: parse_scin_cases(read_text(f), root, f.metadata.path)))
        return (sources
                | "AllSources" >> beam.Flatten()
                | "KeyByUri" >> beam.Map(lambda r: (r.uri, r))
                | "GroupByUri" >> beam.GroupByKey()
                | "OnePerUri" >> beam.Map(_first_listing))


_duplicate_listings = Metrics.counter("curate", "duplicate_listings")


def _first_listing(kv) -> ImageRef:
    _uri, refs = kv
    refs = sorted(refs, key=lambda r: (r.case_id or "", r.image_id or ""))
    if len(refs) > 1:
        _duplicate_listings.inc(len(refs) - 1)
    return refs[0]
