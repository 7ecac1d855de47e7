"""Request and response models of the jobs API and the runner API (see docs/jobs.md).

The views that services build (``JobOut``, ``RunnerJob``) are in
:mod:`clowder_ml.services.job_views`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from clowder_ml.api.schemas import Metadata, Out, Strict, Text
from clowder_ml.services.job_runs import Report


class JobEventOut(Out):
    at: datetime
    state: str
    message: str


class MetricOut(Out):
    id: int
    step: int
    name: str
    value: float | None
    at: datetime


class OutputOut(Out):
    path: str
    sha256: str
    size: int


# runner API ----------------------------------------------------------------------------------

class ReportEvent(Strict):
    message: Text = Field(max_length=2000)


class ReportMetric(Strict):
    step: int = Field(ge=0, le=2**62)
    name: Text = Field(min_length=1, max_length=128)
    value: float | None = Field(description="None for a non-finite value (NaN, inf)")


class ReportLog(Strict):
    offset: int = Field(ge=0, description="Bytes of log the server has already accepted")
    data: str = Field(max_length=4 << 20)


class ReportProgress(Strict):
    done: float = Field(ge=0)
    total: float | None = Field(default=None, ge=0)
    message: Text = Field(default="", max_length=500)


class RunnerReport(Strict):
    """One batch from the runner. Every part is optional; replaying a batch is harmless
    for the log (it is placed by offset) and the started mark."""

    started_at: datetime | None = None
    events: list[ReportEvent] = Field(default_factory=list, max_length=1000)
    metrics: list[ReportMetric] = Field(default_factory=list, max_length=10_000)
    log: ReportLog | None = None
    progress: ReportProgress | None = None

    def to_report(self) -> Report:
        """The batch as the jobs service takes it."""
        return Report(
            started_at=self.started_at, events=[e.message for e in self.events],
            metrics=[(m.step, m.name, m.value) for m in self.metrics],
            log=(self.log.offset, self.log.data.encode("utf-8", "replace")) if self.log
            else None,
            progress=self.progress.model_dump() if self.progress else None)


class ReportAck(BaseModel):
    cancel_requested: bool
    log_offset: int


class RunnerFinish(Strict):
    status: Literal["succeeded", "failed"]
    result: Metadata | None = None
    reason: Text | None = Field(default=None, max_length=2000)


class FinishAck(BaseModel):
    state: str
