"""The control plane's child processes: each in its own process group, logging to its own file.

Children get SIGKILL when the Python process dies (PR_SET_PDEATHSIG), and ``Process.kill`` takes
down the whole group, so a killed test run or preview leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (every component binds 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """preexec_fn: SIGKILL the child when this process dies (resolved before any fork)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)

    return preexec


_PREEXEC = _die_with_parent()


@dataclass
class Process:
    """One started component: its own process group, its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def kill(self, grace: float = 5.0) -> None:
        """SIGTERM the whole process group, SIGKILL it after `grace` seconds."""
        pgid = self.popen.pid  # start_new_session: the child leads its group
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(timeout=wait)
                # The leader is gone; make sure nothing else of its group lingers.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                break
            except subprocess.TimeoutExpired:
                continue


def spawn(name: str, args: list[str], *, logs: Path, cwd: Path, env: dict[str, str] | None = None) -> Process:
    """Start one component in a session of its own, its output appended to ``<logs>/<name>.log``."""
    log_path = logs / f"{name}.log"
    with open(log_path, "ab") as logf:
        popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_PREEXEC,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    return Process(name, popen, log_path)
