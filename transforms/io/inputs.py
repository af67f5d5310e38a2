"""Where images come from: a glob, a manifest, or SCIN's cases CSV.

All three become ImageRef elements; listing is deferred to run time
(MatchFiles), so a Dataflow job builds without touching storage.
"""
from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from typing import NamedTuple, Optional

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.fileio import EmptyMatchTreatment
from apache_beam.metrics import Metrics

from schemas import scin
from transforms.io.partitions import unstatable_matches
from transforms.io.read import listed_name

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


def normalize_uri(uri: str, cwd: str | None = None) -> str:
    """The form two listings of one image are compared in: local paths made
    absolute (against cwd) and normalised, so `data/x.png`, `./data/x.png` and
    `/abs/data/x.png` match; gs:// URIs are object names, compared as given."""
    if "://" in uri:
        return uri
    return posixpath.normpath(posixpath.join(cwd or os.getcwd(), uri))


def stem(uri: str) -> str:
    return posixpath.splitext(posixpath.basename(uri))[0]


def parse_manifest(text: str, source: str = "manifest", require_rows: bool = False) -> list[ImageRef]:
    """A CSV with a header (uri[,image_id][,case_id]) or JSONL of such objects.
    Local paths are made absolute against the working directory (normalize_uri).

    ValueError, in one line naming the file and line, for an empty manifest
    or one that cannot be read as one; with require_rows, also for a header
    without rows (curate: a job that silently curates nothing hides a failed
    export; score decides for itself, see its --allow_empty)."""
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
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{source}: line {n} is not JSON: {e}") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{source}: line {n} is not a JSON object")
                rows.append((n, row))
    else:
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in reader.fieldnames or []]
        if not set(URI_COLUMNS) & set(header):
            raise ValueError(f"{source}: row 1 has no uri: its header has no {'/'.join(URI_COLUMNS)} column "
                             f"({', '.join(header)[:200]})")
        rows = [(reader.line_num, {k.strip() if k else k: v for k, v in row.items()}) for row in reader]
        if not rows and require_rows:
            raise ValueError(f"{source} has a header but no rows")
    refs = []
    for n, row in rows:
        uri = next((str(row[c]).strip() for c in URI_COLUMNS if row.get(c)), "")
        if not uri:
            raise ValueError(f"{source}: line {n} has no {'/'.join(URI_COLUMNS)} value")
        if "://" not in uri and ".." not in uri.split("/"):
            # One form per file, so a.jpg, ./a.jpg and /abs/a.jpg are one image,
            # not three rows. A '..' path stays as written: the allowed-roots
            # rule refuses it by its spelling.
            uri = normalize_uri(uri)
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
    if not refs:
        raise ValueError(f"{source} lists no images")  # as an empty manifest: a failed export
    return refs


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text (a BOM, as Excel writes, is dropped); one-line ValueError otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{source} is not UTF-8 text (byte {e.start}: {e.reason}); "
                         f"save it as UTF-8") from None


def read_named_file(path: str, what: str) -> bytes:
    """The bytes of a file the operator names (`what`: "--manifest", "policy
    file"), read as the pipeline reads images (retried; only a regular file:
    a FIFO would hang the job, a folder is no list). No allowed roots: the
    operator chose it. Otherwise a one-line ValueError, `cannot read <what>
    <path>: <why>`."""
    from transforms.io.allowed_roots import AllowedRoots
    from transforms.io.read import Missing, Refused, read_bytes
    try:
        return read_bytes(normalize_uri(path), allowed=AllowedRoots([]))[0]
    except Missing:
        why = "no such file"
    except Refused as e:
        why = str(e)
    except Exception as e:  # any filesystem error, in one line
        why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    raise ValueError(f"cannot read {what} {path}: {why}")


def read_named_text(path: str, what: str) -> str:
    """read_named_file() as UTF-8 text (see decode_text)."""
    return decode_text(read_named_file(path, what), f"{what} {path}")


def read_text(readable_file) -> str:
    """A fileio.ReadableFile's whole content as text (see decode_text)."""
    return decode_text(readable_file.read(), readable_file.metadata.path)


def input_glob(pattern: str | None) -> str | None:
    """--input as a glob: a folder (a local directory, or any path ending
    in '/') means every file under it, as a user naming a folder expects;
    Beam would otherwise match the folder itself and read nothing."""
    if not pattern or any(c in pattern for c in "*?["):
        return pattern
    if pattern.endswith("/") or ("://" not in pattern and os.path.isdir(pattern)):
        return pattern.rstrip("/") + "/**"
    return pattern


def _glob_ref(meta) -> ImageRef:
    uri = listed_name(meta.path)
    return ImageRef(uri, stem(uri), None, meta.size_in_bytes)


class ReadImageRefs(beam.PTransform):
    """Every image to process, once: glob matches + manifest rows + SCIN cases.

    A URI listed more than once is processed once (counted in the
    `duplicate_listings` counter). The grouping by URI also redistributes the
    work, acting as the reshuffle before the expensive per-image step.
    """

    def __init__(self, input_glob=None, manifest=None, scin_cases=None, image_root=None, allow_empty=False):
        super().__init__()
        self.input_glob, self.manifest = input_glob, manifest
        self.scin_cases, self.image_root = scin_cases, image_root
        # An empty night's glob (curate --date --allow_empty) may match nothing.
        self.empty = EmptyMatchTreatment.ALLOW if allow_empty else EmptyMatchTreatment.DISALLOW

    def expand(self, pbegin):
        sources = []
        if self.input_glob:
            sources.append(
                pbegin
                | "MatchGlob" >> fileio.MatchFiles(self.input_glob, self.empty)
                # a GCS folder placeholder object (gs://b/up/dt=D/) is not an image
                | "NotFolders" >> beam.Filter(lambda m: not m.path.endswith("/"))
                | "GlobToRefs" >> beam.Map(_glob_ref))
            # Listed when the pipeline runs, as MatchFiles is: names Beam's match skips (broken links).
            sources.append(
                pbegin
                | "GlobPattern" >> beam.Create([self.input_glob])
                | "UnstatableToRefs" >> beam.FlatMap(
                    lambda pattern: [ImageRef(u, stem(u), None, None) for u in unstatable_matches(pattern)]))
        if self.manifest:
            sources.append(
                pbegin
                | "MatchManifest" >> fileio.MatchFiles(self.manifest, EmptyMatchTreatment.DISALLOW)
                | "ReadManifest" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
                | "ParseManifest" >> beam.FlatMap(
                    lambda f: parse_manifest(read_text(f), f.metadata.path, require_rows=True)))
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
    uri, refs = kv
    # The listing that says most wins: one with a case id, then one with an
    # explicit image id (a glob only knows the file stem), so a URI given by
    # both --input and --manifest keeps the manifest's ids. Ties: smallest ids.
    refs = sorted(refs, key=lambda r: (r.case_id is None, r.image_id in (None, stem(uri)),
                                       r.case_id or "", r.image_id or ""))
    if len(refs) > 1:
        _duplicate_listings.inc(len(refs) - 1)
    return refs[0]
