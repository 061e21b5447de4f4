"""End-to-end tests of talk.py across machines, over a real OpenSSH server on localhost.

alice and bob are real accounts with a shell; they log in (``login -f``) on terminals of their
own and type at their shell prompt, as people do. alice's ssh reaches the test's sshd as
``ssh localhost`` through her own ~/.ssh/config (see sshd.py). "The other machine" is this one
reached through sshd: the names talk shows there come from sshd's session, as they would on
another host. Needs root and Debian's openssh-server and openssh-client; skips saying so
otherwise.
"""

from __future__ import annotations

import os
import pwd
import shlex
import signal
import subprocess
from collections.abc import Iterator

import pytest
from as_user import ensure_user, python_for_others, shared_dir
from sshd import SshServer, free_port, ssh_server
from talkd import ALICE, BOB, after_exit, exit_status, log_in, then_status
from terminal import (
    DEADLINE,
    ENTER_ALTERNATE_SCREEN,
    NO_TALK_DAEMON,
    REPO_ROOT,
    Spawner,
    Talk,
    child_env,
    news_below,
    squeezed,
    wait_until,
)
from world import World

People = dict[str, pwd.struct_passwd]


@pytest.fixture
def server(test_world: World) -> Iterator[SshServer]:
    with ssh_server(test_world) as running:
        yield running


@pytest.fixture
def people(server: SshServer) -> People:
    accounts = {name: ensure_user(name) for name in (ALICE, BOB)}
    server.allow(accounts[ALICE])
    return accounts


@pytest.fixture
def meeting_dir() -> Iterator[str]:
    """A sticky directory like /var/tmp, for the far end's sockets."""
    directory = shared_dir("talk-far-", 0o1777)
    yield directory
    subprocess.run(["rm", "-rf", directory], check=False)


def talk_py(code_dir: str, *args: str, env: str = "") -> str:
    """The command line that runs talk.py at a shell prompt (then says its exit status)."""
    return then_status(env + shlex.join([python_for_others(), f"{code_dir}/talk.py", *args]))


def status(talk: Talk, text: str) -> None:
    talk.wait_for_row(0, text)


def forward(alice: Talk, local: str, remote: str) -> None:
    """alice forwards ``local`` to ``remote`` on the far side, with her own ssh, in the
    background, as the README says: once the forwarding is up, ssh goes to the background."""
    alice.type(
        f"ssh -f -N -o ExitOnForwardFailure=yes -L {local}:{remote} localhost && echo FORWARDED\r"
    )
    alice.wait_until(lambda t: "FORWARDED" in t.text(), DEADLINE, "the forwarding")


def test_a_call_to_bob_at_host_meets_bob_there_and_both_names_are_true(
    spawn_in_world: Spawner, code_dir: str, people: People, meeting_dir: str
) -> None:
    pair = os.path.join(meeting_dir, "pair.sock")  # on "host": where its two talks meet
    alice = log_in(spawn_in_world, ALICE)
    alice.type(talk_py(code_dir, f"{BOB}@localhost", "--socket", pair) + "\r")
    status(alice, f"Waiting for {BOB}")
    bob = log_in(spawn_in_world, BOB)
    bob.type(talk_py(code_dir, ALICE, "--socket", pair) + "\r")
    status(bob, f"Talking to {ALICE} (pid ")  # her talk, in her ssh session there
    status(alice, f"Talking to {BOB} (pid ")
    alice.type("hello from afar\r")
    bob.wait_until(lambda t: "<you> hello from afar" in t.text(), DEADLINE, "alice's line")
    bob.type("hi\r")
    alice.wait_until(lambda t: "<you> hi" in t.text(), DEADLINE, "bob's line")
    alice.type(".\r")
    assert exit_status(alice) == 0
    assert "talk: you ended the conversation" in after_exit(alice)


def test_talk_missing_at_the_far_end_is_one_line(
    spawn_in_world: Spawner, code_dir: str, people: People
) -> None:
    alice = log_in(spawn_in_world, ALICE)
    alice.type(talk_py(code_dir, f"{BOB}@localhost", env="env TALK_REMOTE=no-such-talk ") + "\r")
    assert exit_status(alice) == 1
    lines = [line for line in after_exit(alice).splitlines() if "talk" in line]
    assert lines[-1] == (
        "talk: no-such-talk is not found on localhost; TALK_REMOTE names the command there"
    ), after_exit(alice)


