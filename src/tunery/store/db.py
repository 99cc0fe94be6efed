"""The metadata database: one SQLAlchemy 2 engine from a URL, a `Base` for every table.

SQLite (the default, a file under TUNERY_HOME) runs in WAL mode with a busy timeout so the API,
the worker threads and `tunery worker` processes can share it; any PostgreSQL URL works unchanged
because the tables use only portable types and no dialect-specific SQL. Timestamps are integer
Unix seconds, as in OpenAI's objects.

Table modules define their classes on `Base`; `Database.create_all()` imports every one of them
and creates what is missing, indexes of existing tables included.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


class Base(DeclarativeBase):
    pass


def now() -> int:
    return int(time.time())


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # Sessions cross threads (threadpool routes, worker threads); each has its own connection.
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


class Database:
    """An engine and its session factory. Use `session_scope()` for a unit of work."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        # The table modules import this one, hence here rather than at the top.
        from tunery.store import evals, files, jobs, keys, uploads  # noqa: F401

        Base.metadata.create_all(self.engine)
        # create_all makes the indexes of the tables it creates only: add indexes declared since an
        # existing database was made (`checkfirst` skips those it has).
        for table in Base.metadata.sorted_tables:
            for index in table.indexes:
                index.create(self.engine, checkfirst=True)

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any exception."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def keyset_page(session: Session, stmt, columns, after_row, limit: int, descending: bool):
    """One page of `stmt` ordered by `columns`, strictly after `after_row` (the cursor object).

    Returns `(rows, has_more)`. Keyset paging (not OFFSET) so that objects created while a client
    pages never shift or repeat; the comparison is written out as ORs so every dialect runs it.
    `after_row=None` starts at the beginning. Fetches `limit + 1` rows to learn `has_more`.
    """
    from sqlalchemy import and_, or_

    if after_row is not None:
        values = [getattr(after_row, c.key) for c in columns]
        clauses = []
        for i, col in enumerate(columns):
            cmp = col < values[i] if descending else col > values[i]
            clauses.append(and_(*[columns[j] == values[j] for j in range(i)], cmp))
        stmt = stmt.where(or_(*clauses))
    stmt = stmt.order_by(*[c.desc() if descending else c.asc() for c in columns]).limit(limit + 1)
    rows = list(session.scalars(stmt))
    return rows[:limit], len(rows) > limit
