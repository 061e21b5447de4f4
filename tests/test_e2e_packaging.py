"""End-to-end tests of the package as people get it: the sdist, and an install beside others.

These build and install with pip and ``build``, in throwaway directories under TMPDIR, and need
PyPI (or the configured index) for the build backend and for pubmarine 0.4.3: a test skips,
saying so, when what it has to download cannot be had.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import venv
import zipapp
from collections.abc import Iterator
from pathlib import Path

import pytest
from as_user import account, ensure_user, python_for_others, shared_dir, spawn_as
from terminal import (
    NOBODY,
    REPO_ROOT,
    Peers,
    Spawner,
    talking_to,
    wait_for_status,
    wait_for_waiting,
)

BUILD_TIMEOUT = 300  # seconds for one pip or build run (downloads on a slow line)


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command``, its output captured as text."""
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )


def skip_if_offline(result: subprocess.CompletedProcess[str], what: str) -> None:
    """Skip the test if pip, run for ``result``, could not download ``what``."""
    if result.returncode != 0 and "No matching distribution found" in result.stderr:
        last = result.stderr.strip().splitlines()[-1]
        pytest.skip(f"cannot download {what} (no network?): {last}")


def shipped_files() -> set[str]:
    """The files the project keeps under tests/ (git's list when this is a git checkout)."""
    listed = run(["git", "ls-files", "tests"], cwd=REPO_ROOT)
    if listed.returncode == 0 and listed.stdout.strip():
        return set(listed.stdout.split())
    return {
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "tests").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout to build from: building writes build/ and *.egg-info into the
    source tree, and the checkout may be read-only, or in use by another run."""
    copy = tmp_path_factory.mktemp("source") / "talk"
    shutil.copytree(REPO_ROOT, copy, ignore=JUNK)
    return copy


@pytest.fixture(scope="module")
def sdist(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, built by ``python -m build --sdist`` and unpacked; its top directory."""
    if run([sys.executable, "-m", "build", "--version"]).returncode != 0:
        pytest.skip("the 'build' package is not installed (it is in the dev extra)")
    out = tmp_path_factory.mktemp("sdist")
    built = run([sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(source)])
    skip_if_offline(built, "the build backend")
    assert built.returncode == 0, f"building the sdist failed:\n{built.stdout}\n{built.stderr}"
    assert "SetuptoolsDeprecationWarning" not in built.stdout + built.stderr, built.stderr
    (archive,) = out.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        if sys.version_info >= (3, 12):
            tar.extractall(out, filter="data")  # without a filter 3.12+ warns
        else:
            tar.extractall(out)
    (top,) = (path for path in out.iterdir() if path.is_dir())
    return top


def test_sdist_holds_the_whole_test_suite(sdist: Path) -> None:
    # and the manual page, and the build backend that building a wheel from it needs
    wanted = shipped_files() | {"pubtalk.1", ".ci/build_backend.py"}
    missing = sorted(name for name in wanted if not (sdist / name).is_file())
    assert not missing, f"the sdist lacks {missing}"


def test_unit_tests_run_from_the_unpacked_sdist(sdist: Path) -> None:
    units = sorted(
        str(path.relative_to(sdist))
        for path in (sdist / "tests").glob("test_*.py")
        if not path.name.startswith("test_e2e_")
    )
    assert units, "no unit tests in the sdist"
    # Collecting everything also imports conftest.py and the end-to-end harness.
    collected = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--co"], sdist)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    command = [sys.executable, "-X", "dev", "-W", "error", "-m", "pytest", "-q"]
    result = run([*command, "-p", "no:cacheprovider", *units], cwd=sdist)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout.splitlines()[-1], result.stdout


