"""Model registry: versions per (domain, strategy), exactly one active, files by content hash.

The one-active rule lives in the database (a partial unique index), and activation takes
row locks (PostgreSQL) or the write lock (SQLite) so two processes activating at once
still leave exactly one active version.

A version's row holds its file's content address (``ab/abcd….ubj``), relative to the models
folder: each registry resolves it against its own, so a home that is moved, restored or
mounted at another path (a serving replica on another node) reads its own copy.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from lab.db import session_scope
from lab.db.models import ModelEvent, ModelVersion
from lab.db.types import utcnow
from lab.errors import ModelFileError, RegistryError, UnknownStrategy, UnknownVersion

__all__ = ["ModelRegistry", "VersionInfo", "DOMAINS"]

#: "trading" is the lab's own; "betting" holds versions adopted from older databases
DOMAINS = ("trading", "betting")


@dataclass(frozen=True)
class VersionInfo:
    """A version as one registry sees it: ``model_path`` lies under that registry's models folder."""

    id: int
    domain: str
    strategy: str
    version: int
    is_active: bool
    status: str
    model_path: Path
    model_sha256: str | None
    params: dict[str, Any]
    metrics: dict[str, Any]
    data_fingerprint: str | None
    feature_fingerprint: str | None
    code_version: str | None
    created_at: datetime
    activated_at: datetime | None
    note: str | None

    @classmethod
    def of(cls, row: ModelVersion, model_path: Path) -> VersionInfo:
        return cls(
            id=row.id,
            domain=row.domain,
            strategy=row.strategy,
            version=row.version,
            is_active=row.is_active,
            status=row.status,
            model_path=model_path,
            model_sha256=row.model_sha256,
            params=row.params or {},
            metrics=row.metrics or {},
            data_fingerprint=row.data_fingerprint,
            feature_fingerprint=row.feature_fingerprint,
            code_version=row.code_version,
            created_at=row.created_at,
            activated_at=row.activated_at,
            note=row.note,
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _content_address(sha: str, suffix: str) -> str:
    """Where a file lies in the models folder, by its sha256: the path a version's row holds."""
    return f"{sha[:2]}/{sha}{suffix}"


def _check_rollback(target: ModelVersion, active: ModelVersion | None) -> None:
    """A rollback goes from the active version to an older one of the same (domain, strategy)."""
    name = f"{target.domain}/{target.strategy}"
    if active is None:
        raise RegistryError(f"{name} has no active version to roll back from; "
                            f"`lab models activate {target.id}` makes v{target.version} active")
    if active.id == target.id:
        raise RegistryError(f"v{target.version} (id {target.id}) is the active {name} version already: "
                            "nothing to roll back")
    if target.version > active.version:
        raise RegistryError(f"v{target.version} (id {target.id}) is newer than the active {name} v{active.version} "
                            f"(id {active.id}): a rollback goes back to an earlier version; "
                            f"`lab models activate {target.id}` makes it active")


class ModelRegistry:
    def __init__(self, engine: Engine, models_dir: Path):
        self.engine = engine
        self.models_dir = Path(models_dir)

    # --- validation ----------------------------------------------------------------------

    @staticmethod
    def _check_domain(domain: str) -> None:
        if domain not in DOMAINS:
            raise RegistryError(f"unknown domain {domain!r}; known domains: {', '.join(DOMAINS)}")

    @staticmethod
    def _check_strategy(domain: str, strategy: str) -> None:
        if domain != "trading":
            return
        from lab.strategy import available_strategies

        known = available_strategies()
        if strategy not in known:
            raise UnknownStrategy(
                f"unknown strategy {strategy!r} in domain 'trading'; known: {', '.join(sorted(known))}"
            )

    # --- writing -------------------------------------------------------------------------

    def save_version(
        self,
        domain: str,
        strategy: str,
        model_file: Path,
        *,
        params: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        data_fingerprint: str | None = None,
        feature_fingerprint: str | None = None,
        code_version: str | None = None,
        note: str | None = None,
    ) -> VersionInfo:
        """Copy the model file into the store (by content hash) and register a new version."""
        self._check_domain(domain)
        self._check_strategy(domain, strategy)
        model_file = Path(model_file)
        if not model_file.is_file():
            raise ModelFileError(f"model file {model_file} does not exist")
        sha = _sha256(model_file)
        address = _content_address(sha, model_file.suffix)
        stored = self.models_dir / address
        if not stored.exists():
            stored.parent.mkdir(parents=True, exist_ok=True)
            tmp = stored.with_suffix(stored.suffix + ".tmp")
            shutil.copyfile(model_file, tmp)
            tmp.replace(stored)  # atomic: never a half-written model file
        for _attempt in range(5):
            try:
                with session_scope(self.engine, write_lock=True) as session:
                    latest = session.scalar(
                        select(func.max(ModelVersion.version)).where(
                            ModelVersion.domain == domain, ModelVersion.strategy == strategy
                        )
                    )
                    row = ModelVersion(
                        domain=domain,
                        strategy=strategy,
                        version=(latest or 0) + 1,
                        model_path=address,
                        model_sha256=sha,
                        is_active=False,
                        status="candidate",
                        params=params or {},
                        metrics=metrics or {},
                        data_fingerprint=data_fingerprint,
                        feature_fingerprint=feature_fingerprint,
                        code_version=code_version,
                        note=note,
                    )
                    session.add(row)
                    session.flush()
                    session.add(ModelEvent(version_id=row.id, domain=domain, strategy=strategy,
                                           action="registered", reason=note))
                    return self._info(row)
            except IntegrityError:
                continue  # another process took this version number; take the next
        raise RegistryError(f"could not allocate a version number for {domain}/{strategy}")

    def activate(self, version_id: int, *, reason: str | None = None) -> VersionInfo:
        """Make ``version_id`` the one active version of its (domain, strategy)."""
        return self._activate(version_id, reason=reason, rollback=False)

    def rollback_to_version(self, version_id: int, *, reason: str | None = None) -> VersionInfo:
        """Re-activate a version older than the active one (its domain and strategy stay as
        they were). The active version itself, a newer one, or a strategy with none active is
        refused: that is no rollback (``activate`` makes any version active)."""
        return self._activate(version_id, reason=reason or "rollback", rollback=True)

    def _activate(self, version_id: int, *, reason: str | None, rollback: bool) -> VersionInfo:
        with session_scope(self.engine, write_lock=True) as session:
            target = session.get(ModelVersion, version_id)
            if target is None:
                raise UnknownVersion(f"model version {version_id} does not exist")
            self._verified_file(target)
            scope = (ModelVersion.domain == target.domain, ModelVersion.strategy == target.strategy)
            # lock every version of this (domain, strategy), in id order: concurrent activations
            # serialize (locked in scan order, two could each hold a row the other waits for)
            session.execute(select(ModelVersion.id).where(*scope).order_by(ModelVersion.id).with_for_update())
            if rollback:
                _check_rollback(target, session.scalar(select(ModelVersion).where(*scope, ModelVersion.is_active.is_(True))))
            session.execute(
                update(ModelVersion)
                .where(*scope, ModelVersion.is_active.is_(True), ModelVersion.id != version_id)
                .values(is_active=False, status="retired")
            )
            session.flush()
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.id == version_id)
                .values(is_active=True, status="active", activated_at=utcnow())
            )
            session.add(ModelEvent(version_id=version_id, domain=target.domain, strategy=target.strategy,
                                   action="rolled_back" if rollback else "activated", reason=reason))
            session.flush()
            session.refresh(target)
            return self._info(target)

    def reject(self, version_id: int, reason: str) -> None:
        """Record why a candidate was not promoted; it stays registered as a candidate."""
        with session_scope(self.engine) as session:
            row = session.get(ModelVersion, version_id)
            if row is None:
                raise UnknownVersion(f"model version {version_id} does not exist")
            row.note = reason
            session.add(ModelEvent(version_id=row.id, domain=row.domain, strategy=row.strategy,
                                   action="rejected", reason=reason))

    # --- reading -------------------------------------------------------------------------

    def get(self, version_id: int) -> VersionInfo:
        with session_scope(self.engine) as session:
            row = session.get(ModelVersion, version_id)
            if row is None:
                raise UnknownVersion(f"model version {version_id} does not exist")
            return self._info(row)

    def get_active_version(self, strategy: str, domain: str = "trading") -> VersionInfo | None:
        self._check_domain(domain)
        self._check_strategy(domain, strategy)
        with session_scope(self.engine) as session:
            row = session.scalar(
                select(ModelVersion).where(
                    ModelVersion.domain == domain,
                    ModelVersion.strategy == strategy,
                    ModelVersion.is_active.is_(True),
                )
            )
            return self._info(row) if row else None

    def list_versions(self, domain: str | None = None, strategy: str | None = None) -> list[VersionInfo]:
        """Every version, oldest first; ``domain=None`` means all domains."""
        if domain is not None:
            self._check_domain(domain)
        query = select(ModelVersion).order_by(ModelVersion.domain, ModelVersion.strategy, ModelVersion.version)
        if domain is not None:
            query = query.where(ModelVersion.domain == domain)
        if strategy is not None:
            query = query.where(ModelVersion.strategy == strategy)
        with session_scope(self.engine) as session:
            return [self._info(row) for row in session.scalars(query)]

    def history(self, strategy: str | None = None) -> list[dict[str, Any]]:
        """Promotion history, newest first."""
        query = select(ModelEvent).order_by(ModelEvent.id.desc())
        if strategy is not None:
            query = query.where(ModelEvent.strategy == strategy)
        with session_scope(self.engine) as session:
            return [
                {"version_id": e.version_id, "domain": e.domain, "strategy": e.strategy,
                 "action": e.action, "reason": e.reason, "at": e.created_at}
                for e in session.scalars(query)
            ]

    def model_file(self, version: VersionInfo | int) -> Path:
        """The verified model file of a version; ModelFileError names the version otherwise."""
        with session_scope(self.engine) as session:
            version_id = version if isinstance(version, int) else version.id
            row = session.get(ModelVersion, version_id)
            if row is None:
                raise UnknownVersion(f"model version {version_id} does not exist")
            return self._verified_file(row)

    def _info(self, row: ModelVersion) -> VersionInfo:
        return VersionInfo.of(row, self._file_path(row))

    def _file_path(self, row: ModelVersion) -> Path:
        """The row's content address under this registry's models folder. Rows registered
        before addresses were stored hold an absolute path (under the home of that time): the
        copy in this models folder is read when it is there (the home moved), else the path
        as stored, so no file registered then is lost; a row without a sha256 (adopted from an
        older database) has no content address and keeps its path."""
        stored = Path(row.model_path)
        if not stored.is_absolute():
            return self.models_dir / stored
        if row.model_sha256:
            here = self.models_dir / _content_address(row.model_sha256, stored.suffix)
            if here.is_file():
                return here
        return stored

    def _verified_file(self, row: ModelVersion) -> Path:
        path = self._file_path(row)
        label = f"model version {row.id} ({row.domain}/{row.strategy} v{row.version})"
        if not path.is_file():
            raise ModelFileError(f"{label}: model file {path} is missing")
        if row.model_sha256 and _sha256(path) != row.model_sha256:
            raise ModelFileError(f"{label}: model file {path} is corrupted (sha256 mismatch)")
        return path
