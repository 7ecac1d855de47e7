"""SQLAlchemy 2 models.

Stored data is tolerant (JSON columns accept any object); request models, not these, are strict.
All timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A DateTime that always comes back timezone-aware in UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class Permission(enum.StrEnum):
    READ = "read"
    WRITE = "write"


class TokenKind(enum.StrEnum):
    API = "api"
    SESSION = "session"


class UploadState(enum.StrEnum):
    """receiving -> finalizing (every byte arrived and checked; kept until committed) ->
    completed; receiving or finalizing -> failed (wrong digest, bad zip: for good)."""

    RECEIVING = "receiving"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token. Only a hash of its secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16), default=TokenKind.API.value)
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)

    user: Mapped[User] = relationship(lazy="joined")


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_dataset_owner_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    owner: Mapped[User] = relationship(lazy="joined")


class DatasetShare(Base):
    __tablename__ = "dataset_shares"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    permission: Mapped[str] = mapped_column(String(8))

    user: Mapped[User] = relationship(lazy="joined")


class DatasetVersion(Base):
    """An immutable snapshot of a dataset: the set of ``VersionFile`` rows under it."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "number", name="uq_version_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VersionFile(Base):
    __tablename__ = "version_files"
    __table_args__ = (Index("ix_version_files_sha256", "sha256"),)

    version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)


class FileMetadata(Base):
    """Free-form JSON on a path of a dataset (not versioned; survives file replacement)."""

    __tablename__ = "file_metadata"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)


