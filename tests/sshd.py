"""A real OpenSSH server on localhost, and real users with keys, for the end-to-end tests of
talk.py across machines. Not a test file.

``sshd`` is Debian's, started by the test as root in the test's own world (world.py), on port
22 of the world's own 127.0.0.1, with a host key of its own; it looks up the users' keys in a
directory of root's in the world's /run (AuthorizedKeysFile), so no home is changed for that.
Each user's own ssh client reads their own ``~/.ssh/config`` (their key, a known_hosts file
with the test server's key), as a user's ssh does: nothing talk does is told about the test.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from terminal import DEADLINE
from world import World

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
SSH = "/usr/bin/ssh"

_SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {directory}/host_key
PidFile {directory}/sshd.pid
AuthorizedKeysFile {directory}/keys/%u
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
PermitRootLogin no
AllowStreamLocalForwarding yes
LogLevel ERROR
"""

_CLIENT_CONFIG = """\
# Written by talk's tests: their ssh server on this machine.
Host localhost
    Port {port}
    IdentityFile ~/.ssh/talk-test-key
    UserKnownHostsFile ~/.ssh/talk-test-known-hosts
    StrictHostKeyChecking yes
    BatchMode yes
# The same server as a host ssh has not met: it adds the key, and says so.
Host fresh
    HostName localhost
    Port {port}
    IdentityFile ~/.ssh/talk-test-key
    UserKnownHostsFile ~/.ssh/talk-test-fresh-hosts
    StrictHostKeyChecking accept-new
    BatchMode yes
"""


#: What allow() writes into a user's ~/.ssh.
TEST_FILES = ("config", "talk-test-known-hosts", "talk-test-key", "talk-test-key.pub")


class SshServer:
    """sshd on 127.0.0.1:``port``; ``allow(user)`` gives a user a key it accepts and the ssh
    configuration that reaches it as ``ssh localhost``."""

    def __init__(self, directory: str, port: int) -> None:
        self.directory = directory  # the world's /run/talk-sshd, as the suite reaches it
        self.port = port
        self.configured: list[str] = []  # the ~/.ssh directories written into

    def allow(self, user: pwd.struct_passwd) -> None:
        dot_ssh = os.path.join(user.pw_dir, ".ssh")
        if not os.path.isdir(dot_ssh):
            os.mkdir(dot_ssh, 0o700)
            os.chown(dot_ssh, user.pw_uid, user.pw_gid)
        key = os.path.join(dot_ssh, "talk-test-key")
        for path in (key, key + ".pub"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        shutil.copy(key + ".pub", os.path.join(self.directory, "keys", user.pw_name))
        with open(os.path.join(self.directory, "host_key.pub")) as host:
            host_key = " ".join(host.read().split()[:2])
        known_as = "localhost" if self.port == 22 else f"[localhost]:{self.port}"
        files = {
            # ssh writes the usual port's hosts without it.
            "talk-test-known-hosts": f"{known_as} {host_key}\n",
            "config": _CLIENT_CONFIG.format(port=self.port),
        }
        for name, text in files.items():
            with open(os.path.join(dot_ssh, name), "w") as file:
                file.write(text)
        for name in TEST_FILES:
            os.chown(os.path.join(dot_ssh, name), user.pw_uid, user.pw_gid)
            os.chmod(os.path.join(dot_ssh, name), 0o600)
        self.configured.append(dot_ssh)

    def forget(self) -> None:
        """Take the test's files out of the users' ~/.ssh again."""
        for dot_ssh in self.configured:
            for name in (*TEST_FILES, "talk-test-fresh-hosts"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(dot_ssh, name))


def free_port() -> int:
    """A TCP port of 127.0.0.1 where nothing listens (one just let go of)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(world: World, port: int) -> bool:
    try:
        with world.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(("127.0.0.1", port))
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


#: Where sshd finds its files in the world: its /run is the world's own.
INSIDE = "/run/talk-sshd"
#: The world's network is the test's own: sshd takes the usual port.
PORT = 22


@contextlib.contextmanager
def ssh_server(world: World) -> Iterator[SshServer]:
    """A running sshd in ``world`` (needs Debian's openssh-server)."""
    missing = [path for path in (SSHD, SSH_KEYGEN, SSH) if not os.path.exists(path)]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} missing: install Debian's openssh-server and "
            "openssh-client (.ci/run does, as root)"
        )
    # Not under /tmp: sshd (StrictModes) takes no keys from below a directory others may
    # write to.
    directory = world.path(INSIDE)
    os.mkdir(directory, 0o755)
    os.mkdir(os.path.join(directory, "keys"), 0o755)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", f"{directory}/host_key"], check=True
    )
    config = os.path.join(directory, "sshd_config")
    with open(config, "w") as file:
        file.write(_SSHD_CONFIG.format(port=PORT, directory=INSIDE))
    sshd = subprocess.Popen(
        [*world.enter(), SSHD, "-D", "-e", "-f", f"{INSIDE}/sshd_config"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = SshServer(directory, PORT)
    try:
        deadline = time.monotonic() + DEADLINE
        while not _answers(world, PORT):
            if sshd.poll() is not None or time.monotonic() > deadline:
                errors = sshd.stderr.read().decode() if sshd.stderr else ""
                pytest.fail(f"sshd did not start: {errors}")
            time.sleep(0.05)  # a poll interval under the deadline
        yield server
    finally:
        server.forget()
        sshd.terminate()
        sshd.wait()
        if sshd.stderr is not None:
            sshd.stderr.close()
