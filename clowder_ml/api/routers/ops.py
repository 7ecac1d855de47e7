"""Operations: liveness, readiness, Prometheus metrics, garbage collection."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from clowder_ml.api.deps import PlatformDep, UserDep
from clowder_ml.api.responses import ADMIN_ONLY, errors
from clowder_ml.api.schemas import GcOut
from clowder_ml.errors import ServiceUnavailable
from clowder_ml.services import maintenance, users

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses=errors(ServiceUnavailable))
def readyz(platform: PlatformDep) -> dict[str, str]:
    """The database answers and the data folder is writable."""
    try:
        with platform.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise ServiceUnavailable("The database is not reachable.", str(exc)[:200]) from exc
    probe = platform.settings.tmp_dir / ".ready"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ServiceUnavailable("The data folder is not writable.", str(exc)) from exc
    return {"status": "ready"}


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.post("/api/v1/admin/gc", response_model=GcOut, responses=errors(*ADMIN_ONLY))
def collect_garbage(user: UserDep, platform: PlatformDep) -> GcOut:
    """Expire stale uploads and delete unreferenced blobs (admins only)."""
    users.require_admin(user)
    expired, removed = maintenance.collect(platform)
    return GcOut(blobs_removed=removed, uploads_expired=expired)
