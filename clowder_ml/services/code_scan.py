"""The code scan as the editor uses it: findings for a file as the user types.

Nothing runs: this is :func:`clowder_ml.sandbox.scan.scan` (the AST policy and Bandit) with
the operator's block level, returned with the findings as Monaco markers as well.
"""

from __future__ import annotations

from typing import Any

from clowder_ml.sandbox.scan import ScanOptions, scan
from clowder_ml.settings import Settings

# The scan's own limit (larger code is reported as too large to check, not scanned).
MAX_CODE_BYTES = ScanOptions().max_bytes


def scan_for_editor(settings: Settings, code: str) -> dict[str, Any]:
    """``ScanReport.to_dict()`` plus ``markers`` (Monaco ``IMarkerData``, UTF-16 columns).

    ``blocked`` says whether a run of this code would be refused at the server's
    ``scan_block_at``; the findings are the same whatever that level is.
    """
    block_at = None if settings.scan_block_at == "off" else settings.scan_block_at
    report = scan(code, ScanOptions(block_at=block_at))
    return {**report.to_dict(), "markers": report.monaco_markers()}
