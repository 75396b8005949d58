"""Secret references in the config, and the Secret type that never shows its value."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import pytest
from pydantic import BaseModel

from syncd.errors import ConfigError, ExitCode
from syncd.secrets import (
    MASK,
    Secret,
    check_literal_secret_permissions,
    is_secret_reference,
    known_secret_values,
    resolve_secret,
)

VALUE = "s3cr3t-Value~with+plus/slash"


def test_env_reference_resolves_to_the_variable() -> None:
    s = resolve_secret("${BC_SECRET}", config_path=None, env={"BC_SECRET": VALUE})
    assert s.reveal() == VALUE


def test_missing_env_var_names_variable_and_key() -> None:
    with pytest.raises(ConfigError) as e:
        resolve_secret("${BC_SECRET}", config_path=None, env={}, key="businesscentral.auth.client_secret")
    assert "BC_SECRET" in str(e.value)
    assert "businesscentral.auth.client_secret" in str(e.value)
    assert e.value.exit_code == ExitCode.CONFIG


def test_empty_env_var_is_an_error_not_an_empty_secret() -> None:
    with pytest.raises(ConfigError, match="BC_SECRET is set but empty"):
        resolve_secret("${BC_SECRET}", config_path=None, env={"BC_SECRET": ""})


def test_env_reference_inside_other_text_is_rejected() -> None:
    with pytest.raises(ConfigError, match="whole value"):
        resolve_secret("pre${BC_SECRET}", config_path=None, env={"BC_SECRET": VALUE})


def test_file_reference_strips_exactly_one_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "one").write_text(VALUE + "\n")
    (tmp_path / "two").write_text(VALUE + "\n\n")
    (tmp_path / "crlf").write_bytes(VALUE.encode() + b"\r\n")
    assert resolve_secret(f"file:{tmp_path / 'one'}", config_path=None).reveal() == VALUE
    assert resolve_secret(f"file:{tmp_path / 'two'}", config_path=None).reveal() == VALUE + "\n"
    assert resolve_secret(f"file:{tmp_path / 'crlf'}", config_path=None).reveal() == VALUE


def test_relative_file_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "bc").write_text(VALUE)
    config = tmp_path / "syncd.yaml"
    assert resolve_secret("file:secrets/bc", config_path=config).reveal() == VALUE


def test_missing_file_error_names_path_and_key(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(ConfigError) as e:
        resolve_secret(f"file:{path}", config_path=None, key="superoffice.auth.password")
    assert str(path) in str(e.value)
    assert "superoffice.auth.password" in str(e.value)


def test_unreadable_file_error_names_path_never_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "locked"
    path.write_text(VALUE)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make the read fail the way it fails for syncd's user

        def deny(self: Path) -> bytes:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(ConfigError) as e:
        resolve_secret(f"file:{path}", config_path=None)
    assert str(path) in str(e.value)
    assert "not readable" in str(e.value)
    assert VALUE not in str(e.value)


def test_directory_or_empty_or_binary_file_is_rejected_without_content(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe" + VALUE.encode())
    for name, why in (("", "is a directory"), ("empty", "is empty"), ("binary", "not UTF-8")):
        with pytest.raises(ConfigError, match=why) as e:
            resolve_secret(f"file:{tmp_path / name}", config_path=None)
        assert VALUE not in str(e.value)


def test_credential_reads_from_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "bc-secret").write_text(VALUE + "\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert resolve_secret("credential:bc-secret", config_path=None, env=env).reveal() == VALUE


def test_credential_without_credentials_directory_explains_loadcredential() -> None:
    with pytest.raises(ConfigError) as e:
        resolve_secret(
            "credential:bc-secret", config_path=None, env={}, key="businesscentral.auth.client_secret"
        )
    text = str(e.value)
    assert "CREDENTIALS_DIRECTORY" in text
    assert "LoadCredential=bc-secret:" in text
    assert "businesscentral.auth.client_secret" in text


def test_missing_credential_file_names_directory_and_explains_loadcredential(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_secret("credential:bc-secret", config_path=None, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert str(tmp_path) in str(e.value)
    assert "LoadCredential=bc-secret:" in str(e.value)


def test_credential_name_cannot_escape_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a valid credential name"):
        resolve_secret(
            "credential:../etc/shadow", config_path=None, env={"CREDENTIALS_DIRECTORY": str(tmp_path)}
        )


def test_literal_value_is_the_secret() -> None:
    assert resolve_secret(VALUE, config_path=None).reveal() == VALUE
    assert not is_secret_reference(VALUE)
    assert (
        is_secret_reference("${X}") and is_secret_reference("file:/x") and is_secret_reference("credential:x")
    )


def test_empty_literal_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"superoffice\.auth\.password is empty"):
        resolve_secret("", config_path=None, key="superoffice.auth.password")


def test_secret_never_shows_its_value() -> None:
    s = Secret(VALUE)
    shown = [repr(s), str(s), f"{s}", f"{s!r}", "%s" % s, "{}".format(s), repr([s]), repr({"k": s})]  # noqa: UP031, UP032
    for text in shown:
        assert VALUE not in text
    assert repr(s) == f"Secret('{MASK}')"
    assert s.reveal() == VALUE


def test_secret_cannot_be_pickled_but_copies_are_itself() -> None:
    s = Secret(VALUE)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(s)
    with pytest.raises(TypeError):
        pickle.dumps({"nested": [s]})
    assert copy.copy(s) is s
    assert copy.deepcopy({"a": s})["a"] is s


def test_secret_equality_compares_values() -> None:
    assert Secret(VALUE) == Secret(VALUE)
    assert Secret(VALUE) != Secret(VALUE + "x")
    assert Secret(VALUE) != VALUE  # never equal to the bare string: no accidental comparisons


def test_resolved_secrets_and_their_encoded_forms_are_known_for_redaction() -> None:
    resolve_secret("${X}", config_path=None, env={"X": "env-secret-1234"})
    Secret("a+b/c=d-literal")
    known = known_secret_values()
    assert "env-secret-1234" in known
    assert "a+b/c=d-literal" in known
    assert "a%2Bb%2Fc%3Dd-literal" in known  # as it appears in form bodies


def test_very_short_values_are_not_registered_for_redaction() -> None:
    Secret("ab")
    assert "ab" not in known_secret_values()


def test_permission_warning_for_group_readable_config_with_literal_secret(tmp_path: Path) -> None:
    config = tmp_path / "syncd.yaml"
    config.write_text("password: x\n")
    config.chmod(0o640)
    resolve_secret("literal-secret-value", config_path=config, key="superoffice.auth.password")
    warning = check_literal_secret_permissions(config)
    assert warning is not None
    assert "superoffice.auth.password" in warning
    assert str(config) in warning
    assert "chmod 600" in warning
    assert "0640" in warning
    assert "literal-secret-value" not in warning


def test_no_permission_warning_when_private_or_only_references(tmp_path: Path) -> None:
    private = tmp_path / "private.yaml"
    private.write_text("x")
    private.chmod(0o600)
    resolve_secret("literal-secret-value", config_path=private, key="k")
    assert check_literal_secret_permissions(private) is None

    shared = tmp_path / "shared.yaml"
    shared.write_text("x")
    shared.chmod(0o644)
    resolve_secret("${X}", config_path=shared, env={"X": "from-env-xyz"}, key="k")
    assert check_literal_secret_permissions(shared) is None
    assert check_literal_secret_permissions(shared, literal_keys=["a.b"]) is not None


class _AuthModel(BaseModel):
    username: str
    password: Secret


def test_pydantic_secret_field_resolves_references_from_context(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(VALUE + "\n")
    m = _AuthModel.model_validate(
        {"username": "u", "password": "file:pw"}, context={"config_path": tmp_path / "c.yaml"}
    )
    assert m.password.reveal() == VALUE
    assert VALUE not in repr(m)
    assert m.model_dump() == {"username": "u", "password": MASK}
    assert VALUE not in m.model_dump_json()


def test_pydantic_error_names_field_and_does_not_echo_a_numeric_secret() -> None:
    with pytest.raises(ConfigError) as e:
        _AuthModel.model_validate({"username": "u", "password": 84736251})
    assert "password" in str(e.value)
    assert "84736251" not in str(e.value)
    with pytest.raises(ConfigError, match="MISSING_VAR"):
        _AuthModel.model_validate({"username": "u", "password": "${MISSING_VAR}"}, context={"env": {}})


@pytest.mark.parametrize(
    ("value", "env", "expect"),
    [
        ("${SO_PW}", {}, "SO_PW"),
        ("${SO_PW}", {"SO_PW": ""}, "SO_PW"),
        ("credential:so-pw", {}, "LoadCredential=so-pw"),
        ("file:/nonexistent/so-pw", {}, "/nonexistent/so-pw"),
    ],
)
def test_every_error_names_key_and_reference(value: str, env: dict[str, str], expect: str) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_secret(value, config_path=None, env=env, key="superoffice.auth.password")
    assert "superoffice.auth.password" in str(e.value)
    assert expect in str(e.value)
