"""The hub's database: users and organisations, tokens, repos, and which LFS objects each repo owns.

SQLAlchemy over SQLite (WAL journal, so readers never wait for a writer) by default. Tokens are
stored only as their sha256; the token itself is shown once, when it is created.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from pathlib import Path

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, UniqueConstraint, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from zupu.errors import ZupuError

REPO_TYPES = ("model", "dataset", "space")
SCOPES = ("read", "write")


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
    name: Mapped[str] = mapped_column(String(96))
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
    size: Mapped[int] = mapped_column(Integer)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def connect(url: str) -> sessionmaker[Session]:
    """A session factory for `url` (`sqlite:///path` or any SQLAlchemy URL); creates the tables."""
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30} if url.startswith("sqlite")
                           else {})
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # WAL: readers never wait for the one writer
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    Base.metadata.create_all(engine)
    return sessionmaker(engine, expire_on_commit=False)


def default_url(data: str | Path) -> str:
    """SQLite in the data folder (created if needed)."""
    Path(data).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(data).resolve() / 'hub.sqlite'}"


def engine_of(factory: sessionmaker[Session]) -> Engine:
    return factory.kw["bind"]


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
    secret = "zupu_" + secrets.token_urlsafe(30)
    tok = Token(user_id=u.id, name=name or f"{user}-{scope}", digest=token_digest(secret), scope=scope)
    s.add(tok)
    s.flush()
    return tok, secret


def check_name(name: str, what: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name or "") or ".." in name or name.endswith(".git"):
        raise HubError(400, f"{what} name {name!r} must be 1-96 letters, digits, '.', '_' or '-', "
                            "start with a letter or digit, hold no '..' and not end in .git")
    return name