def test_ssh_that_cannot_connect_says_why_then_talk_says_one_line(
    spawn: Spawner, code_dir: str
) -> None:
    """No server needed: ssh to a port where nothing listens. ssh's own words come as ssh
    says them, and talk does not repeat them."""
    if not os.path.exists("/usr/bin/ssh"):
        pytest.skip("the ssh client is not installed (Debian: openssh-client)")
    port = free_port()
    env = child_env(TALK_SSH=f"ssh -o BatchMode=yes -p {port}")
    talk = spawn("", args=[f"{code_dir}/talk.py", "bob@127.0.0.1"], env=env, cwd=code_dir)
    assert talk.wait_exit() == 1
    assert talk.after_exit.strip().splitlines()[-2:] == [
        f"ssh: connect to host 127.0.0.1 port {port}: Connection refused",
        "talk: ssh could not reach 127.0.0.1",
    ], talk.after_exit


def test_a_forwarded_socket_names_the_tunnel_on_both_ends(
    spawn_in_world: Spawner, code_dir: str, people: People, meeting_dir: str
) -> None:
    far = os.path.join(meeting_dir, "far.sock")
    bob = log_in(spawn_in_world, BOB)
    bob.type(talk_py(code_dir, "--socket", far) + "\r")
    status(bob, "Waiting for someone")
    alice = log_in(spawn_in_world, ALICE)
    near = f"/home/{ALICE}/near.sock"
    alice.type(f"rm -f {near}\r")
    forward(alice, near, far)
    alice.type(talk_py(code_dir, "--socket", near) + "\r")
    # alice's peer is her own ssh: never "Talking to" her.
    alice.resize(24, 120)
    status(alice, "Talking through your ssh tunnel (pid ")
    assert "who is at the far end is not known here" in alice.row(0)
    # bob's peer is sshd, running as the user it authenticated: alice.
    status(bob, f"Talking to {ALICE} (through ssh, pid ")
    alice.type("through the tunnel\r")
    bob.wait_until(lambda t: "<you> through the tunnel" in t.text(), DEADLINE, "the line")


def test_a_tunnel_with_nobody_at_the_far_end_says_so_and_exits_1(
    spawn_in_world: Spawner, code_dir: str, people: People, meeting_dir: str
) -> None:
    alice = log_in(spawn_in_world, ALICE)
    near = f"/home/{ALICE}/near.sock"
    alice.type(f"rm -f {near}\r")
    forward(alice, near, os.path.join(meeting_dir, "nobody.sock"))
    alice.type(talk_py(code_dir, "--socket", near) + "\r")
    alice.resize(24, 120)
    status(alice, "nobody answered at the other end of the tunnel")
    assert "left" not in alice.row(0)
    alice.type("\x1b")
    assert exit_status(alice) == 1
    assert "talk: nobody answered at the other end of the tunnel" in after_exit(alice)


def test_a_private_call_never_calls_through_a_tunnel_nor_lets_one_in(
    spawn_in_world: Spawner, code_dir: str, people: People, meeting_dir: str
) -> None:
    """bob waits for alice; alice's own tunnel to bob's place sits at the path her call to bob
    would use. Her talk does not call through it (that would hand a call to bob's talk and
    hang up on it), and bob's talk does not let in anyone who comes through ssh."""
    far = os.path.join(meeting_dir, "pair.sock")
    bob = log_in(spawn_in_world, BOB)
    quiet = f"env TALK_DAEMON={NO_TALK_DAEMON} "  # only the socket paths: no talkd
    bob.type(talk_py(code_dir, ALICE, "--socket", far, env=quiet) + "\r")
    status(bob, f"Waiting for {ALICE}")
    alice = log_in(spawn_in_world, ALICE)
    near = os.path.join(meeting_dir, "near.sock")
    forward(alice, near, far)
    alice.type(talk_py(code_dir, BOB, "--socket", near, env=quiet) + "\r")
    alice.resize(24, 150)
    status(alice, f"Waiting for {BOB}")
    held = squeezed(f"(near.sock is held by {ALICE})")
    alice.wait_until(lambda t: held in news_below(t), DEADLINE, "the held place, below")
    assert f"Waiting for {ALICE}" in bob.row(0) and "Turned away" not in bob.row(0)

    # A plain talk through the same tunnel reaches bob's talk, which turns it away.
    other = log_in(spawn_in_world, ALICE)
    other.type(talk_py(code_dir, "--socket", near) + "\r")
    bob.resize(24, 150)
    status(bob, f"Turned away {ALICE} (through ssh, pid ")
    assert exit_status(other) == 1
    assert "says it is private" in after_exit(other)


