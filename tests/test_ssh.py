"""Unit tests of talk across machines: how a peer that is ssh is named, and the script that
runs talk on the other machine. The real ssh and sshd are in test_e2e_ssh.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from terminal import DEADLINE, wait_until

import talk


def test_a_tunnel_is_never_named_as_a_person() -> None:
    mine = talk.Peer("alice", 777, "your tunnel")
    theirs = talk.Peer("mallory", 778, "tunnel")
    assert str(mine) == "your ssh tunnel (pid 777)" and mine.name == "your ssh tunnel"
    assert str(theirs) == "mallory's ssh tunnel (pid 778)"
    assert str(talk.Peer("alice", 4242, "ssh")) == "alice (through ssh, pid 4242)"
    assert mine.tunnel and theirs.tunnel and not talk.Peer("alice", 1).tunnel


@pytest.fixture
def named_ssh(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process of ours that the kernel calls ``ssh`` (a copy of sleep, by that name)."""
    sleep = shutil.which("sleep")
    if sleep is None:
        pytest.skip("no sleep(1)")
    fake = tmp_path / "ssh"
    shutil.copy(sleep, fake)
    process = subprocess.Popen([str(fake), "60"])
    yield process
    process.kill()
    process.wait()


def test_a_process_called_ssh_is_a_tunnel_and_sshd_is_ssh(
    named_ssh: subprocess.Popen[bytes],
) -> None:
    if not os.path.exists(f"/proc/{named_ssh.pid}/comm"):
        pytest.skip("no /proc/PID/comm (not Linux)")
    # Named so once it has exec'd the copy (Popen may return a moment before, with vfork).
    wait_until(lambda: talk.process_name(named_ssh.pid) == "ssh", DEADLINE, "the exec")
    creds = talk.Credentials(named_ssh.pid, os.getuid())
    assert talk.forwarding(creds) == "tunnel"
    assert talk.peer_of(creds).via == "your tunnel"
    assert talk.forwarding(talk.Credentials(os.getpid(), os.getuid())) == ""


def test_the_holder_of_a_listening_socket_is_found_when_its_maker_is_gone(
    tmp_path: Path,
) -> None:
    """SO_PEERCRED names the process that called listen(); ``ssh -f`` forks after that."""
    path = str(tmp_path / "s.sock")
    if len(path) > 100:
        pytest.skip("the temporary directory's path is too long for a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        if talk.listening_files() is None:
            pytest.skip("this system does not show its socket table (sock_diag)")
        assert talk.listener_pid(path) == os.getpid()
    assert talk.listener_pid(path) == 0  # nobody listens there now


def run_remote(tmp_path: Path, command: str) -> int:
    """REMOTE_SCRIPT for ``command``, run by sh as the far side's shell would run it."""
    script = talk.REMOTE_SCRIPT.format(
        talk=command,
        arguments="bob",
        missing=talk.REMOTE_MISSING,
        old=talk.REMOTE_TOO_OLD,
    )
    return subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True).returncode


def test_the_far_side_says_when_talk_is_missing_or_too_old(tmp_path: Path) -> None:
    assert run_remote(tmp_path, "no-such-talk-anywhere") == talk.REMOTE_MISSING
    missing_file = f"{sys.executable} {tmp_path}/gone.py"
    assert run_remote(tmp_path, missing_file) == talk.REMOTE_MISSING
    old = tmp_path / "old-talk"
    old.write_text("#!/bin/sh\necho 'usage: talk.py [USER]' >&2\nexit 2\n")
    old.chmod(0o755)
    assert run_remote(tmp_path, str(old)) == talk.REMOTE_TOO_OLD
    new = tmp_path / "new-talk"
    new.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "talk.py 9" && exit 0\nexit 42\n')
    new.chmod(0o755)
    assert run_remote(tmp_path, str(new)) == 42  # it ran the call, and its status is talk's


def test_a_person_on_another_machine_needs_both_halves() -> None:
    with pytest.raises(talk.TalkError, match="USER@HOST"):
        talk.call_across("@host", None)
    with pytest.raises(talk.TalkError, match="USER@HOST"):
        talk.call_across("bob@", None)