class Upload(Base):
    """A tus upload in progress (or finished). The bytes live in ``uploads/<id>.part``."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    unpack: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default=UploadState.RECEIVING.value)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    version: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class Job(Base):
    """A job: its spec as submitted, its state (see ``clowder_ml.engine.states``), why it
    ended and what it produced. ``state`` changes only through ``services.jobs.transition``."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_owner_state", "owner_id", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    # When the runner process started (as it reported), for the RUNNING transition.
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    # Ray's submission id of the current attempt: the job id, then "<id>-a2", "<id>-a3"...
    ray_submission_id: Mapped[str | None] = mapped_column(String(64), default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # While not running: what the job waits for, in words ("needs 1 GPU; 0 of 0 free").
    waiting_for: Mapped[str | None] = mapped_column(Text, default=None)
    # The runner's latest {"done", "total", "message"}.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Bytes of log stored so far (the log itself is a file under <data>/jobs/<id>/).
    log_size: Mapped[int] = mapped_column(BigInteger, default=0)


class JobToken(Base):
    """The runner's credential: reaches only its job's inputs and outputs, and only until the
    job ends (tokens are revoked at the terminal transition). Only a hash is stored."""

    __tablename__ = "job_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class JobMetric(Base):
    """One point of a job's metric series (step, name, value)."""

    __tablename__ = "job_metrics"
    __table_args__ = (Index("ix_job_metrics_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float | None] = mapped_column(Float, default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class JobOutput(Base):
    """A file a job produced, stored as a blob by digest."""

    __tablename__ = "job_outputs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobEvent(Base):
    """One state change (or notable moment) of a job, with its time and a message."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")


class Model(Base):
    """A registered model: a name its owner gives to a series of versions."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_model_owner_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The best-version rule: the ``best`` alias follows the version with the highest
    # (``max``) or lowest (``min``) value of this metric.
    best_metric: Mapped[str | None] = mapped_column(String(128), default=None)
    best_mode: Mapped[str | None] = mapped_column(String(8), default=None)


class ModelShare(Base):
    """Access to a model for another user, as for datasets (read or write)."""

    __tablename__ = "model_shares"

    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"),
                                          primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True, index=True)
    permission: Mapped[str] = mapped_column(String(8))


class ModelAlias(Base):
    """A name (``production``, ``best``...) pointing at one version of a model."""

    __tablename__ = "model_aliases"

    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"),
                                          primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"),
                                            index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelAliasEvent(Base):
    """One move of an alias (its history): from one version number to another (None: the
    alias did not exist / was removed), by whom and why."""

    __tablename__ = "model_alias_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"),
                                          index=True)
    alias: Mapped[str] = mapped_column(String(64))
    from_number: Mapped[int | None] = mapped_column(Integer, default=None)
    to_number: Mapped[int | None] = mapped_column(Integer, default=None)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                 default=None)
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """One trained model: its files (a Hugging Face folder, by digest), where it came from
    (job, base model, data, params) and how good it is (metrics)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "number", name="uq_model_version_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None, unique=True)
    task: Mapped[str] = mapped_column(String(64), default="")
    base_model: Mapped[str] = mapped_column(String(300), default="")
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    digest: Mapped[str] = mapped_column(String(64), default="")  # sha256 of model.safetensors
    size: Mapped[int] = mapped_column(BigInteger, default=0)  # all files
    status: Mapped[str] = mapped_column(String(16), default="ready")
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # How it came to be: "job" (a fine-tune) or "import" (an uploaded HF folder).
    source: Mapped[str] = mapped_column(String(16), default="job")
    # The version it was fine-tuned from (a registered base model), if any.
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), default=None)


class ModelFile(Base):
    __tablename__ = "model_files"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)



class JobLink(Base):
    """Lineage: a dataset or model version a job read (``in``) or produced (``out``).

    ``ref`` is the dataset id or the model version row id (as text); ``number`` the dataset
    version or model version number. Written when a job is created (inputs) and when it
    publishes (outputs), so lineage is a query both ways, never a scan of job specs.
    """

    __tablename__ = "job_links"
    __table_args__ = (Index("ix_job_links_target", "kind", "ref", "number"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    direction: Mapped[str] = mapped_column(String(3), primary_key=True)  # in | out
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # dataset | model
    ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)


class ModelReproduction(Base):
    """A reproduce run of a version: the job that re-ran its manifest and the verdict."""

    __tablename__ = "model_reproductions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        unique=True)
    verdict: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClowderAccount(Base):
    """A Clowder user this server runs jobs for: the local account that owns their jobs.

    Keyed by the Clowder instance's API URL and the user's Clowder id, so a Clowder user is
    never mapped onto a local account of the same name (such as ``admin``) by accident."""

    __tablename__ = "clowder_accounts"
    __table_args__ = (UniqueConstraint("clowder_url", "clowder_user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clowder_url: Mapped[str] = mapped_column(String(512))
    clowder_user_id: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(320))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClowderRequest(Base):
    """One Clowder extraction request and what became of it, so that a redelivered message
    resumes the job it started instead of running it again, and results are written back
    to Clowder once. ``written_back`` lists the results already in Clowder."""

    __tablename__ = "clowder_requests"
    __table_args__ = (UniqueConstraint("clowder_url", "clowder_job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clowder_url: Mapped[str] = mapped_column(String(512))
    clowder_job_id: Mapped[str] = mapped_column(String(64))
    extractor: Mapped[str] = mapped_column(String(128))
    clowder_dataset_id: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"),
                                               default=None)
    written_back: Mapped[list[str]] = mapped_column(JSON, default=list)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    # The delivery working on the request now, until when (renewed while it works): a
    # duplicate delivery waits for it, a killed listener's lease runs out.
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    # The answer Clowder got (``SUCCEEDED``/``ERROR`` and its text), repeated on redelivery.
    final_status: Mapped[str | None] = mapped_column(String(16), default=None)
    final_message: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginThrottle(Base):
    """Failed log-ins counted under one key (``account:<name>`` or ``address:<ip>``).

    ``score`` is the count as of ``updated_at``; it decays with time (half-life in settings).
    Kept in the database so that every server process and a restarted one see the same
    count (``clowder_ml.services.throttle``).
    """

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    score: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AuditEvent(Base):
    """One security-relevant action (``clowder_ml.services.audit``): who, what, when, from
    where, and how it went. Never holds a secret."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    # The account acting (or, for a log-in, the one named in the attempt); the name is kept
    # as given so that the record outlives the user and names accounts that do not exist.
    actor: Mapped[str] = mapped_column(String(64), index=True)
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None)
    client: Mapped[str | None] = mapped_column(String(64), default=None)
    target: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    request_id: Mapped[str | None] = mapped_column(String(32), default=None)