#: The last commit before talk learnt --version: a talk too old to take a call from afar.
_BEFORE_VERSION = "2d2ba68^"


@pytest.fixture
def old_talk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """That talk, in a directory every user can read; skips without the git history."""
    directory = shared_dir("talk-old-", 0o755)
    try:
        for name in ("talk.py", "pubmarine.py"):
            shown = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "show", f"{_BEFORE_VERSION}:{name}"],
                capture_output=True,
            )
            if shown.returncode != 0:
                pytest.skip("needs the repository's git history for an old talk.py")
            with open(os.path.join(directory, name), "wb") as file:
                file.write(shown.stdout)
            os.chmod(os.path.join(directory, name), 0o644)
        yield directory
    finally:
        subprocess.run(["rm", "-rf", directory], check=False)


def test_a_talk_too_old_at_the_far_end_is_one_line(
    spawn_in_world: Spawner, code_dir: str, people: People, old_talk: str
) -> None:
    alice = log_in(spawn_in_world, ALICE)
    remote = f"env TALK_REMOTE='python3 {old_talk}/talk.py' "
    alice.type(talk_py(code_dir, f"{BOB}@localhost", env=remote) + "\r")
    assert exit_status(alice) == 1
    lines = [line for line in after_exit(alice).splitlines() if line.startswith("talk:")]
    assert lines == [
        f"talk: the talk on localhost (python3 {old_talk}/talk.py) is too old to take a call "
        "from another machine; TALK_REMOTE names another command there"
    ], after_exit(alice)


def test_ssh_says_what_it_says_when_it_says_it(
    spawn_in_world: Spawner, code_dir: str, people: People, meeting_dir: str
) -> None:
    """A host that alice's ssh has not met: ssh adds its key and says so before the call
    starts, as a plain ssh does, not once the call is over."""
    pair = os.path.join(meeting_dir, "pair.sock")
    alice = log_in(spawn_in_world, ALICE)
    alice.type(talk_py(code_dir, f"{BOB}@fresh", "--socket", pair) + "\r")
    status(alice, f"Waiting for {BOB}")
    said = bytes(alice.raw)
    warning = said.find(b"Permanently added")
    assert 0 <= warning < said.rfind(ENTER_ALTERNATE_SCREEN), said.decode(errors="replace")


def test_ctrl_c_at_sshs_question_ends_talk_as_the_signal_does(
    spawn_in_world: Spawner, code_dir: str, people: People
) -> None:
    """ssh asks about a host it does not know (alice's ssh has no configuration for this
    name); her Ctrl-C there ends ssh, and so talk, as an interrupt: 128 + 2, one line."""
    alice = log_in(spawn_in_world, ALICE)
    alice.type(talk_py(code_dir, f"{BOB}@127.0.0.1") + "\r")
    alice.wait_until(lambda t: "continue connecting" in t.text(), DEADLINE, "ssh's question")
    alice.type("\x03")
    assert exit_status(alice) == 128 + signal.SIGINT
    # on a line of its own, not after ssh's question and the ^C
    said = after_exit(alice)
    assert "^C\ntalk: interrupted\nprogram exited with 130\n" in said, said


@pytest.mark.parametrize("name", ["-dash.sock", "-odd 'name\" $HOME\nend.sock"])
def test_any_socket_path_reaches_the_far_talk_as_one_path(
    spawn_in_world: Spawner, code_dir: str, people: People, name: str
) -> None:
    """A path that starts with a dash (given as --socket=PATH), with spaces, quotes, a
    dollar and a newline: the far talk waits at exactly that path (relative: in alice's
    home there)."""
    alice = log_in(spawn_in_world, ALICE)
    alice.type(talk_py(code_dir, f"{BOB}@localhost", f"--socket={name}") + "\r")
    status(alice, f"Waiting for {BOB}")
    far = os.path.join(people[ALICE].pw_dir, name)
    wait_until(lambda: os.path.exists(far), DEADLINE, "the far talk's socket at that path")
