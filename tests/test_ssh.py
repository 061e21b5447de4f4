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


#: Socket paths that must reach the far talk as they are, each as one argument.
ODD_PATHS = [
    "-starts-with-a-dash",
    "with spaces.sock",
    "it's.sock",
    'say "hi".sock',
    "a\nnewline.sock",
    "$(touch pwned) `touch pwned` $HOME",
    "back\\slash\\'.sock",
    "!bang %1 {a,b} ~ *",
    "ünïcödé.sock",
]


def quoted_parts(command: str) -> tuple[str, list[str]]:
    """What of ``command`` stands outside single quotes, and each single-quoted part."""
    outside, inside = "", []
    for n, part in enumerate(command.split("'")):
        if n % 2:
            inside.append(part)
        else:
            outside += part
    return outside, inside


@pytest.mark.parametrize("socket_path", [None, *ODD_PATHS])
def test_the_far_command_means_the_same_to_every_login_shell(socket_path: str | None) -> None:
    """sshd runs the command through the user's login shell there: sh, bash, csh, tcsh,
    fish. Outside single quotes, only words that all of them read alike; inside, none of
    what any of them treats specially there (a quote, a backslash before a backslash or a
    quote in fish, ! and a newline in csh)."""
    command = talk.remote_command("python3 /opt/talk.py", "bob", socket_path)
    outside, inside = quoted_parts(command)
    assert outside == "exec sh -c ", command
    assert len(inside) == 1 and not set(inside[0]) & {"!", "\n"}, command
    assert "\\\\" not in inside[0] and "\\'" not in inside[0], command


@pytest.mark.parametrize("shell", ["sh", "dash", "bash", "zsh", "ksh", "csh", "tcsh", "fish"])
def test_the_far_command_runs_talk_with_every_socket_path_as_one_argument(
    tmp_path: Path, shell: str
) -> None:
    """Run as sshd runs it: ``SHELL -c COMMAND``, by each login shell that is installed."""
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell} here (not one of the packages the tests may install)")
    fake = tmp_path / "far-talk"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "if sys.argv[1:] == ['--version']:\n"
        "    sys.exit(print('talk.py 9'))\n"
        "print(repr(sys.argv[1:]))\n"
    )
    fake.chmod(0o755)
    for path in ODD_PATHS:
        command = talk.remote_command(str(fake), "bob", path)
        ran = subprocess.run(
            [shell, "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE
        )
        assert ran.stdout == repr(["bob", f"--socket={path}"]) + "\n", (path, ran.stderr)
    assert not (tmp_path / "pwned").exists()
