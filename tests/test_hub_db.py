"""The hub's database layer on SQLite: Alembic migrations against the models, databases made before
migrations existed, and the errors a bad --db gets. tests/test_hub_postgres.py does the same on PostgreSQL."""

from __future__ import annotations

import sqlite3

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from hub_live import at_once
from sqlalchemy import create_engine, text

from zupu.cli import main
from zupu.errors import ZupuError
from zupu.hub import db

# What `Base.metadata.create_all` made on SQLite before the hub had migrations (tables only, no alembic_version).
BEFORE_MIGRATIONS = """
CREATE TABLE users (id INTEGER NOT NULL, name VARCHAR(96) NOT NULL, is_org BOOLEAN NOT NULL,
  created DATETIME NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE repos (id INTEGER NOT NULL, type VARCHAR(8) NOT NULL, namespace VARCHAR(96) NOT NULL,
  name VARCHAR(96) NOT NULL, private BOOLEAN NOT NULL, created DATETIME NOT NULL, updated DATETIME NOT NULL,
  PRIMARY KEY (id), UNIQUE (type, namespace, name));
CREATE TABLE memberships (org_id INTEGER NOT NULL, user_id INTEGER NOT NULL, PRIMARY KEY (org_id, user_id),
  FOREIGN KEY(org_id) REFERENCES users (id), FOREIGN KEY(user_id) REFERENCES users (id));
CREATE TABLE tokens (id INTEGER NOT NULL, user_id INTEGER NOT NULL, name VARCHAR(96) NOT NULL,
  digest VARCHAR(64) NOT NULL, scope VARCHAR(8) NOT NULL, created DATETIME NOT NULL, revoked BOOLEAN NOT NULL,
  PRIMARY KEY (id), FOREIGN KEY(user_id) REFERENCES users (id), UNIQUE (digest));
CREATE TABLE repo_objects (repo_id INTEGER NOT NULL, oid VARCHAR(64) NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY (repo_id, oid), FOREIGN KEY(repo_id) REFERENCES repos (id) ON DELETE CASCADE);
"""


def schema_diff(factory) -> list:
    """What autogenerate would put in a new migration: [] when the database matches the models."""
    with db.engine_of(factory).connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), db.Base.metadata)


def version(factory) -> str:
    with db.engine_of(factory).connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()


def test_migrations_match_the_models(tmp_path):
    # A model change in db.py without a migration fails here.
    head = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
    factory = db.connect(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    assert version(factory) == head and schema_diff(factory) == []
    assert version(db.connect(f"sqlite:///{tmp_path / 'hub.sqlite'}")) == head  # connecting again is a no-op
    # ... and the comparison does see a difference: the first revision predates 64-bit LFS sizes.
    old = create_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    with old.begin() as conn:
        command.upgrade(db.alembic_config(conn), db.BEFORE_MIGRATIONS)
    with old.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.Base.metadata)
    assert {(d[0][0], d[0][2], d[0][3]) for d in diff} == {("modify_type", "repo_objects", "size"),
                                                           ("modify_type", "tokens", "name")}


def test_database_from_before_migrations_is_stamped_and_upgraded(tmp_path):
    path = tmp_path / "hub.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(BEFORE_MIGRATIONS)
        digest = db.token_digest("zupu_old-token")
        conn.executescript(f"""
            INSERT INTO users VALUES (1, 'alice', 0, '2026-01-02 03:04:05.000000');
            INSERT INTO tokens VALUES (1, 1, 'alice-write', '{digest}', 'write', '2026-01-02 03:04:05.000000', 0);
            INSERT INTO repos VALUES (1, 'model', 'alice', 'm', 0, '2026-01-02 03:04:05.000000',
                                      '2026-01-02 03:04:05.000000');
            INSERT INTO repo_objects VALUES (1, '{"ab" * 32}', 1234);
        """)
    factory = db.connect(f"sqlite:///{path}")
    head = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
    assert version(factory) == head and schema_diff(factory) == []
    with factory() as s, s.begin():
        tok = s.scalar(db.select(db.Token).where(db.Token.digest == digest))
        assert (tok.name, tok.scope, tok.revoked, tok.created.year) == ("alice-write", "write", False, 2026)
        assert s.get(db.RepoObject, (1, "ab" * 32)).size == 1234
        s.add(db.RepoObject(repo_id=1, oid="cd" * 32, size=5 << 30))  # a 5 GiB object
        _, secret = db.create_token(s, "a" * 96)  # its default name, "aaa...-write", is 102 characters
    with factory() as s:
        assert s.get(db.RepoObject, (1, "cd" * 32)).size == 5 << 30
        assert s.scalar(db.select(db.Token).where(db.Token.digest == db.token_digest(secret))).name.endswith("-write")


def test_database_from_a_newer_zupu_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    with db.engine_of(db.connect(url)).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(ZupuError, match="'9999'.*upgrade this zupu too"):
        db.connect(url)


@pytest.mark.parametrize("url, names, todo", [
    ("not a url", "'not a url' is not a database URL", "give sqlite:///PATH or postgresql://"),
    ("postgresql://zupu:s3cret-pw@127.0.0.1:1/hub", "postgresql://zupu:***@127.0.0.1:1/hub",
     "check that its server runs"),
    ("mysql://u:s3cret-pw@localhost/hub", "mysql://u:***@localhost/hub", "this hub supports sqlite:/// and postgresql"),
])
def test_bad_db_url_is_named_with_its_password_hidden(tmp_path, capsys, url, names, todo):
    assert main(["hub", "token", "list", "--data", str(tmp_path), "--db", url]) == 2
    err = capsys.readouterr().err
    assert names in err and todo in err and "s3cret-pw" not in err


def test_hubs_starting_together_migrate_in_turn(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"

    def migrate() -> str:
        return version(db.connect(url))

    assert at_once(migrate) == [ScriptDirectory.from_config(db.alembic_config()).get_current_head()] * 4
