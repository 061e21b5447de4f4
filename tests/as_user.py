"""Run talk.py as another local user, in a pty, for the end-to-end tests that need one.

Not a test file: the end-to-end tests import it.

Other users cannot read a checkout under root's 0700 home, nor run a Python that lives there,
so ``world_readable_copy()`` copies talk.py and pubmarine.py into a temporary directory that
anyone may read, and ``python_for_others()`` finds an interpreter that anyone may run. The
wrapper ``_AS_USER`` drops to the user's uid, gid and groups and then execs Python: the pid
that pexpect sees is the pid of talk.py itself.

Creating users needs root; ``needs_root`` skips a test with the reason otherwise.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from terminal import REPO_ROOT, Talk, child_env

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to create users and run talk.py as them"
)

# Runs argv[4:] as uid argv[1], gid argv[2], with the groups of login argv[3] (none if "-").
_AS_USER = (
    "import os, sys\n"
    "uid, gid, login = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]\n"
    "os.setgroups([])\n"
    "if login != '-':\n"
    "    os.initgroups(login, gid)\n"
    "os.setgid(gid)\n"
    "os.setuid(uid)\n"
    "os.execv(sys.argv[4], sys.argv[4:])\n"
)


def _usable_by_others(path: str) -> bool:
    """Anyone may run ``path``: it and every directory above it are executable by others."""
    path = os.path.realpath(path)
    if not os.stat(path).st_mode & stat.S_IXOTH:
        return False
    parent = os.path.dirname(path)
    while parent != os.path.dirname(parent):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(parent)
    return True


def python_for_others() -> str:
    """A Python that another user can run (ours may live under root's 0700 home)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if candidate and os.path.exists(candidate) and _usable_by_others(candidate):
            return candidate
    pytest.skip("no Python interpreter that other users may run")


def world_readable_copy() -> str:
    """A new directory, readable by everyone, holding copies of talk.py and pubmarine.py.

    The caller removes it (``shutil.rmtree``).
    """
    directory = tempfile.mkdtemp(prefix="talk-code-")
    os.chmod(directory, 0o755)
    for name in ("talk.py", "pubmarine.py"):
        shutil.copy(REPO_ROOT / name, os.path.join(directory, name))
        os.chmod(os.path.join(directory, name), 0o644)
    return directory


def ensure_user(login: str) -> pwd.struct_passwd:
    """The account ``login``, created (no home, no password, no login shell) if missing."""
    try:
        return pwd.getpwnam(login)
    except KeyError:
        pass
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", login],
        check=False,
        capture_output=True,
    )
    try:
        return pwd.getpwnam(login)
    except KeyError:
        pytest.skip(f"could not create the user {login} with useradd")


def spawn_as(
    spawn: Callable[..., Talk],
    code_dir: str,
    user: pwd.struct_passwd | int,
    *args: str,
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> Talk:
    """``talk.py *args`` from ``code_dir`` in a pty, as ``user`` (a login's entry, or a uid).

    ``args`` are talk.py's arguments (``--socket PATH``, a login, ...).
    """
    if isinstance(user, int):
        uid, gid, login = user, user, "-"
    else:
        uid, gid, login = user.pw_uid, user.pw_gid, user.pw_name
    talk_py = os.path.join(code_dir, "talk.py")
    wrapper = ["-c", _AS_USER, str(uid), str(gid), login, python_for_others(), talk_py, *args]
    environment = env if env is not None else child_env()
    environment.setdefault("HOME", "/")
    if login != "-":
        environment.update(USER=login, LOGNAME=login)
    return spawn("", args=wrapper, env=environment, **kwargs)
