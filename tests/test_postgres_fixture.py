"""The test-started PostgreSQL server and the `results_db_url` fixture: both backends connect, each test gets its
own database, and the server never runs as root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.support.postgres import PostgresServer


def test_results_db_url_connects(results_db_url: str) -> None:
    engine = create_engine(results_db_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("select 1")).scalar_one() == 1
            conn.execute(text("create table probe (id integer primary key)"))
            conn.execute(text("insert into probe (id) values (7)"))
            assert conn.execute(text("select id from probe")).scalar_one() == 7
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_server_is_postgres_15(postgres_server: PostgresServer) -> None:
    engine = create_engine(postgres_server.url("postgres"))
    try:
        with engine.connect() as conn:
            assert "PostgreSQL 15" in conn.execute(text("select version()")).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_server_listens_on_loopback_only_and_not_as_root(postgres_server: PostgresServer) -> None:
    assert postgres_server.pid is not None
    status = Path(f"/proc/{postgres_server.pid}/status").read_text()
    assert "\nName:\tpostgres" in "\n" + status
    real_uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert real_uid != 0
    if os.geteuid() != 0:
        assert real_uid == os.geteuid()
    engine = create_engine(postgres_server.url("postgres"))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("show listen_addresses")).scalar_one() == "127.0.0.1"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_each_database_is_separate(postgres_server: PostgresServer) -> None:
    first = create_engine(postgres_server.create_database("t_separate_a"))
    second = create_engine(postgres_server.create_database("t_separate_b"))
    try:
        with first.begin() as conn:
            conn.execute(text("create table only_in_a (id integer)"))
        assert inspect(first).has_table("only_in_a")
        assert not inspect(second).has_table("only_in_a")
    finally:
        first.dispose()
        second.dispose()


@pytest.mark.postgres
def test_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    import sqlalchemy.exc

    url = postgres_server.url("postgres").replace(postgres_server.password, "not-the-password")
    engine = create_engine(url)
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError, match="password authentication failed"):
            engine.connect()
    finally:
        engine.dispose()
