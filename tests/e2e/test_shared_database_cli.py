"""The command line against a shared PostgreSQL database, as an operator runs it:
`imagegate db upgrade`, and `imagegate serve` refusing what it must refuse before it
listens."""

from pathlib import Path

import asyncpg
import pytest

from imagegate.storage.postgres.schema import LATEST
from tests.e2e.processes import clean_env, free_port, run
from tests.services.postgres import Postgres, shared_postgres

KEYS = {"IMAGEGATE_LINK_KEY": "l" * 40, "IMAGEGATE_REQUEST_STATE_KEY": "r" * 40}


@pytest.fixture
def server() -> Postgres:
    return shared_postgres()


def env(server: Postgres, database: str, tmp_path: Path, **more: str) -> dict[str, str]:
    settings = {
        "IMAGEGATE_STATE_DIR": str(tmp_path / "state"),
        "IMAGEGATE_DATABASE_URL": server.url(database),
        "IMAGEGATE_DATABASE_PASSWORD": server.password,
        **KEYS,
    }
    return clean_env(**{**settings, **more})


def test_db_upgrade_makes_then_keeps_the_schema(server: Postgres, tmp_path: Path) -> None:
    database = server.create_database_now()
    where = f"postgresql://127.0.0.1:{server.port}/{database}"
    first = run("db", "upgrade", env=env(server, database, tmp_path))
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"{where}: schema 0 -> {LATEST}\n"
    again = run("db", "upgrade", env=env(server, database, tmp_path))
    assert again.stdout == f"{where}: schema {LATEST}, up to date\n"
    assert server.password not in first.stdout + first.stderr + again.stdout


async def test_serve_refuses_a_newer_schema_before_it_listens(
    server: Postgres, tmp_path: Path
) -> None:
    database = server.create_database_now()
    assert run("db", "upgrade", env=env(server, database, tmp_path)).returncode == 0
    connection = await asyncpg.connect(server.url(database), password=server.password)
    await connection.execute("UPDATE imagegate_schema SET version = 99, readable_from = 99")
    await connection.close()
    refused = run("serve", env=env(server, database, tmp_path, IMAGEGATE_PORT=str(free_port())))
    assert refused.returncode == 2
    assert "schema version 99, which imagegate versions before schema 99 can't use" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr
    older_upgrade = run("db", "upgrade", env=env(server, database, tmp_path))
    assert older_upgrade.stdout.endswith(
        f": schema 99, newer than this imagegate knows ({LATEST}); unchanged\n"
    )


def test_serve_says_why_it_cannot_reach_the_database(server: Postgres, tmp_path: Path) -> None:
    database = server.create_database_now()
    wrong = env(server, database, tmp_path, IMAGEGATE_DATABASE_PASSWORD="wrong-password")
    refused = run("serve", env=wrong)
    assert refused.returncode == 1
    assert "imagegate: error: the database failed: 28P01 InvalidPasswordError" in refused.stderr
    assert "wrong-password" not in refused.stderr
    assert "Traceback" not in refused.stderr


def test_serve_refuses_keys_of_its_own_with_a_shared_database(
    server: Postgres, tmp_path: Path
) -> None:
    database = server.create_database_now()
    settings = env(server, database, tmp_path)
    del settings["IMAGEGATE_LINK_KEY"]
    refused = run("serve", env=settings)
    assert refused.returncode == 2
    assert "with database_url set, link_key must be configured" in refused.stderr
