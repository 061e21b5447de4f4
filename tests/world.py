"""A world of its own for a test that needs the machine's daemons and login records. Not a
test file.

The talk daemon answers on the fixed UDP port 518, sshd wants a port, and ``login -f`` writes
the machine's login records: two runs of the suite on one machine (two checkouts, CI beside a
developer) would meet there, and a talkd the machine runs would answer the tests instead of
theirs. So each such test runs in a World: a mount and network namespace (as root) with its own
loopback, an empty ``/run`` (its own ``/run/utmp``, as a boot leaves it) and ``/var/log`` (its
own wtmp and lastlog), where it starts inetd, talkd, sshd and its logins. Nothing in it is seen
outside, and nothing outlives it: ``close()`` ends every process in its network namespace, by
pid, and its holder does the same if the suite dies first (its standard input closes).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from terminal import DEADLINE

CLONE_NEWNET = 0x40000000

#: Run by ``unshare`` in the new namespaces: loopback up (SIOCGIFFLAGS, SIOCSIFFLAGS), fresh
#: /run and /var/log, the login records file as systemd-tmpfiles makes it (root:utmp 0664) and
#: sshd's privilege separation directory; then "ready", and wait until the suite lets go. Then
#: end every process in this network namespace.
_HOLDER = r"""
import fcntl, grp, os, signal, socket, struct, subprocess, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    request = struct.pack("16sH22x", b"lo", 0)
    flags = struct.unpack_from("16sH", fcntl.ioctl(s, 0x8913, request))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))
for where in ("/run", "/var/log"):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "talk-world", where], check=True)
os.close(os.open("/run/utmp", os.O_WRONLY | os.O_CREAT, 0o664))
os.chmod("/run/utmp", 0o664)
try:
    os.chown("/run/utmp", 0, grp.getgrnam("utmp").gr_gid)
except KeyError:
    pass
os.mkdir("/run/sshd", 0o755)
print("ready", flush=True)
sys.stdin.read()
here = os.readlink("/proc/self/ns/net")
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        try:
            if os.readlink(f"/proc/{pid}/ns/net") == here:
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
"""


class World:
    """Namespaces of a test's own (see the module's docstring). ``enter(cwd)`` is the command
    prefix that runs a program inside; ``path(p)`` is where the suite finds the world's
    ``p``; ``socket()`` makes a socket on the world's network."""

    def __init__(self) -> None:
        missing = [tool for tool in ("unshare", "nsenter", "mount") if not shutil.which(tool)]
        if missing:
            pytest.skip(f"{' and '.join(missing)} missing (Debian: util-linux, mount)")
        unshare = ["unshare", "--mount", "--net", "--propagation", "private", "--"]
        self.holder = subprocess.Popen(
            [*unshare, sys.executable, "-c", _HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.pid = self.holder.pid
        self.namespace = ""
        self.nsenter = shutil.which("nsenter") or "nsenter"
        assert self.holder.stdout is not None
        if self.holder.stdout.readline() != b"ready\n":
            errors = self.close()
            pytest.skip(f"cannot make a namespace of the test's own here: {errors}")
        self.namespace = os.readlink(f"/proc/{self.pid}/ns/net")

    def enter(self, cwd: str = "/") -> list[str]:
        """The command prefix that runs a program in the world, starting in ``cwd``."""
        return [self.nsenter, f"--target={self.pid}", "--mount", "--net", f"--wd={cwd}", "--"]

    def run(self, args: list[str], cwd: str = "/") -> subprocess.CompletedProcess[str]:
        """``args`` run to their end in the world, their output captured as text."""
        return subprocess.run(
            self.enter(cwd) + args, capture_output=True, text=True, timeout=DEADLINE
        )

    def start(self, args: list[str]) -> subprocess.Popen[bytes]:
        """A daemon in the world; its output is dropped. ``close()`` ends it."""
        return subprocess.Popen(
            self.enter() + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def path(self, inside: str) -> str:
        """Where the suite reads and writes the world's ``inside`` (its /run is its own)."""
        return f"/proc/{self.pid}/root{inside}"

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """A socket on the world's network: made with this thread inside the namespace for a
        moment (setns changes only the calling thread's)."""
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/thread-self/ns/net") as home, open(f"/proc/{self.pid}/ns/net") as there:
            if libc.setns(there.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the test's world")
            try:
                return socket.socket(family, kind)
            finally:
                if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back out of the test's world")

    def pids(self, uid: int | None = None, command: str = "") -> list[int]:
        """The processes in the world (of ``uid``, with ``command`` in their command line)."""
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == self.pid:
                continue
            try:
                if os.readlink(f"/proc/{name}/ns/net") != self.namespace:
                    continue
                if uid is not None and os.stat(f"/proc/{name}").st_uid != uid:
                    continue
                with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                    if command.encode() not in cmdline.read():
                        continue
            except OSError:
                continue
            found.append(int(name))
        return found

    def close(self) -> str:
        """End every process in the world, then the world; what its holder said, if anything."""
        if self.namespace:
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            wait_gone(pids)
        try:  # its standard input closes: it ends whatever is left, then itself
            _out, errors = self.holder.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.holder.kill()
            _out, errors = self.holder.communicate()
        return errors.decode(errors="replace").strip()


def running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie has ended: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: list[int], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while any(map(running, pids)) and time.monotonic() < deadline:
        time.sleep(0.01)  # a poll interval under the deadline


@contextlib.contextmanager
def world() -> Iterator[World]:
    """A World for one test (as root; skips saying why otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the test namespaces of its own")
    made = World()
    try:
        yield made
    finally:
        made.close()
