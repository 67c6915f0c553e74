"""images/pip_conf.py: the host's pip settings become an image's, needing no host file."""

from __future__ import annotations

import configparser
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.services import REPO


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pip_conf", REPO / "images" / "pip_conf.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pip_conf"] = module
    spec.loader.exec_module(module)
    return module


pip_conf = _load()

# What `pip config list` printed on a host with one entry of each kind.
HOST_CONFIG = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/old.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple https://mirror.example/simple'
global.index-url='https://user:secret@private.example/simple'
global.client-cert='/root/client.pem'
global.log='/var/log/pip.log'
global.cache-dir='/root/.cache/pip'
global.proxy='http://bob:hunter2@proxy.example:3128'
global.trusted-host='mirror.example'
install.requirement='/srv/requirements.txt'
install.target='/srv/site'
install.src='/srv/src'
install.prefix='/usr/local'
install.root='/'
install.report='/tmp/report.json'
install.python='/usr/bin/python3'
install.editable='/srv/project'
install.no-binary=':none:'
"""


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host file system holding the files the configuration names."""
    root = tmp_path / "host"
    files = {
        "etc/ssl/certs/ca-certificates.crt": "CA BUNDLE\n",
        "etc/xdg/pip/constraints.txt": "torch<=2.14.1\n-c more-constraints.txt\n",
        "etc/xdg/pip/more-constraints.txt": "numpy<3\n",
        "srv/requirements.txt": "--requirement /srv/base.txt\nrequests\n",
        "srv/base.txt": "urllib3\n",
        "root/client.pem": "PRIVATE\n",
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    (root / "opt" / "wheels").mkdir(parents=True)
    return root


def _translate(host: Path, text: str = HOST_CONFIG) -> pip_conf.Translation:
    return pip_conf.translate(pip_conf.read_pip_config_list(text.splitlines()), host)


def _config(translation: pip_conf.Translation) -> configparser.ConfigParser:
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read_string(translation.text())
    return parsed


def test_the_variables_win_over_the_files_as_in_pip(host: Path) -> None:
    config = _config(_translate(host))

    assert config["global"]["cert"] == "/etc/ssl/certs/ca-certificates.crt"
    assert config["global"]["default-timeout"] == "180"


def test_files_pip_reads_are_copied_at_the_same_path(host: Path) -> None:
    translation = _translate(host)
    config = _config(translation)

    assert config["global"]["constraint"] == "/etc/xdg/pip/constraints.txt"
    assert config["install"]["requirement"] == "/srv/requirements.txt"
    assert set(map(str, translation.copies)) == {
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/xdg/pip/constraints.txt",
        "/etc/xdg/pip/more-constraints.txt",  # included with -c
        "/srv/requirements.txt",
        "/srv/base.txt",  # included with --requirement
    }


def test_every_file_the_image_config_names_is_in_the_image(host: Path, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    translation = _translate(host)

    pip_conf.install(translation, rootfs, host)

    config = _config(translation)
    for section in config.sections():
        for key in ("cert", "constraint", "requirement", "find-links"):
            for item in config[section].get(key, "").split():
                assert (rootfs / item.lstrip("/")).is_file(), f"{section}.{key} {item}"
    copied = rootfs / "etc" / "xdg" / "pip" / "constraints.txt"
    assert copied.read_text() == (host / "etc/xdg/pip/constraints.txt").read_text()


def test_host_folders_places_and_credentials_are_left_out(host: Path) -> None:
    translation = _translate(host)
    config = _config(translation)
    text = translation.text()

    assert "find-links" not in config["global"]
    assert config["global"]["extra-index-url"] == "https://mirror.example/simple"
    assert "index-url" not in config["global"]  # it carried a password
    for key in ("client-cert", "log", "cache-dir", "proxy"):
        assert key not in config["global"], key
    for key in ("target", "src", "prefix", "root", "report", "python", "editable"):
        assert key not in config["install"], key
    for secret in ("secret", "hunter2", "PRIVATE"):
        assert secret not in text
    assert config["global"]["trusted-host"] == "mirror.example"
    assert config["install"]["no-binary"] == ":none:"


def test_each_decision_on_a_host_path_is_said_in_one_line(host: Path) -> None:
    notes = _translate(host).notes

    def said(prefix: str) -> bool:
        return any(note.startswith(prefix) for note in notes)

    assert said("copied constraint /etc/xdg/pip/constraints.txt")
    assert said("copied requirement /srv/requirements.txt")
    assert said("copied cert /etc/ssl/certs/ca-certificates.crt")
    assert said("left out find-links /opt/wheels")
    assert said("left out extra-index-url file:///opt/pypi/simple")
    assert said("left out index-url private.example")
    assert said("left out client-cert")
    for key in ("log", "cache-dir", "target", "src", "prefix", "root", "report", "python"):
        assert said(f"left out {key} "), key
    assert said("left out proxy")
    assert all("\n" not in note for note in notes)


def test_a_named_file_missing_on_the_host_is_left_out(host: Path) -> None:
    text = "global.constraint='/nowhere/constraints.txt relative.txt'\n"
    translation = _translate(host, text)

    assert "constraint" not in translation.text()
    assert translation.copies == []
    assert any(note.startswith("left out constraint /nowhere") for note in translation.notes)
    assert any(note.startswith("left out constraint relative.txt") for note in translation.notes)


def test_the_command_writes_the_config_and_the_files(
    host: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    # The command reads the real host's files: name one of the test's by its full path.
    text = f"global.constraint='{host / 'etc/xdg/pip/constraints.txt'}'\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))

    assert pip_conf.main(["pip_conf.py", str(rootfs)]) == 0

    out, err = capsys.readouterr()
    assert f"constraint = {host}/etc/xdg/pip/constraints.txt" in out
    assert (rootfs / str(host).lstrip("/") / "etc/xdg/pip/constraints.txt").is_file()
    assert "build-base-image: pip: copied constraint" in err


def test_the_image_keeps_its_own_ca_bundle(host: Path, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc/ssl/certs").mkdir(parents=True)
    (rootfs / "etc/ssl/certs/ca-certificates.crt").write_text("IMAGE BUNDLE\n")
    settings = pip_conf.read_pip_config_list(HOST_CONFIG.splitlines())

    translation = pip_conf.translate(settings, host, image_root=rootfs)
    pip_conf.install(translation, rootfs, host)

    assert _config(translation)["global"]["cert"] == "/etc/ssl/certs/ca-certificates.crt"
    assert (rootfs / "etc/ssl/certs/ca-certificates.crt").read_text() == "IMAGE BUNDLE\n"
    assert any(note.startswith("kept cert") for note in translation.notes)
