"""Console secrets may live in files: ``password_hash_file`` and ``token_sha256_file``
read the first line of an absolute path, and a bad file is a config error that names
the key, never the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.app.settings import ConfigError, load_settings

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
DIGEST = "ab" * 32


def _config(tmp_path: Path, users: str) -> Path:
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nadmin:\n  enabled: true\n{users}",
                   encoding="utf-8")
    return cfg


def test_hash_and_digest_come_from_their_files(tmp_path):
    (tmp_path / "alice.hash").write_text(HASH + "\n", encoding="utf-8")
    (tmp_path / "ci.sha256").write_text(DIGEST + "\n", encoding="utf-8")
    settings = load_settings(_config(tmp_path, (
        f"  users:\n    - name: alice\n      role: admin\n"
        f"      password_hash_file: {tmp_path / 'alice.hash'}\n"
        f"  tokens:\n    - name: ci\n      token_sha256_file: {tmp_path / 'ci.sha256'}\n")), {})
    assert settings.admin.users[0].password_hash == HASH
    assert settings.admin.tokens[0].token_sha256 == DIGEST


@pytest.mark.parametrize(("entry", "problem"), [
    ("password_hash_file: {missing}", "password_hash_file .*missing.hash: cannot read it"),
    ("password_hash_file: relative.hash", "password_hash_file must be an absolute path"),
    ("password_hash_file: {empty}", "password_hash_file .*empty.hash is empty"),
    ("password_hash_file: {wrong}", "not an argon2 hash"),
])
def test_a_bad_secret_file_is_a_config_error_naming_the_key(tmp_path, entry, problem):
    (tmp_path / "empty.hash").write_text("\n", encoding="utf-8")
    (tmp_path / "wrong.hash").write_text("hunter2\n", encoding="utf-8")
    line = entry.format(missing=tmp_path / "missing.hash", empty=tmp_path / "empty.hash",
                        wrong=tmp_path / "wrong.hash")
    with pytest.raises(ConfigError, match=problem) as info:
        load_settings(_config(tmp_path, f"  users:\n    - name: alice\n      {line}\n"), {})
    assert "admin.users" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_both_the_value_and_its_file_is_refused(tmp_path):
    (tmp_path / "ci.sha256").write_text(DIGEST, encoding="utf-8")
    with pytest.raises(ConfigError, match="set either token_sha256 or token_sha256_file"):
        load_settings(_config(tmp_path, (
            f"  tokens:\n    - name: ci\n      token_sha256: {DIGEST}\n"
            f"      token_sha256_file: {tmp_path / 'ci.sha256'}\n")), {})
