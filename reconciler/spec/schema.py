"""The JSON Schema of the desired-state file, for editors (yaml-language-server) and docs.

Generated from the pydantic `Spec` model, so it cannot drift from what the loader accepts
(checks that need several fields or the addresses' syntax are the loader's); the output
is deterministic so that `specs/cluster.schema.json` can be checked for staleness.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.spec.models import Spec


def schema_dict() -> dict[str, Any]:
    """The schema as a dict, with a title and description for editors."""
    body = Spec.model_json_schema()
    head: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "reconciler cluster spec",
        "description": (
            "Desired state of a two-node HA cluster (DRBD, PostgreSQL streaming replication, "
            "floating IPs, services). Check a file with `reconciler validate FILE`."
        ),
    }
    body.pop("title", None)
    body.pop("description", None)
    return {**head, **body}


def schema_json() -> str:
    """The schema as pretty, stable JSON text with a trailing newline."""
    return json.dumps(schema_dict(), indent=2, ensure_ascii=False) + "\n"
