"""The config file is a public contract: the documented keys load, mistakes are named by key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.config import load_config, parse_config
from syncd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """\
superoffice:
  base_url: http://127.0.0.1:8101/Cust00001/api/v1
  auth: {type: basic, username: syncd, password: pw}
businesscentral:
  base_url: http://127.0.0.1:8102/v2.0/t/production/api/v2.0
  company: CRONUS
  auth: {type: client_credentials, tenant_id: t, client_id: c, client_secret: s, token_url: http://x/t}
mappings:
  - {name: customers, source: contact, target: customers, match: {source: code, target: number}}
"""


def test_example_config_documents_valid_keys() -> None:
    env = {"SO_APP_TOKEN": "a", "SO_SYSTEM_USER_TOKEN": "b", "BC_CLIENT_SECRET": "c"}
    text = (ROOT / "config" / "example.yaml").read_text()
    text = text.replace("file:/etc/syncd/superoffice-private-key.pem", "${SO_KEY}")
    cfg = parse_config(text, env={**env, "SO_KEY": "pem"})
    assert [m.name for m in cfg.mappings] == ["customers", "staff", "key-accounts", "customers-de"]
    assert cfg.company_of(cfg.mappings[-1]) == "CRONUS Deutschland GmbH"
    assert cfg.company_of(cfg.mappings[0]) == "CRONUS USA, Inc."
    assert cfg.businesscentral.limits.requests_per_second < 20  # below BC's 6,000 per 5 minutes
    assert cfg.schedule.interval == 600
    assert cfg.picture.max_bytes == 1_000_000


def test_sandbox_config_loads_and_ledger_is_next_to_it() -> None:
    cfg = load_config(ROOT / "config" / "sandbox.yaml")
    assert cfg.ledger == (ROOT / "config" / "syncd-ledger.sqlite")
    assert cfg.businesscentral.dialect == "v2.0"
    assert cfg.superoffice.context_identifier == "Cust00001"


def test_missing_key_is_named_with_its_line() -> None:
    text = MINIMAL.replace("  base_url: http://127.0.0.1:8102/v2.0/t/production/api/v2.0\n", "")
    with pytest.raises(ConfigError) as err:
        parse_config(text, source="x.yaml")
    assert "businesscentral.base_url" in err.value.message
    assert "x.yaml:4" in err.value.message  # the businesscentral: mapping starts on line 4


def test_wrong_value_in_a_union_names_the_user_key_not_the_internal_tag() -> None:
    text = MINIMAL.replace("username: syncd, ", "")
    with pytest.raises(ConfigError) as err:
        parse_config(text, source="x.yaml")
    assert "superoffice.auth.username" in err.value.message
    assert "x.yaml:3" in err.value.message


def test_unknown_key_is_rejected_not_ignored() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL + "ledgr: /tmp/x\n")
    assert "ledgr" in err.value.message


def test_bad_base_url_says_what_it_must_look_like() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL.replace("/api/v2.0", "/api/v3.0"))
    assert "/api/v2.0" in err.value.message


def test_secret_from_environment_and_missing_variable_is_named() -> None:
    text = MINIMAL.replace("password: pw", 'password: "${SO_PW}"')
    cfg = parse_config(text, env={"SO_PW": "hunter2-secret"})
    assert cfg.superoffice.auth.password.reveal() == "hunter2-secret"  # type: ignore[union-attr]
    assert "hunter2-secret" not in repr(cfg)
    with pytest.raises(ConfigError) as err:
        parse_config(text, env={})
    assert "SO_PW" in str(err.value)


def test_durations_and_sizes_accept_units() -> None:
    text = MINIMAL + "schedule: {interval: 90s}\nlimits: {max_runtime: 1h}\npicture: {max_bytes: 500KB}\n"
    cfg = parse_config(text)
    assert cfg.schedule.interval == 90
    assert cfg.limits.max_runtime == 3600
    assert cfg.picture.max_bytes == 500_000


def test_mapping_needs_a_rule_and_unique_name() -> None:
    with pytest.raises(ConfigError, match="match"):
        parse_config(MINIMAL.replace(", match: {source: code, target: number}", ""))
    dup = MINIMAL + "  - {name: customers, source: person, target: employees, pairs: {'1': E1}}\n"
    with pytest.raises(ConfigError, match="unique"):
        parse_config(dup)


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"x.yaml:2"):
        parse_config("a: 1\nb: c: d\n", source="x.yaml")


def test_ledger_defaults_to_systemd_state_directory() -> None:
    cfg = parse_config(MINIMAL, env={"STATE_DIRECTORY": "/var/lib/syncd"})
    assert str(cfg.ledger) == "/var/lib/syncd/ledger.sqlite"
