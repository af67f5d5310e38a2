"""The layering the README's layout section states, checked on the imports
themselves: schemas <- transforms <- beam_jobs <- templates, and inside
transforms each subpackage imports only what its __init__ allows."""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUBPACKAGES = ("image", "io", "curate", "dataset", "scoring", "evaluation")
# What each transforms subpackage may import of the others (its __init__ says so).
MAY_IMPORT = {"image": set(), "io": set(), "curate": {"image", "io"}, "dataset": {"image", "io", "curate"},
              "scoring": {"image", "io"}, "evaluation": {"image", "io"}}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_transform_or_schema_imports_a_job_or_a_template():
    for folder in ("transforms", "schemas"):
        for path in (ROOT / folder).rglob("*.py"):
            bad = {n for n in _imports(path) if n.split(".")[0] in ("beam_jobs", "templates", "benchmarks", "tests")}
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_each_transforms_subpackage_imports_only_what_it_may():
    for sub in SUBPACKAGES:
        for path in (ROOT / "transforms" / sub).rglob("*.py"):
            used = {n.split(".")[1] for n in _imports(path)
                    if n.startswith("transforms.") and n.split(".")[1] in SUBPACKAGES}
            assert used <= MAY_IMPORT[sub] | {sub}, f"{path.relative_to(ROOT)} imports transforms.{sorted(used - MAY_IMPORT[sub] - {sub})}"
