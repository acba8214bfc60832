"""Settings: every variable has a local default, and a bad value names the variable."""

from __future__ import annotations

import base64
import secrets

import pytest

from infra.settings import SettingsError, load, require_position_key, with_database, with_user
from tools import local, processes

BAD_VALUES = {
    "LEDGER_API_PORT": ["x", "0", "70000"],
    "LEDGER_API_WORKERS": ["two", "0", "65"],
    "LEDGER_TOPIC_PARTITIONS": ["0", "1.5"],
    "LEDGER_TOPIC_REPLICATION": ["9"],
    "LEDGER_BATCH_SIZE_MAX": ["0", "1000000"],
    "LEDGER_BATCH_WAIT_MS": ["-1"],
    "LEDGER_WAIT_TIMEOUT_MS_MAX": ["0"],
    "LEDGER_DB_POOL_SIZE_MAX": ["0"],
    "LEDGER_PROJECTOR_LAG_READY_MAX": ["many"],
    "LEDGER_PROJECTOR_METRICS_PORT": ["-1"],
    "LEDGER_DATABASE_URL": ["mysql://x/y"],
    "LEDGER_API_DATABASE_URL": ["http://x"],
    "LEDGER_PROJECTOR_DATABASE_URL": ["x"],
    "LEDGER_TRANSACTIONS_TOPIC": ["a b", "t" * 201, "ledger/transactions"],
    "LEDGER_OUTCOMES_TOPIC": ["é"],
    "LEDGER_LOG_LEVEL": ["LOUD"],
    "LEDGER_KAFKA_HEAP": ["lots", "768", "m"],
    "LEDGER_POSITION_KEY": ["x", "A" * 42, "A" * 44, "!" * 43, "A" * 43 + "==", "A" * 42 + "\x00", "A" * 64],
}


def test_defaults_point_at_the_local_services() -> None:
    cfg = load({})
    assert cfg.kafka_bootstrap == "127.0.0.1:9092"
    assert cfg.database_url == "postgresql://postgres@127.0.0.1:5433/ledger"
    assert cfg.api_database_url == "postgresql://ledger_api@127.0.0.1:5433/ledger"
    assert cfg.projector_database_url == "postgresql://ledger_projector@127.0.0.1:5433/ledger"
    assert (cfg.transactions_topic, cfg.outcomes_topic) == ("ledger.transactions", "ledger.outcomes")
    assert (cfg.api_port, cfg.api_workers, cfg.wait_timeout_ms_max) == (8000, 1, 30_000)
    assert not cfg.kafka_external and not cfg.database_external
    assert cfg.position_key is None


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, values in BAD_VALUES.items() for v in values])
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load({name: value})


def test_the_roles_connect_to_the_owners_host_and_database_without_its_password() -> None:
    cfg = load({"LEDGER_DATABASE_URL": "postgresql://owner:pw@db.example:6543/ledger",
                "LEDGER_TRANSACTIONS_TOPIC": "t.tx", "LEDGER_LOG_LEVEL": "debug"})
    assert cfg.api_database_url == "postgresql://ledger_api@db.example:6543/ledger"
    assert cfg.database_external and cfg.transactions_topic == "t.tx" and cfg.log_level == "DEBUG"


def test_the_position_key_is_32_bytes_in_either_base64_and_never_shown() -> None:
    key = secrets.token_bytes(32)
    for spelled in (base64.urlsafe_b64encode(key).decode().rstrip("="), base64.b64encode(key).decode()):
        cfg = load({"LEDGER_POSITION_KEY": spelled})
        assert cfg.position_key == key and require_position_key(cfg, "the API") == key
        assert spelled.rstrip("=") not in repr(cfg) and "position_key" not in repr(cfg)
    with pytest.raises(SettingsError, match="LEDGER_POSITION_KEY must be set for the API"):
        require_position_key(load({}), "the API")


def test_a_bad_position_key_is_not_echoed() -> None:
    bad = "s3cr3t" * 7 + "!"
    with pytest.raises(SettingsError) as caught:
        load({"LEDGER_POSITION_KEY": bad})
    assert bad not in str(caught.value)


def test_a_local_run_makes_its_position_key_once_and_keeps_it(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(local, "DATA", tmp_path / ".data")
    made = processes.position_key(load({}))
    assert processes.position_key(load({})) == made
    assert load({"LEDGER_POSITION_KEY": made}).position_key is not None
    kept = tmp_path / ".data" / "position_key"
    assert kept.read_text() == made and kept.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in kept.parent.iterdir()] == ["position_key"]  # no draft left behind
    given = base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")
    assert processes.position_key(load({"LEDGER_POSITION_KEY": given})) == given



def test_a_multi_host_url_keeps_every_host_for_the_roles_and_other_databases() -> None:
    hosts = "127.0.0.1:15431,127.0.0.1:15432"
    cfg = load({"LEDGER_DATABASE_URL": f"postgresql://postgres@{hosts}/ledger?target_session_attrs=read-write"})
    assert cfg.api_database_url == f"postgresql://ledger_api@{hosts}/ledger?target_session_attrs=read-write"
    assert with_database(cfg.database_url, "postgres") == \
        f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"
    assert with_user("postgresql://o:p@[::1]:5432/ledger", "r") == "postgresql://r@[::1]:5432/ledger"
