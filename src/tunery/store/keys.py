"""Projects and their API keys. Every object belongs to one project; a key opens one project.

Keys are 48 random base62 characters after `sk-tunery-`; only their SHA-256 is stored (a key has
~285 bits of entropy, so a slow password hash buys nothing) together with a short display hint
(`sk-tunery-abcd…wxyz`, the one form listings show).

Checking a key leaks no timing about it: the key itself is never compared. The row is found by the
SHA-256 of what the client sent, so the index lookup's timing depends only on a hash, which an
attacker cannot steer byte by byte toward a stored one (a `compare_digest` of the two hashes after
that equality lookup could never fail, so there is none). A revoked key is refused by the next request:
nothing caches keys. When a key was last used is kept in its own table (older databases gain it
without a migration), written at most once a minute per key by each process.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

from sqlalchemy import ForeignKey, Integer, String, func, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from tunery.store.db import Base, now
from tunery.store.ids import new_id

KEY_PREFIX = "sk-tunery-"
DEFAULT_PROJECT = "default"


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    display: Mapped[str] = mapped_column(String(32))  # "sk-tunery-abcd…wxyz", for listings and logs
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    revoked_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ApiKeyUse(Base):
    __tablename__ = "api_key_uses"

    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    last_used_at: Mapped[int] = mapped_column(Integer)


USE_RESOLUTION = 60  # seconds: "last used" is this precise, and costs one write per key per minute
_last_written: dict[str, float] = {}
_written_lock = threading.Lock()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def get_or_create_project(session: Session, name: str = DEFAULT_PROJECT) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(id=new_id("proj_"), name=name, created_at=now())
        session.add(project)
        session.flush()
    return project


def create_key(session: Session, project_name: str = DEFAULT_PROJECT) -> str:
    """Make a key for `project_name` (created if new); return the key (shown once, never stored)."""
    project = get_or_create_project(session, project_name)
    key = new_id(KEY_PREFIX, 48)
    session.add(
        ApiKey(
            id=new_id("key_"),
            project_id=project.id,
            key_hash=hash_key(key),
            display=f"{key[:14]}…{key[-4:]}",
            created_at=now(),
        )
    )
    session.flush()
    return key


def check_key(session: Session, key: str) -> tuple[str, Project] | None:
    """(key id, project) of an active key, or None (unknown or revoked)."""
    if not key:
        return None
    row = session.execute(
        select(ApiKey.id, Project)
        .join(Project, ApiKey.project_id == Project.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return row.id, row.Project


def project_for_key(session: Session, key: str) -> Project | None:
    found = check_key(session, key)
    return found[1] if found else None


def note_use(db, key_id: str) -> None:
    """Record that `key_id` was used (at most once a minute per key and process). Best effort, in
    its own transaction: a lost race with another process costs only this mark, never the request."""
    from sqlalchemy.exc import SQLAlchemyError

    mono = time.monotonic()
    with _written_lock:
        if mono - _last_written.get(key_id, -USE_RESOLUTION) < USE_RESOLUTION:
            return
        _last_written[key_id] = mono
    try:
        with db.session_scope() as session:
            use = session.get(ApiKeyUse, key_id)
            if use is None:
                session.add(ApiKeyUse(key_id=key_id, last_used_at=now()))
            else:
                use.last_used_at = now()
    except SQLAlchemyError:
        with _written_lock:
            _last_written.pop(key_id, None)  # try again on the next request


def count_keys(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) or 0


@dataclass(frozen=True)
class KeyInfo:
    """A key as `tunery keys list` shows it: never the key itself."""

    id: str
    display: str
    project: str
    created_at: int
    last_used_at: int | None
    revoked_at: int | None


def list_keys(session: Session, project_name: str | None = None) -> list[KeyInfo]:
    stmt = (
        select(ApiKey, Project.name, ApiKeyUse.last_used_at)
        .join(Project, ApiKey.project_id == Project.id)
        .outerjoin(ApiKeyUse, ApiKeyUse.key_id == ApiKey.id)
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    if project_name is not None:
        stmt = stmt.where(Project.name == project_name)
    return [KeyInfo(k.id, k.display, name, k.created_at, used, k.revoked_at) for k, name, used in session.execute(stmt)]


class KeyLookupError(LookupError):
    """No key, or several keys, match what `revoke` was given (the message says which)."""


def find_key(session: Session, ref: str) -> ApiKey:
    """The one key that `ref` names: its id, the whole key, its display hint, or a prefix of its id
    or of its hint (at least 4 characters after `sk-tunery-` / `key_`)."""
    ref = ref.strip()
    exact = session.scalars(
        select(ApiKey).where(or_(ApiKey.id == ref, ApiKey.key_hash == hash_key(ref), ApiKey.display == ref))
    ).all()
    if len(exact) == 1:
        return exact[0]
    head = ref.split("…", 1)[0]
    if len(head.removeprefix(KEY_PREFIX).removeprefix("key_")) < 4:
        raise KeyLookupError(f"no key matches {ref!r}: give a key id (key_…) or at least 4 characters after the prefix")
    matches = session.scalars(
        select(ApiKey).where(or_(ApiKey.id.startswith(head, autoescape=True), ApiKey.display.startswith(head, autoescape=True)))
    ).all()
    if not matches:
        raise KeyLookupError(f"no key matches {ref!r}")
    if len(matches) > 1:
        raise KeyLookupError(f"{ref!r} matches {len(matches)} keys ({', '.join(k.id for k in matches)}): give its id")
    return matches[0]


def revoke_key(session: Session, ref: str) -> tuple[ApiKey, bool]:
    """Revoke the key `ref` names; returns (key, whether it was active until now)."""
    key = find_key(session, ref)
    was_active = key.revoked_at is None
    if was_active:
        key.revoked_at = now()
        session.flush()
    return key, was_active
