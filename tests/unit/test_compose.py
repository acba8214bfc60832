"""The compose files, checked without a container engine (none runs where `make test` does).

Each file must be valid against the Compose Specification's own JSON schema (vendored unchanged in
`infra/compose/compose-spec.json`, its source in `infra/compose/README.md`), and every `LEDGER_*` variable a
service is given must be one that `infra/settings.py`, the one reader of the environment, reads and accepts.
Which names settings reads is not listed here: `load()` is run on each service's own environment, and the
names it asks for are recorded, so a variable added to settings is known here at once.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from infra import settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.scale.yml")
SCHEMA = ROOT / "infra" / "compose" / "compose-spec.json"
# What the operator exports before `docker compose up` (the files' `${NAME:?...}`): secrets, made up here.
SHELL = {
    "LEDGER_ADMIN_TOKEN": "admin-token",
    "LEDGER_POSITION_KEY": secrets.token_urlsafe(settings.POSITION_KEY_BYTES),
    "LEDGER_POSTGRES_PASSWORD": "owner-password",
    "LEDGER_API_DB_PASSWORD": "api-password",
    "LEDGER_PROJECTOR_DB_PASSWORD": "projector-password",
}
# Compose's interpolation: $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME?err}.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def load_compose(name: str) -> dict[str, Any]:
    # PyYAML reads YAML 1.1 and compose YAML 1.2: they differ on unquoted yes/no/on/off, which these files quote.
    document = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(document, dict), name
    return document


def validator_for(declared: str) -> type[jsonschema.protocols.Validator]:
    """The validator of the draft a schema declares. The Compose schema writes Draft 7's URI as
    `https://json-schema.org/draft-07/schema`, which jsonschema knows only as `http://...schema#`."""
    canonical = "http://" + declared.split("://", 1)[-1].rstrip("#") + "#"
    found = jsonschema.validators.validator_for({"$schema": canonical}, default=None)
    assert found is not None, f"no validator for the draft {declared!r}"
    return found


def schema_errors(document: Mapping[str, Any]) -> list[str]:
    """Where `document` breaks the Compose Specification, validated by the draft its schema declares."""
    schema = json.loads(SCHEMA.read_text())
    validator_class = validator_for(schema["$schema"])
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in validator.iter_errors(document)]


def interpolate(value: str) -> str:
    """`value` with the operator's variables (SHELL) substituted as compose would."""
    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        if name in SHELL:
            return SHELL[name]
        if op in (":-", "-"):
            return arg
        raise AssertionError(f"${{{name}}} needs a value: add it to SHELL in {Path(__file__).name}")
    return _INTERPOLATION.sub(substitute, value)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment` (mapping or list form) as its process would see it."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    env = {}
    for name, value in raw.items():
        if value is None:  # `NAME:` alone passes the shell's value through
            value = SHELL.get(name, "")
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[name] = interpolate(str(value))
    return env


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every name asked of it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.asked: set[str] = set()
        self.listed = False

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        self.listed = True
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def settings_problems(document: Mapping[str, Any]) -> list[str]:
    """Each `LEDGER_*` variable a service is given that settings does not read, or refuses, in that service."""
    problems = []
    for name, service in (document.get("services") or {}).items():
        env = RecordingEnv(environment(service))
        try:
            settings.load(env)
        except ValueError as e:  # a SettingsError, or a value settings failed to check (a defect of its own)
            problems.append(f"{name}: {type(e).__name__}: {e}")
            continue
        # Names read by listing the environment (a prefix scan) would escape the record: say so, not pass.
        assert not env.listed, "infra/settings.py lists the environment: this test must learn how it reads it"
        problems += [f"{name}: {variable} is set but infra/settings.py never reads it"
                     for variable in sorted(env.values) if variable.startswith("LEDGER_") and variable not in env.asked]
    return problems


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_the_compose_file_is_valid_against_the_compose_specification(name: str) -> None:
    assert schema_errors(load_compose(name)) == []


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_ledger_variable_set_is_one_settings_reads_and_accepts(name: str) -> None:
    document = load_compose(name)
    assert any(v.startswith("LEDGER_") for s in document["services"].values() for v in environment(s)), name
    assert settings_problems(document) == []


def test_settings_is_asked_for_names_from_the_module_itself() -> None:
    """The recording sees what settings reads: every `"LEDGER_..."` literal in its source is asked for."""
    env = RecordingEnv({})
    settings.load(env)
    literals = set(re.findall(r'"(LEDGER_[A-Z0-9_]+)"', Path(settings.__file__).read_text()))
    assert literals and literals <= env.asked, sorted(literals - env.asked)


# Broken copies, made in memory: each check must be able to fail.

def _api(document: dict[str, Any]) -> dict[str, Any]:
    services = document["services"]
    return services["api"] if "api" in services else services["api-1"]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_an_unknown_key_is_refused(name: str) -> None:
    document = copy.deepcopy(load_compose(name))
    _api(document)["enviroment"] = {"LEDGER_API_PORT": "8000"}
    errors = schema_errors(document)
    assert any("enviroment" in error for error in errors), errors


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_a_value_outside_the_specification_is_refused(name: str) -> None:
    document = copy.deepcopy(load_compose(name))
    _api(document)["depends_on"] = {"setup": {"condition": "service_ready"}}
    _api(document)["ports"] = 8000
    errors = schema_errors(document)
    assert any("service_ready" in error for error in errors), errors
    assert any(error.startswith(f"services/{'api' if 'api' in document['services'] else 'api-1'}/ports")
               for error in errors), errors


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_a_misspelled_ledger_variable_is_refused(name: str) -> None:
    document = copy.deepcopy(load_compose(name))
    api = _api(document)
    api["environment"] = {**environment(api), "LEDGER_KAFKA_BOOTSTRAPS": "kafka:9092"}
    assert any("LEDGER_KAFKA_BOOTSTRAPS is set but" in p for p in settings_problems(document))


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_a_value_settings_refuses_is_refused(name: str) -> None:
    document = copy.deepcopy(load_compose(name))
    api = _api(document)
    api["environment"] = {**environment(api), "LEDGER_TOPIC_PARTITIONS": 0}
    problems = settings_problems(document)
    assert any("LEDGER_TOPIC_PARTITIONS must be between 1 and 1024, got 0" in p for p in problems), problems


def test_a_variable_the_shell_does_not_give_is_refused() -> None:
    with pytest.raises(AssertionError, match="LEDGER_NOT_EXPORTED"):
        interpolate("${LEDGER_NOT_EXPORTED:?set it}")
    assert interpolate("a$${B}-${UNSET:-d}-${LEDGER_ADMIN_TOKEN}") == "a${B}-d-admin-token"
