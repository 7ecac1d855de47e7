"""Typed settings read from the environment (prefix ``CLOWDER_ML_``).

Defaults are the embedded, single-machine setup: SQLite and blobs in a local data folder.
Nothing here holds a secret by default; the first admin password is generated when unset.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Placeholder secrets are refused at start-up (deploy/k8s ships "CHANGE-ME" values): a secret
# whose letters and digits, case ignored, contain one of these marks is a placeholder.
PLACEHOLDER_MARKS = ("changeme", "replaceme", "placeholder", "yourpassword", "yoursecret",
                     "yourtoken")


def is_placeholder(value: str) -> bool:
    """Whether ``value`` is a placeholder rather than a secret (see ``PLACEHOLDER_MARKS``)."""
    squashed = "".join(c for c in value.lower() if c.isalnum())
    return any(mark in squashed for mark in PLACEHOLDER_MARKS)


def url_placeholder(url: str) -> str | None:
    """Which part of ``url`` is a placeholder (``"password"`` or ``"host"``), or None."""
    try:
        parts = urlsplit(url)
        password, host = parts.password, parts.hostname
    except ValueError:  # not a URL after all; its own field checks it
        return None
    if password is not None and is_placeholder(password):
        return "password"
    if host is not None and is_placeholder(host):
        return "host"
    return None


class RayNodeType(BaseModel):
    """One node type the cluster's autoscaler may add, in the shape of Ray's autoscaler config
    (``available_node_types.<name>``: ``resources`` with ``CPU``, ``GPU``, ``memory`` in bytes,
    and ``max_workers``); its other keys (``node_config``, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    resources: dict[str, float] = Field(default_factory=dict)
    min_workers: int = Field(default=0, ge=0)
    max_workers: int = Field(ge=0)


class Settings(BaseSettings):
    """Server settings. Every field can be set as ``CLOWDER_ML_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CLOWDER_ML_", extra="ignore")

    data_dir: Path = Field(default=Path("./clowder-ml-data"), description="Data folder")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; SQLite in the data folder when unset"
    )
    admin_password: SecretStr | None = Field(
        default=None, description="First admin's password; generated and printed once if unset"
    )
    public_url: str | None = Field(default=None, description="URL users open (for messages)")
    # The Clowder v2 instance this server works with (``models export --to-clowder`` and the
    # extractor listener); the server never calls a Clowder URL a request names.
    clowder_url: str | None = Field(default=None, description="Clowder's base URL")

    # Uploads
    max_upload_bytes: int = Field(default=1 << 40, description="Largest single upload (tus)")
    max_multipart_bytes: int = Field(default=64 << 20, description="Largest multipart file")
    upload_expiry_hours: float = Field(default=24.0, description="Unfinished uploads expire")
    # Changes to one dataset commit one after the other; one that waits longer than this for
    # its turn answers 503 with Retry-After (a complete upload is kept and retried).
    dataset_commit_wait_s: float = Field(
        default=30.0, gt=0, description="Longest wait for a dataset's commit lock")

    # Zip archives unpacked into datasets
    zip_max_total_bytes: int = Field(default=20 << 30, description="Sum of unpacked sizes")
    zip_max_ratio: float = Field(default=200.0, description="Largest unpacked/packed ratio")
    zip_max_entries: int = Field(default=100_000)

    # Tokens and sessions
    session_hours: float = Field(default=12.0)
    cookie_secure: bool = Field(
        default=False, description="Always set Secure on the session cookie (it is set anyway "
        "when served over https or public_url is https)")

    # Account security (clowder_ml.api.origin_check, clowder_ml.services.throttle). A cookie-
    # authenticated write must come from this server's own origin, public_url's, or one here.
    public_origins: list[str] = Field(
        default_factory=list, description="More origins (scheme://host[:port]) whose pages may "
        "send cookie-authenticated writes (JSON list)")
    # X-Forwarded-For/-Proto are believed only from these peers (addresses or CIDRs, JSON
    # list); unset: never, so a client cannot pick its own address to dodge throttling.
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Reverse proxies whose X-Forwarded-For/-Proto count")
    # Failed log-ins: after ``*_free_failures`` failures (per account, per client address) each
    # further attempt waits base * 2^(failures - free), at most max; failures decay by half
    # every half-life, a successful log-in clears the account's.
    login_account_free_failures: int = Field(default=5, ge=1)
    login_address_free_failures: int = Field(default=10, ge=1)
    login_base_delay_s: float = Field(default=1.0, gt=0)
    login_max_delay_s: float = Field(default=900.0, gt=0)
    login_half_life_s: float = Field(default=3600.0, gt=0)
    audit_retention_days: float = Field(
        default=365.0, gt=0, description="Audit events older than this are deleted")

    # Blob garbage collection: never touch blobs younger than this (they may be in flight)
    gc_grace_seconds: float = Field(default=3600.0)

    # Sandbox for user code (clowder_ml.sandbox). gVisor is the boundary; bubblewrap is a weaker
    # backend an operator may choose explicitly. There is never a fallback to no sandbox.
    sandbox_backend: Literal["gvisor", "bubblewrap"] = Field(
        default="gvisor", description="gvisor (runsc) or bubblewrap (weaker isolation)"
    )
    sandbox_runsc_path: str = Field(default="runsc", description="runsc binary (name or path)")
    sandbox_runsc_platform: str = Field(default="ptrace", description="runsc --platform")
    sandbox_bwrap_path: str = Field(default="bwrap", description="bwrap binary (name or path)")
    sandbox_state_dir: Path | None = Field(
        default=None, description="runsc --root state folder; a private temp folder if unset"
    )
    sandbox_tmp_dir: Path | None = Field(
        default=None, description="Where per-run bundles and work folders live; temp if unset"
    )
    sandbox_python: Path | None = Field(
        default=None, description="Python used inside the sandbox; this platform's if unset"
    )
    # The pre-run code scan is advice plus defense in depth: findings at or above this
    # severity refuse to run user code ("off": report only, never block).
    scan_block_at: Literal["high", "medium", "low", "off"] = Field(
        default="high", description="Lowest scan severity that blocks a run of user code"
    )

    # Job engine (Ray). Unset ray_address: `serve` starts an embedded local head.
    ray_address: str | None = Field(
        default=None, description="Ray Jobs API address (http://HOST:8265); embedded head if unset"
    )
    ray_auth_token: SecretStr | None = Field(
        default=None, description="Token for a remote Ray cluster with token auth"
    )
    ray_num_cpus: int | None = Field(default=None, description="Embedded head CPUs; all if unset")
    ray_num_gpus: int | None = Field(default=None, description="Embedded head GPUs; Ray detects")
    ray_object_store_bytes: int = Field(default=256 << 20, description="Embedded object store")
    ray_node_types: dict[str, RayNodeType] = Field(
        default_factory=dict, description="Worker node types the cluster's autoscaler may add "
        "(JSON, Ray's available_node_types shape): jobs up to that ceiling are accepted")
    ray_dashboard_port: int | None = Field(
        default=None, description="Embedded head's dashboard/Jobs API port; a free one if unset"
    )

    engine_enabled: bool = Field(
        default=True, description="Run jobs (start or reach Ray); off: jobs stay pending"
    )
    ray_lost_after_s: float = Field(
        default=30.0, description="Ray unreachable this long: its running jobs count as lost"
    )
    max_running_jobs_per_user: int = Field(
        default=4, ge=1, description="More of one user's jobs than this wait in the queue"
    )
    job_api_url: str | None = Field(
        default=None, description="API URL the runner calls back; `serve` sets the local one"
    )
    job_python: str | None = Field(
        default=None, description="Python that runs the runner on Ray nodes; this one if unset"
    )
    job_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for every job (JSON)"
    )
    job_shared_dir: Path | None = Field(
        default=None, description="Checkpoints, on storage all Ray nodes share; "
        "<data>/shared if unset"
    )
    extra_tasks: list[str] = Field(
        default_factory=list, description="Modules with more tasks (each exports TASKS)"
    )

    log_level: str = Field(default="INFO")
    log_json: bool = Field(default=True)

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        """Refuse a placeholder where a secret belongs: any secret setting, a password or
        host in a URL setting (``DATABASE_URL``, ``CLOWDER_URL``...), a value of ``JOB_ENV``.
        Never echoes the value."""
        bad: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            env = f"CLOWDER_ML_{name.upper()}"
            if isinstance(value, SecretStr) and is_placeholder(value.get_secret_value()):
                bad.append(env)
            elif isinstance(value, str) and "://" in value:
                part = url_placeholder(value)
                if part is not None:
                    bad.append(f"{env} (its {part})")
            elif isinstance(value, dict):
                bad += [f"{env}[{key!r}]" for key, v in value.items()
                        if isinstance(v, str) and is_placeholder(v)]
        if bad:
            raise ValueError(f"placeholder secret in {', '.join(bad)}: set real values "
                             "(the deploy manifests ship placeholders on purpose)")
        return self

    @cached_property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def blobs_dir(self) -> Path:
        return self.resolved_data_dir / "blobs"

    @property
    def uploads_dir(self) -> Path:
        return self.resolved_data_dir / "uploads"

    @property
    def tmp_dir(self) -> Path:
        return self.resolved_data_dir / "tmp"

    @property
    def jobs_dir(self) -> Path:
        """Per-job files (logs) live in ``<jobs_dir>/<job id>/``."""
        return self.resolved_data_dir / "jobs"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'clowder-ml.sqlite3'}"

    def ensure_dirs(self) -> None:
        for d in (self.resolved_data_dir, self.blobs_dir, self.uploads_dir, self.tmp_dir,
                  self.jobs_dir):
            d.mkdir(parents=True, exist_ok=True)
