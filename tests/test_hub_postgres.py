"""The hub on PostgreSQL: the real `huggingface_hub` client, the CLI's --db, migrations and concurrent committers.

The server is Debian's `postgresql`, which .ci/hub-services.sh installs and starts (cluster "zupu" on
127.0.0.1:5433), writing its URL to build/pg-url; ZUPU_TEST_PG_URL overrides that. This module works in
a fresh database, dropped at the end. Without a server the tests skip, saying why, except under CI=true,
where they fail: CI never skips them silently.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from hub_live import LiveHub, at_once
from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from zupu.cli import main
from zupu.hub import db

PG_URL_FILE = Path(__file__).resolve().parents[1] / "build" / "pg-url"


def _unavailable(why: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def new_database():
    """Makes fresh, empty databases on the test server (returning their URLs); drops them at the end."""
    server = os.environ.get("ZUPU_TEST_PG_URL") or (PG_URL_FILE.read_text().strip() if PG_URL_FILE.exists() else "")
    if not server:
        _unavailable(f"no PostgreSQL: run .ci/hub-services.sh (it writes {PG_URL_FILE}) or set ZUPU_TEST_PG_URL")
    admin_url = make_url(server).set(drivername="postgresql+psycopg")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - any failure to reach the server means: no PostgreSQL here
        admin.dispose()
        _unavailable(f"PostgreSQL at {admin_url.render_as_string(hide_password=True)} is unusable: "
                     f"{str(e).splitlines()[0]}")
    made: list[str] = []

    def make() -> str:
        made.append(f"zupu_test_{os.getpid()}_{secrets.token_hex(3)}")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{made[-1]}"'))
        # As a user would write it: postgresql://, no driver named.
        return admin_url.set(database=made[-1]).render_as_string(hide_password=False).replace("+psycopg", "", 1)

    yield make
    with admin.connect() as conn:
        for name in made:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def pg_url(new_database):
    return new_database()


@pytest.fixture(scope="module")
def hubs(pg_url, tmp_path_factory):
    """Two hubs on one PostgreSQL database and one data folder, as two processes of a scaled-out hub would be."""
    data = tmp_path_factory.mktemp("hub")
    a, b = LiveHub(data, db_url=pg_url), LiveHub(data, db_url=pg_url)
    yield a, b
    for live in (a, b):
        live.stop()
        db.engine_of(live.hub.sessions).dispose()


@pytest.fixture(autouse=True)
def _no_xet(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def test_schema_is_the_migrated_models(hubs):
    engine = db.engine_of(hubs[0].hub.sessions)
    assert engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), db.Base.metadata) == []
        size = next(c for c in inspect(conn).get_columns("repo_objects") if c["name"] == "size")
        assert str(size["type"]) == "BIGINT"
    with hubs[0].hub.sessions() as s, s.begin():
        user = db.get_or_create_user(s, "sizes")
        repo = db.Repo(type="model", namespace=user.name, name="big")
        s.add(repo)
        s.flush()
        s.add(db.RepoObject(repo_id=repo.id, oid="ab" * 32, size=50 << 30))  # a 50 GiB object fits
    with hubs[1].hub.sessions() as s:
        assert s.get(db.RepoObject, (repo.id, "ab" * 32)).size == 50 << 30


def test_hubs_starting_together_migrate_in_turn(new_database):
    url = new_database()

    def migrate() -> str:
        factory = db.connect(url)
        with db.engine_of(factory).connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        db.engine_of(factory).dispose()
        return version

    assert at_once(migrate) == [ScriptDirectory.from_config(db.alembic_config()).get_current_head()] * 4


def test_huggingface_hub_client_on_postgresql(hubs, tmp_path):
    live = hubs[0]
    alice = HfApi(endpoint=live.url, token=live.token("alice"))
    alice.create_repo("alice/pg")
    with pytest.raises(HfHubHTTPError) as e:
        alice.create_repo("alice/pg")  # the unique constraint, as PostgreSQL reports it
    assert e.value.response.status_code == 409
    alice.upload_file(path_or_fileobj=b'{"hidden_size": 8}', path_in_repo="config.json", repo_id="alice/pg")
    big = os.urandom(1 << 20) * 11  # 11 MiB: LFS by size
    alice.upload_file(path_or_fileobj=big, path_in_repo="weights.bin", repo_id="alice/pg")
    c1 = alice.create_commit("alice/pg", [CommitOperationAdd("a.txt", b"a"), CommitOperationAdd("b.txt", b"b")],
                             commit_message="two")
    assert sorted(alice.list_repo_files("alice/pg")) == [".gitattributes", "a.txt", "b.txt", "config.json",
                                                         "weights.bin"]
    got = hf_hub_download("alice/pg", "weights.bin", endpoint=hubs[1].url, token=alice.token, cache_dir=tmp_path)
    assert Path(got).read_bytes() == big  # uploaded through one hub, downloaded through the other
    alice.create_commit("alice/pg", [CommitOperationAdd("c.txt", b"c")], commit_message="c", parent_commit=c1.oid)
    with pytest.raises(HfHubHTTPError) as e:
        alice.create_commit("alice/pg", [CommitOperationAdd("d.txt", b"d")], commit_message="stale",
                            parent_commit=c1.oid)
    assert e.value.response.status_code == 412

    alice.create_repo("alice/pg-secret", private=True)
    alice.upload_file(path_or_fileobj=b"s", path_in_repo="s.txt", repo_id="alice/pg-secret")
    reader = HfApi(endpoint=live.url, token=live.token("alice", "read"))
    bob = HfApi(endpoint=hubs[1].url, token=hubs[1].token("bob"))
    assert reader.model_info("alice/pg-secret").private
    with pytest.raises(HfHubHTTPError) as e:
        reader.upload_file(path_or_fileobj=b"no", path_in_repo="no.txt", repo_id="alice/pg-secret")
    assert e.value.response.status_code == 403
    with pytest.raises(RepositoryNotFoundError):
        bob.model_info("alice/pg-secret")
    assert [m.id for m in bob.list_models(author="alice")] == ["alice/pg"]


def test_token_and_org_commands_with_db(hubs, pg_url, tmp_path, capsys):
    # The CLI's --data is a folder the hubs never see: the token can only reach them through PostgreSQL.
    cli = ["--data", str(tmp_path / "elsewhere"), "--db", pg_url]
    assert main(["hub", "token", "create", *cli, "--user", "carol"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["hub", "org", "pg-lab", *cli, "--member", "carol"]) == 0
    capsys.readouterr()
    carol = HfApi(endpoint=hubs[0].url, token=token)
    assert carol.whoami()["name"] == "carol"
    carol.create_repo("pg-lab/shared")
    assert main(["hub", "token", "list", *cli, "--user", "carol"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 1 and "carol" in rows[0] and "active" in rows[0]
    assert main(["hub", "token", "revoke", *cli, "--id", rows[0].split()[0]]) == 0
    with pytest.raises(HfHubHTTPError) as e:
        HfApi(endpoint=hubs[1].url, token=token).whoami()
    assert e.value.response.status_code == 401


def test_concurrent_committers_through_two_hubs(hubs):
    """Commits through two hubs at once, which share no thread lock: each lands on top of the others, or,
    when all pinned the same parent, exactly one lands and the others get 412."""
    apis = [HfApi(endpoint=live.url, token=live.token("dave")) for live in hubs]
    apis[0].create_repo("dave/race")
    shared = os.urandom(100_000)  # every committer uploads this LFS object too
    n = 6

    def run(parent: str | None) -> list[int]:
        status: list[int] = [0] * n
        start = threading.Barrier(n)

        def commit(i: int) -> None:
            ops = [CommitOperationAdd(f"f{i}.txt", f"{i} on {parent}".encode()),
                   CommitOperationAdd("w.safetensors", shared)]
            start.wait()
            try:
                apis[i % 2].create_commit("dave/race", ops, commit_message=f"c{i}", parent_commit=parent)
                status[i] = 200
            except HfHubHTTPError as e:
                status[i] = e.response.status_code

        threads = [threading.Thread(target=commit, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        return status

    assert run(None) == [200] * n
    files = apis[1].list_repo_files("dave/race")
    assert {f"f{i}.txt" for i in range(n)} <= set(files)
    commits = apis[0].list_repo_commits("dave/race")
    assert sorted(c.title for c in commits[:n]) == [f"c{i}" for i in range(n)]
    head = commits[0].commit_id
    assert sorted(run(head)) == [200] + [412] * (n - 1)
