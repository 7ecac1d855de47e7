"""The code scan for the editor: ``POST /api/v1/scan`` with the text of a Python file."""

from __future__ import annotations

from typing import Any, Literal

from anyio import to_thread
from fastapi import APIRouter
from pydantic import BaseModel, Field

from clowder_ml.api.bounded import bounded_route
from clowder_ml.api.deps import PlatformDep, UserDep
from clowder_ml.api.responses import errors
from clowder_ml.api.schemas import Strict
from clowder_ml.errors import PayloadTooLarge
from clowder_ml.services.code_scan import MAX_CODE_BYTES, scan_for_editor

# JSON escapes can make the body up to 12x the code's characters (one outside the BMP is
# two \uXXXX escapes), plus the field names: code the schema allows is never refused as
# too large; only a body no valid request needs is.
router = APIRouter(prefix="/api/v1", tags=["scan"],
                   route_class=bounded_route(12 * MAX_CODE_BYTES + 4096),
                   responses=errors(PayloadTooLarge))


class ScanRequest(Strict):
    code: str = Field(max_length=MAX_CODE_BYTES, description="Python source to check")


class FindingOut(BaseModel):
    rule_id: str
    severity: Literal["low", "medium", "high"]
    confidence: Literal["low", "medium", "high"]
    line: int
    column: int
    end_line: int
    end_column: int
    message: str
    hint: str
    source: Literal["policy", "bandit"]


class MarkerOut(BaseModel):
    """A Monaco ``IMarkerData``: 1-based lines and UTF-16 columns, severity 1/2/4/8."""

    startLineNumber: int
    startColumn: int
    endLineNumber: int
    endColumn: int
    severity: int
    message: str
    code: str
    source: str


class ScanOut(BaseModel):
    blocked: bool = Field(description="A run of this code would be refused")
    block_at: str | None
    counts: dict[str, int]
    notes: list[str]
    findings: list[FindingOut]
    markers: list[MarkerOut]


@router.post("/scan", response_model=ScanOut)
async def scan_code(body: ScanRequest, user: UserDep, platform: PlatformDep) -> Any:
    """What the pre-run scan (AST policy + Bandit) finds in ``code``; nothing is run."""
    return await to_thread.run_sync(scan_for_editor, platform.settings, body.code)
