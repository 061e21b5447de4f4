"""End-to-end tests of the package as people get it: the sdist, and an install beside others.

These build and install with pip and ``build``, in throwaway directories under TMPDIR, and need
PyPI (or the configured index) for the build backend and for pubmarine 0.4.3: a test skips,
saying so, when what it has to download cannot be had.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from terminal import (
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
    junk = shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
    )
    shutil.copytree(REPO_ROOT, copy, ignore=junk)
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
    missing = sorted(name for name in shipped_files() if not (sdist / name).is_file())
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