@pytest.fixture(scope="module")
def beside_pubmarine_043(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment with pubmarine 0.4.3 and this package installed; its bin/.

    The two have a module of the same name, pubmarine. Installed in either order, talk must
    still run on its own bus.
    """
    env_dir = tmp_path_factory.mktemp("beside-pubmarine-043")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # The pip running these tests installs into the new environment: no ensurepip needed.
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    old = run([*pip, "pubmarine==0.4.3"])
    skip_if_offline(old, "pubmarine 0.4.3")
    assert old.returncode == 0, f"installing pubmarine 0.4.3 failed:\n{old.stderr}"
    ours = run([*pip, str(source)])
    skip_if_offline(ours, "the build backend")
    assert ours.returncode == 0, f"installing the package failed:\n{ours.stderr}"
    yield env_dir / "bin"


def test_installed_script_talks_beside_pubmarine_043(
    beside_pubmarine_043: Path, spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    script = beside_pubmarine_043 / "pubtalk"
    assert script.is_file(), f"no console script {script.name}"
    # The harness starts its own Python; it hands over to the installed script, same pid.
    handover = "import os, sys; os.execv(sys.argv[1], sys.argv[1:])"
    args = ["-c", handover, str(script), "--socket", sock_path]
    talk = spawn(sock_path, args=args, cwd=os.path.dirname(sock_path))
    wait_for_waiting(talk, sock_path)
    other = peer(sock_path)
    wait_for_status(talk, talking_to(os.getpid()))
    other.send_line("hello from beside 0.4.3")
    talk.wait_until(lambda t: "<you> hello from beside 0.4.3" in t.display, what="the line")
    talk.send_line(".")
    assert talk.wait_exit() == 0, talk.after_exit


# -- installing as people do ----------------------------------------------------------------------

PACKAGER = account("packager")  # an ordinary user who installs the package for themselves
JUNK = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


def tree(top: Path) -> dict[str, float]:
    """Every path below ``top`` with its modification time: what a build may not change."""
    return {str(path.relative_to(top)): path.lstat().st_mtime for path in top.rglob("*")}


def as_packager(
    user: pwd.struct_passwd, command: list[str], home: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as ``user``, at home in ``home``."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    return subprocess.run(
        command,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def read_only_clone() -> Iterator[tuple[Path, Path, pwd.struct_passwd]]:
    """A clone that root owns and nobody else may write, as on a shared box, and an ordinary
    user with a home of their own: (the clone, the home, the user). Whatever installs from the
    clone must leave it as it was."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a clone the installing user may not write")
    user = ensure_user(PACKAGER)
    shared = Path(shared_dir("talk-pkg-", 0o755))
    home = Path(shared_dir("talk-pkg-home-", 0o755))
    try:
        clone = shared / "talk"
        shutil.copytree(REPO_ROOT, clone, ignore=JUNK)
        for path in [clone, *clone.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        os.chown(home, user.pw_uid, user.pw_gid)
        before = tree(clone)
        yield clone, home, user
        assert tree(clone) == before, "installing wrote into the source tree"
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def test_pipx_installs_pubtalk_for_a_user_from_a_clone_they_may_not_write(
    read_only_clone: tuple[Path, Path, pwd.struct_passwd],
) -> None:
    import pubmarine

    pipx = shutil.which("pipx", path="/usr/bin:/bin")
    if pipx is None:
        pytest.skip("pipx is not installed (Debian: apt install pipx)")
    clone, home, user = read_only_clone
    installed = as_packager(user, [pipx, "install", str(clone)], home)
    skip_if_offline(installed, "the build backend")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    version = as_packager(user, [str(home / ".local" / "bin" / "pubtalk"), "--version"], home)
    assert version.stdout == f"pubtalk {pubmarine.__version__}\n", version.stderr


@pytest.fixture(scope="module")
def installed_by_a_user(
    read_only_clone: tuple[Path, Path, pwd.struct_passwd],
) -> Iterator[tuple[Path, pwd.struct_passwd]]:
    """An ordinary user's virtual environment with the package installed, with pip, from the
    read-only clone: (its bin/, the user)."""
    clone, home, user = read_only_clone
    # The system's Python, as a user on a shared box has it (Debian's refuses pip install
    # outside a virtual environment: PEP 668).
    system = shutil.which("python3", path="/usr/bin:/bin") or python_for_others()
    made = as_packager(user, [system, "-m", "venv", str(home / "venv")], home)
    if made.returncode != 0:
        pytest.skip(f"{system} cannot make a virtual environment: {made.stderr.strip()}")
    pip = [str(home / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    installed = as_packager(user, [*pip, str(clone)], home)
    skip_if_offline(installed, "the build backend")
    assert installed.returncode == 0, f"pip install failed:\n{installed.stderr}"
    yield home / "venv" / "bin", user


def test_an_ordinary_user_installs_from_a_clone_they_may_not_write(
    installed_by_a_user: tuple[Path, pwd.struct_passwd],
) -> None:
    import pubmarine

    bin_dir, user = installed_by_a_user
    version = as_packager(user, [str(bin_dir / "pubtalk"), "--version"], bin_dir)
    assert (version.returncode, version.stdout) == (0, f"pubtalk {pubmarine.__version__}\n")
    helped = as_packager(user, [str(bin_dir / "pubtalk"), "--help"], bin_dir)
    assert helped.stdout.startswith("usage: pubtalk [--socket PATH] [USER [TTY]]\n"), helped.stdout
    manual = bin_dir.parent / "share" / "man" / "man1" / "pubtalk.1"
    assert manual.read_bytes() == (REPO_ROOT / "pubtalk.1").read_bytes(), "no manual page"
    if shutil.which("man"):  # as the README says: found once the environment's bin is on PATH
        path = f"{bin_dir}:/usr/bin:/bin"
        found = as_packager(user, ["/usr/bin/env", f"PATH={path}", "man", "-w", "pubtalk"], bin_dir)
        assert found.stdout.strip() == str(manual), found
    script = "import importlib.metadata as m; d = m.metadata('talk-pubmarine')\n"
    script += "print(d['Version'], d['Author'], sep='|')"
    metadata = as_packager(user, [str(bin_dir / "python"), "-c", script], bin_dir)
    assert metadata.stdout == f"{pubmarine.__version__}|The talk + pubmarine developers\n"


def test_a_build_from_a_writable_checkout_leaves_nothing_behind(
    source: Path, tmp_path: Path
) -> None:
    before = tree(source)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    pip = [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install"]
    installed = run([*pip, "--quiet", str(source)])
    skip_if_offline(installed, "the build backend")
    assert installed.returncode == 0, f"installing the package failed:\n{installed.stderr}"
    assert tree(source) == before, sorted(set(tree(source)) - set(before))


@pytest.fixture
def someone_waiting(spawn: Spawner, code_dir: str) -> Iterator[str]:
    """A socket path where nobody (uid 65534) waits for anyone, in a directory all can reach."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run talk.py as another user, for --list to list")
    directory = shared_dir("talk-waiting-", 0o1777)
    path = os.path.join(directory, "talk.sock")
    talk = spawn_as(spawn, code_dir, NOBODY, "--socket", path)
    wait_for_status(talk, "Waiting for someone")
    yield path
    talk.close()
    shutil.rmtree(directory, ignore_errors=True)


def test_the_installed_command_tells_others_to_run_pubtalk(
    installed_by_a_user: tuple[Path, pwd.struct_passwd], someone_waiting: str
) -> None:
    bin_dir, user = installed_by_a_user
    listed = as_packager(
        user, [str(bin_dir / "pubtalk"), "--list", "--socket", someone_waiting], bin_dir
    )
    assert listed.stdout == (
        f"nobody is waiting for anyone on {someone_waiting}: pubtalk --socket {someone_waiting}\n"
    ), listed.stdout + listed.stderr


@pytest.mark.parametrize("place", ["only root can change", "private"])
def test_a_zipapp_names_the_archive_not_a_path_inside_it(
    someone_waiting: str, tmp_path: Path, place: str
) -> None:
    """The archive is named if the person told can trust it (nobody but root can change it,
    everyone can read it); otherwise only the command's name is."""
    import pubmarine

    app = tmp_path / "app"
    app.mkdir()
    for name in ("talk.py", "pubmarine.py"):
        shutil.copy(REPO_ROOT / name, app / name)
    (app / "__main__.py").write_text("import sys\nimport talk\n\nsys.exit(talk.main())\n")
    home = Path(shared_dir("talk-app-", 0o755)) if place != "private" else tmp_path
    try:
        archive = home / "talk.pyz"
        zipapp.create_archive(app, archive)
        archive.chmod(0o644)
        shutil.rmtree(app)
        version = run([sys.executable, str(archive), "--version"])
        assert version.stdout == f"talk.pyz {pubmarine.__version__}\n", version.stderr
        listed = run([sys.executable, str(archive), "--list", "--socket", someone_waiting])
    finally:
        if home != tmp_path:
            shutil.rmtree(home, ignore_errors=True)
    command = f"python3 {os.path.realpath(archive)}" if place != "private" else "talk.py"
    assert listed.stdout == (
        f"nobody is waiting for anyone on {someone_waiting}: {command} --socket {someone_waiting}\n"
    ), listed.stdout + listed.stderr
