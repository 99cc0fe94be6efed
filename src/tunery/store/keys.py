"""Projects and their API keys. Every object belongs to one project; a key opens one project.

Keys are 48 random base62 characters after `sk-tunery-`; only their SHA-256 is stored (a key has
~285 bits of entropy, so a slow password hash buys nothing) together with a short display prefix.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import ForeignKey, Integer, String, func, select
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


def project_for_key(session: Session, key: str) -> Project | None:
    if not key:
        return None
    return session.scalar(
        select(Project)
        .join(ApiKey, ApiKey.project_id == Project.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )


def count_keys(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) or 0
