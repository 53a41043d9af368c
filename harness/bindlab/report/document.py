"""The matrix as JSON (``"format": "bindlab-report/1"``)."""

from __future__ import annotations

import json
from dataclasses import asdict

from bindlab.report.common import Kernel, Results_, totals


def to_json(results: Results_, kernel: Kernel = None) -> str:
    """The matrix as JSON (``"format": "bindlab-report/1"``)."""
    doc = {
        "format": "bindlab-report/1",
        "kernel": kernel,
        "totals": totals(results),
        "scenarios": [
            {
                "name": res.name, "path": res.path, "claim": res.claim, "source": res.source,
                "prefixes": list(res.prefixes), "seconds": round(res.seconds, 3),
                "rows": [asdict(r) for r in res.rows],
            }
            for res in results
        ],
    }  # fmt: skip
    return json.dumps(doc, indent=1) + "\n"
