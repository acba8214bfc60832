"""Settings: every variable has a local default, and a bad value names the variable."""

from __future__ import annotations

import pytest

from infra.settings import SettingsError, load

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


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, values in BAD_VALUES.items() for v in values])
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load({name: value})


def test_the_roles_connect_to_the_owners_host_and_database_without_its_password() -> None:
    cfg = load({"LEDGER_DATABASE_URL": "postgresql://owner:pw@db.example:6543/ledger",
                "LEDGER_TRANSACTIONS_TOPIC": "t.tx", "LEDGER_LOG_LEVEL": "debug"})
    assert cfg.api_database_url == "postgresql://ledger_api@db.example:6543/ledger"
    assert cfg.database_external and cfg.transactions_topic == "t.tx" and cfg.log_level == "DEBUG"
