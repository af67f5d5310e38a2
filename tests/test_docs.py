"""The README documents every feature column and policy entry (no drift)."""
from __future__ import annotations

import json
import pathlib

from schemas.features import FIELDS
from schemas.policy import DEFAULT_POLICY_PATH
from schemas.reasons import REASONS

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_starts_with_the_two_setup_commands():
    setup = README.split("## Set up and run", 1)[1].split("##", 1)[0]
    commands = [l.split("#")[0].strip() for l in setup.split("```sh", 1)[1].split("```", 1)[0].splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_every_feature_column_is_documented_with_its_unit():
    for f in FIELDS:
        assert f"| `{f.name}` | {f.type} | {f.unit} | {f.doc} |" in README, f.name


def test_every_policy_entry_and_reason_is_documented():
    policy = json.loads(DEFAULT_POLICY_PATH.read_text())
    for key, value in policy.items():
        if isinstance(value, dict) and key != "suppressed_by":
            assert f"| `{key}` |" in README and value["why"] in README, key
    for reason in REASONS:
        assert f"`{reason}`" in README, reason


def test_every_prediction_column_is_documented():
    from schemas.predictions import SCHEMA
    rows = README.split("Rows (`schemas/predictions.py`", 1)[1].split("\n\n", 2)[1]
    documented = {name for line in rows.splitlines() if line.startswith("| `")
                  for name in line.split("|")[1].replace("`", "").replace(" ", "").split(",")}
    assert documented == set(SCHEMA.names)


def test_every_metrics_json_field_is_documented():
    from schemas.metrics import FIELDS
    for name, meaning in FIELDS:
        assert f"| `{name}` | {meaning} |" in README, name
