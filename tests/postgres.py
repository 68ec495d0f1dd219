"""A private PostgreSQL server for the tests (and bench/team.py): Debian's own binaries,
initdb in a temporary folder with the socket and data there, a free 127.0.0.1 port; never the
system's cluster. initdb and pg_ctl refuse to run as root, so as root they run as `postgres`.

One server per test session (`postgres` fixture); each test gets a fresh database. The
suite's second engine pass (`OUTREACH_TEST_STORE=postgresql`) points every campaign at one.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian keeps them versioned)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A running private cluster; `url(db)` names one of its databases over the socket."""

    def __init__(self, root: Path, bindir: Path) -> None:
        self.root, self.bin = root, bindir
        self.data, self.port = root / "data", _free_port()
        self.as_root = os.getuid() == 0
        self.user = "postgres" if self.as_root else os.environ.get("USER", "postgres")
        self._names = itertools.count(1)
        self._template = ""

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.root)

    def start(self) -> PostgresServer:
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync",
                  "-E", "UTF8", "--locale=C")
        # Durability is not what the tests test: fsync off keeps CREATE DATABASE quick.
        options = (f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "server.log"), "-w", "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{database}?host={self.root}&port={self.port}"

    def create_database(self, *, empty: bool = False) -> str:
        """A fresh database, migrated (a copy of a template migrated once) unless `empty`;
        its URL. Each copy gets its own unsubscribe key, as a real database would."""
        import psycopg

        from outreach.store import Store

        if not empty and not self._template:
            template = self.create_database(empty=True)
            Store(template).close()
            self._template = database_name(template)
        name = f"t{os.getpid()}_{next(self._names)}"
        template = "template0" if empty else self._template
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
        if not empty:
            with psycopg.connect(self.url(name), autocommit=True) as conn:
                conn.execute("UPDATE secrets SET value = replace(gen_random_uuid()::text || "
                             "gen_random_uuid()::text, '-', '') WHERE name = 'unsubscribe'")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database_name(url)} WITH (FORCE)")


def database_name(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path.lstrip("/")


def start_server() -> PostgresServer:
    bindir = bin_dir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    # In memory when the machine has it: CREATE DATABASE copies a few MB per test.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="outreach-pg-", dir=shm))
    return PostgresServer(root, bindir).start()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if bin_dir() is None and not os.environ.get("CI"):
        pytest.skip("PostgreSQL is not installed (`.ci/run` installs it)")
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh migrated database on the session's server, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


def round_trip_counter(wait: Callable[..., Any]) -> tuple[list[int], Callable[..., Any]]:
    """psycopg's `waiting.wait`, counting the round trips to the server: the waits in which
    the socket turned readable, the answer to a statement or a pipeline's sync or flush (what
    was pipelined before rides along). For tests and bench/team.py; [count] and the wrapped
    wait."""
    from psycopg.waiting import Ready

    count = [0]

    def counted(gen: Any, *args: Any, **kwargs: Any) -> Any:
        def watched() -> Any:
            reads = False   # whether the answer was read, whichever wait found it readable
            try:
                state = next(gen)
                while True:
                    ready = yield state
                    reads = reads or bool(int(ready or 0) & Ready.R)
                    state = gen.send(ready)
            except StopIteration as done:
                return done.value
            finally:
                count[0] += reads
        return wait(watched(), *args, **kwargs)

    return count, counted


def main(argv: list[str]) -> None:
    """`python -m tests.postgres start` prints a new database's URL and the server's folder;
    `python -m tests.postgres stop FOLDER` stops that server (examples/team.sh uses both)."""
    if argv[:1] == ["start"]:
        server = start_server()
        print(server.create_database(empty=True), server.root)
    elif len(argv) == 2 and argv[0] == "stop":
        root = Path(argv[1])
        PostgresServer(root, bin_dir() or Path("/usr/bin")).stop()
    else:
        raise SystemExit("usage: python -m tests.postgres start | stop FOLDER")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
