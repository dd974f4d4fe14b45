import logging
import os
from pathlib import Path

import pytest

from osiris.secrets import Secret, SecretError, SecretStore


def test_credentials_directory_is_read_at_use(tmp_path):
    (tmp_path / "winrm-admin").write_text("LAB\\admin:s3cr3t!\n")
    store = SecretStore(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    secret = store.get("winrm-admin")
    assert secret.reveal() == "LAB\\admin:s3cr3t!"
    (tmp_path / "winrm-admin").write_text("rotated")
    assert store.get("winrm-admin").reveal() == "rotated"


def test_files_mapping_wins_and_missing_secret_names_itself(tmp_path):
    (tmp_path / "f").write_text("x")
    store = SecretStore(files={"api": tmp_path / "f"}, environ={})
    assert store.get("api").reveal() == "x"
    with pytest.raises(SecretError, match="secret 'other'.*CREDENTIALS_DIRECTORY"):
        store.get("other")
    store = SecretStore(tmp_path, environ={})
    with pytest.raises(SecretError, match="secret 'gone': cannot read"):
        store.get("gone")


def test_secret_value_never_reaches_repr_str_or_logs(caplog):
    s = Secret("winrm-admin", "hunter2")
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("using %s / %r / %s", s, s, [s])
    assert "hunter2" not in caplog.text and "winrm-admin" in caplog.text
    assert "hunter2" not in f"{s} {s!r} {[s]}"


def test_secret_names_cannot_leave_the_credentials_directory(tmp_path):
    (tmp_path / "creds").mkdir()
    (tmp_path / "outside").write_text("x")
    store = SecretStore(tmp_path / "creds", environ={})
    with pytest.raises(SecretError, match="no paths"):
        store.get("../outside")
    assert store.exists("../outside") is False


def test_an_unchanged_file_is_read_once_and_a_rotated_one_again(tmp_path, monkeypatch):
    path = tmp_path / "winrm-admin"
    path.write_text("LAB\\admin:one\n")
    store = SecretStore(tmp_path, environ={})
    store.SETTLE = 0  # the file counts as settled at once (the default waits 2 s)
    reads = []
    read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **kw: reads.append(self) or read_text(self, *a, **kw))
    assert {store.get("winrm-admin").reveal() for _ in range(50)} == {"LAB\\admin:one"}  # fifty hosts, one sweep
    assert reads == [path]
    path.write_text("LAB\\admin:rotated\n")
    assert store.get("winrm-admin").reveal() == "LAB\\admin:rotated"
    assert reads == [path, path]
    path.unlink()
    with pytest.raises(SecretError, match="secret 'winrm-admin': cannot read"):
        store.get("winrm-admin")


def test_a_same_size_rewrite_that_keeps_the_mtime_is_seen(tmp_path):
    """A file written just now is read at every use: a rewrite within the
    file system's clock tick may leave size and times unchanged."""
    path = tmp_path / "api"
    path.write_text("aaaa")
    before = path.stat()
    store = SecretStore(tmp_path, environ={})
    assert store.get("api").reveal() == "aaaa"
    path.write_text("bbbb")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert store.get("api").reveal() == "bbbb"
