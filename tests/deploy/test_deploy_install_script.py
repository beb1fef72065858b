"""deploy/ci/install-prometheus.sh, run against fake apt-get/id/promtool on a private PATH so that
it installs nothing: every branch must exit 0 and say what it did."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not on PATH")


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path) -> Path:
    """A PATH holding only what the script needs besides the fakes each test adds."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for tool in ("head", "chmod"):
        real = shutil.which(tool)
        if real:
            (directory / tool).symlink_to(real)
    return directory


def run_script(root: Path, bin_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(root / "deploy" / "ci" / "install-prometheus.sh")],
                          env={"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/")},
                          capture_output=True, text=True, timeout=30)


def test_the_script_is_valid_bash(root):
    assert subprocess.run([BASH, "-n", str(root / "deploy" / "ci" / "install-prometheus.sh")],
                          timeout=30).returncode == 0


def test_already_installed_tools_are_left_alone(root, bin_dir, tmp_path):
    _fake(bin_dir, "promtool", "exit 0")
    _fake(bin_dir, "prometheus", "exit 0")
    _fake(bin_dir, "apt-get", f"echo called >> {tmp_path}/apt.log")
    out = run_script(root, bin_dir)
    assert out.returncode == 0
    assert f"already installed: {bin_dir}/promtool" in out.stderr
    assert not (tmp_path / "apt.log").exists()


def test_without_apt_get_it_skips(root, bin_dir):
    out = run_script(root, bin_dir)
    assert out.returncode == 0 and "apt-get not available; skipping" in out.stderr


def test_without_root_it_skips(root, bin_dir, tmp_path):
    _fake(bin_dir, "id", "echo 1000")
    _fake(bin_dir, "apt-get", f"echo called >> {tmp_path}/apt.log")
    out = run_script(root, bin_dir)
    assert out.returncode == 0 and "not root; skipping" in out.stderr
    assert not (tmp_path / "apt.log").exists()


def test_as_root_it_installs_the_package_without_recommends(root, bin_dir, tmp_path):
    _fake(bin_dir, "id", "echo 0")
    _fake(bin_dir, "apt-get", f'echo "$*" >> {tmp_path}/apt.log\n'
                              f'if [ "$1" = install ]; then printf "#!{BASH}\\necho promtool, '
                              f'version 9.9\\n" > {bin_dir}/promtool; chmod +x {bin_dir}/promtool;'
                              " fi")
    out = run_script(root, bin_dir)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "apt.log").read_text().splitlines() == [
        "update -qq", "install -y -qq --no-install-recommends prometheus"]
    assert f"installed: {bin_dir}/promtool (promtool, version 9.9)" in out.stderr


def test_a_failed_install_is_not_fatal(root, bin_dir):
    _fake(bin_dir, "id", "echo 0")
    _fake(bin_dir, "apt-get", '[ "$1" = update ]')
    out = run_script(root, bin_dir)
    assert out.returncode == 0 and "apt-get install prometheus failed; skipping" in out.stderr
