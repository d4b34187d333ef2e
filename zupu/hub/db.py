"""The hub's database: users and organisations, tokens, repos, and which LFS objects each repo owns.

SQLAlchemy over SQLite (WAL journal, so readers never wait for a writer) by default, or PostgreSQL
(`postgresql://user:password@host/db`) so several hub processes can share one database. The schema is
made and upgraded by the Alembic migrations in `migrations/` whenever the hub or the CLI connects.
Tokens are stored only as their sha256; the token itself is shown once, when it is created.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from zupu.errors import ZupuError

REPO_TYPES = ("model", "dataset", "space")
DELETED = "deleted"  # the type of a deleted repo's row, kept so that its id is never reused
SCOPES = ("read", "write")
SQLITE_TIMEOUT = 30  # seconds a connection waits for another's write lock


class HubError(ZupuError):
    """A hub request that cannot be served; `status` and `code` become the HTTP answer."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    """A user, or an organisation (`is_org`) whose members are users."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(96), unique=True)
    is_org: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class Membership(Base):
    __tablename__ = "memberships"
    org_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(8))
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Repo(Base):
    """A model, dataset or space; its git repo lives at `repos/<id>.git`, so a rename moves no files."""

    __tablename__ = "repos"
    __table_args__ = (UniqueConstraint("type", "namespace", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(8))
    namespace: Mapped[str] = mapped_column(String(96))
    name: Mapped[str] = mapped_column(String(96))
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    updated: Mapped[dt.datetime] = mapped_column(DateTime, default=now)

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"


class RepoObject(Base):
    """An LFS object that was uploaded to (or pushed into) this repo, so this repo may point at it."""

    __tablename__ = "repo_objects"
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"), primary_key=True)
    oid: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)  # LFS objects may exceed 2 GiB


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def connect(url: str) -> sessionmaker[Session]:
    """A session factory for `url` (`sqlite:///path`, `postgresql://...`), its schema migrated to the newest."""
    from alembic.util import CommandError

    engine = make_engine(url)
    try:
        migrate(engine)
    except CommandError as e:
        engine.dispose()
        raise ZupuError(f"cannot migrate the database {_shown(make_url(url))}: {e}; a newer zupu has probably "
                        "upgraded it, so upgrade this zupu too") from None
    except OperationalError as e:
        engine.dispose()
        hint = ("check that its folder exists and is writable" if engine.dialect.name == "sqlite" else
                "check that its server runs and that host, port, user, password and database name in --db are right")
        raise ZupuError(f"cannot use the database {_shown(make_url(url))}: "
                        f"{str(e.orig).strip().splitlines()[0]}; {hint}") from None
    return sessionmaker(engine, expire_on_commit=False)


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ZupuError(f"--db {url!r} is not a database URL; give sqlite:///PATH or "
                        "postgresql://USER:PASSWORD@HOST[:PORT]/DATABASE") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 (the hub extra), not SQLAlchemy's psycopg2
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": SQLITE_TIMEOUT})

            @event.listens_for(engine, "connect")
            def _pragmas(conn, _record):  # WAL: readers never wait for the one writer
                cur = conn.cursor()
                # Turning a new file to WAL needs a moment's exclusive lock, and SQLite answers "locked" at
                # once, without waiting out the busy timeout, while another connection holds it: hubs
                # starting together on a new database retry until the timeout.
                deadline = time.monotonic() + SQLITE_TIMEOUT
                while True:
                    try:
                        cur.execute("PRAGMA journal_mode=WAL")
                        break
                    except sqlite3.OperationalError as e:
                        if "locked" not in str(e) or time.monotonic() > deadline:
                            raise
                        time.sleep(0.01)
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()
            return engine
        # pre_ping: a pooled connection that a server restart killed is replaced, not handed to a request.
        # A pool as large as uvicorn's thread pool (40), so busy request threads do not queue for connections.
        return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=30,
                             connect_args={"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {})
    except (NoSuchModuleError, ImportError) as e:
        raise ZupuError(f"cannot use the database {_shown(parsed)}: {e}; this hub supports sqlite:/// and "
                        "postgresql:// (pip install 'zupu[hub]' installs the PostgreSQL driver)") from None


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


LOCK_SPACE = 7707  # the first key of the hub's two-key PostgreSQL advisory locks

# The first migration made what `create_all` used to make before the hub had migrations.
BEFORE_MIGRATIONS = "0001"


def alembic_config(connection: Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "zupu.hub:migrations")
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest migration, in one transaction that one process at a time runs.

    A database made before the hub had migrations (tables, no `alembic_version`) is stamped as the first
    migration, then upgraded like any other.
    """
    from alembic import command

    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # pysqlite would run the DDL outside any transaction
        elif conn.dialect.name == "postgresql":
            # Hubs starting together migrate in turn; the lock ends with the transaction.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_SPACE})
        cfg = alembic_config(conn)
        tables = set(inspect(conn).get_table_names())
        if "alembic_version" not in tables and "repos" in tables:
            command.stamp(cfg, BEFORE_MIGRATIONS)
        command.upgrade(cfg, "head")
        conn.commit()


def default_url(data: str | Path) -> str:
    """SQLite in the data folder (created if needed)."""
    Path(data).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(data).resolve() / 'hub.sqlite'}"


def engine_of(factory: sessionmaker[Session]) -> Engine:
    return factory.kw["bind"]


@contextmanager
def advisory_lock(factory: sessionmaker[Session], key: int) -> Iterator[None]:
    """On PostgreSQL, hold advisory lock `key` for the block, so hub processes sharing the database take
    turns; SQLite serves one hub process, whose own thread locks suffice, so there it takes nothing."""
    engine = engine_of(factory)
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:  # leaving the block ends the transaction, which releases the lock
        conn.execute(text("SELECT pg_advisory_xact_lock(:space, :key)"), {"space": LOCK_SPACE, "key": key})
        yield


# --- users and tokens (used by the CLI and the server) ----------------------------------------------
def get_or_create_user(s: Session, name: str, is_org: bool = False) -> User:
    check_name(name, "user")
    user = s.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, is_org=is_org)
        s.add(user)
        s.flush()
    return user


def create_token(s: Session, user: str, scope: str = "write", name: str | None = None) -> tuple[Token, str]:
    if scope not in SCOPES:
        raise ZupuError(f"token scope {scope!r} is not one of {', '.join(SCOPES)}")
    u = get_or_create_user(s, user)
    if u.is_org:
        raise ZupuError(f"{user} is an organisation; tokens belong to users")
    name = name or f"{user}-{scope}"
    if len(name) > 128:
        raise ZupuError(f"token name {name[:20]!r}... is {len(name)} characters; at most 128")
    secret = "zupu_" + secrets.token_urlsafe(30)
    tok = Token(user_id=u.id, name=name, digest=token_digest(secret), scope=scope)
    s.add(tok)
    s.flush()
    return tok, secret


def check_name(name: str, what: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name or "") or ".." in name or name.endswith(".git"):
        raise HubError(400, f"{what} name {name!r} must be 1-96 letters, digits, '.', '_' or '-', "
                            "start with a letter or digit, hold no '..' and not end in .git")
    return name
