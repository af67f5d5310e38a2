"""Which URIs a job may read images from. Pure.

A manifest is user-supplied data: a row naming `gs://someone-elses-bucket/x`,
`https://...` or `images/../../secrets` must not make the job read it. Such
rows become dead letters with reason `outside_allowed_root`, never reads.

Rules, in order:
  1. scheme: only gs:// and local paths (no http, s3, file://, data:, ...);
  2. no `..` path segment anywhere (even if it would resolve inside a root);
  3. under one of the allowed roots, when any are known. Without
     --allowed_roots they are the roots the job was given: --image_root, the
     directory part of each --input glob (a dated run's --input folder
     itself), the bucket of a gs:// --manifest and the folder of a local one.

Local paths are judged by where they really lead, not by how they are
written: the path and the roots are both resolved (os.path.realpath), so a
symlink inside a root that points at /etc/passwd is outside it, and a root
that is itself a symlink (/tmp on some systems) still holds its files. That
check is repeated at read time, on the opened file, by transforms.io.read.
"""
from __future__ import annotations

import os
import posixpath
import re

REASON = "outside_allowed_root"
ALLOWED_SCHEMES = ("gs",)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_WILDCARD = re.compile(r"[*?\[]")


def scheme_of(uri: str) -> str | None:
    """'gs' for gs://..., None for a local path (a Windows drive letter is not a scheme)."""
    m = _SCHEME.match(uri)
    return m.group(1).lower() if m and len(m.group(1)) > 1 else None


def _normal_root(root: str) -> str:
    root = root.strip()
    if scheme_of(root) is None:
        root = os.path.abspath(root)
    return root.rstrip("/") + "/"


def is_glob(pattern: str) -> bool:
    """Whether `pattern` holds a wildcard (*, ? or [)."""
    return bool(_WILDCARD.search(pattern))


def literal(name: str) -> str:
    """`name` as a Beam glob matching itself. '[' becomes [\\[] (a class that
    also admits a backslash there) rather than [[], which Python's re warns of
    as a possible nested set."""
    return "".join(_GLOB_ESCAPES.get(c, c) for c in name)


_GLOB_ESCAPES = {"*": "[*]", "?": "[?]", "[": "[\\[]"}


def glob_root(pattern: str) -> str:
    """The directory part of a glob before its first wildcard: gs://b/up/dt=*/x -> gs://b/up/."""
    head = _WILDCARD.split(pattern, 1)[0]
    return head if head.endswith("/") else posixpath.dirname(head) + "/"


def bucket_root(uri: str) -> str:
    """gs://bucket/any/path -> gs://bucket/."""
    return "gs://" + uri[len("gs://"):].split("/", 1)[0] + "/"


def default_roots(*, input_glob=None, manifest=None, image_root=None, input_root=None) -> list[str]:
    """The roots implied by a job's own inputs (see the module docstring).
    input_root: a dated run's --input, the folder holding its dt= folders,
    taken as written (a literal name: its [ or * are not wildcards)."""
    roots = []
    if image_root:
        roots.append(image_root)
    if input_root:
        roots.append(input_root)
    if input_glob:
        roots.append(glob_root(input_glob))
    if manifest:
        # A local manifest's own folder, as a gs:// one's bucket: rows naming
        # files elsewhere need --allowed_roots, so a manifest cannot reach /etc.
        roots.append(bucket_root(manifest) if scheme_of(manifest) == "gs" else glob_root(manifest))
    return roots


def parse_roots(text: str | None) -> list[str]:
    """--allowed_roots: comma-separated prefixes; ValueError names a bad one."""
    roots = [r.strip() for r in (text or "").split(",") if r.strip()]
    for r in roots:
        s = scheme_of(r)
        if s is not None and s not in ALLOWED_SCHEMES:
            raise ValueError(f"--allowed_roots {r}: only gs:// and local roots are allowed")
        if s == "gs" and not r[len("gs://"):].split("/", 1)[0]:
            raise ValueError(f"--allowed_roots {r}: no bucket")
    return roots


class AllowedRoots:
    """refusal(uri) -> None when the job may read uri, else why not (one line).

    For a local uri, refusal() resolves symlinks (it looks at the filesystem
    but reads nothing); local_root() gives the resolved root a resolved path
    lies under, which transforms.io.read opens the file from.
    """

    def __init__(self, roots):
        self.roots = tuple(sorted({_normal_root(r) for r in roots}))
        self._local = tuple(r for r in self.roots if scheme_of(r) is None)

    def refusal(self, uri: str) -> str | None:
        scheme = scheme_of(uri)
        if scheme is not None and scheme not in ALLOWED_SCHEMES:
            return f"scheme {scheme}:// is not allowed (only gs:// and local paths)"
        path = uri[len(scheme) + 3:] if scheme else uri
        if ".." in path.replace("\\", "/").split("/"):
            return "path contains a '..' segment"
        if not self.roots:
            return None
        if scheme:
            if any(uri.startswith(root) for root in self.roots):
                return None
        elif self.local_root(os.path.realpath(uri)) is not None:
            return None
        return self.outside_message()

    def outside_message(self, real: str | None = None) -> str:
        leads = f" (it resolves to {real})" if real else ""
        return f"not under an allowed root{leads} ({', '.join(self.roots)})"

    def local_root(self, real_path: str) -> str | None:
        """The resolved allowed root holding an already resolved local path
        ("/" when no roots are known at all), else None."""
        if not self.roots:
            return "/"
        for root in self._local:
            # Resolved at each check, where the read happens (a worker, not the launcher).
            real_root = os.path.realpath(root).rstrip("/") + "/"
            if real_path.startswith(real_root):
                return real_root
        return None

    def __repr__(self):
        return f"AllowedRoots({list(self.roots)})"
