"""The `ledger` command line for operators.

    ledger replay [--until PARTITION-OFFSET[,...] | --until-time RFC3339] [--no-progress]
    ledger verify [--tenant T ...] [--chain]
    ledger status [--json]
    ledger position TENANT TOKEN
    ledger tenants create ID [--name NAME]
    ledger keys create TENANT --scopes read,write
    ledger keys revoke TENANT KEY_ID

Settings come from the same `LEDGER_*` variables as the services (owner connection: LEDGER_DATABASE_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import sys
from datetime import datetime

from infra import settings as settings_mod
from ledger.errors import LedgerError
from ledger.positions import PositionKey, parse_raw
from ledger.validation import check_tenant
from ops import registry, status
from ops.rebuild import rebuild
from ops.verify import chain_disagreements, verify
from projections.pipeline import GC_THRESHOLDS


def _until(raw: str | None) -> dict[int, int] | None:
    if raw is None:
        return None
    positions = [parse_raw(text.strip(), "--until") for text in raw.split(",")]
    return {p.partition: p.offset + 1 for p in positions}


def _time(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    value = datetime.fromisoformat(raw)
    if value.tzinfo is None:
        raise SystemExit("--until-time needs a time zone, e.g. 2026-11-27T10:00:00Z")
    return value


async def _replay(args: argparse.Namespace, cfg: settings_mod.Settings) -> int:
    until, until_time = _until(args.until), _time(args.until_time)
    done = await rebuild(cfg.database_url, cfg.kafka_bootstrap, cfg.transactions_topic, until, until_time,
                         show_progress=not args.no_progress)
    rate = done.records / done.seconds if done.seconds else 0.0
    print(f"\nreplayed {done.records} events into {done.schema} in {done.seconds:.1f} s ({rate:,.0f} events/s)")
    print(f"switched: the API and projector now use {done.schema}" if done.switched
          else f"stopped early as asked; {done.schema} is left as a shadow (run `ledger replay` again to finish)")
    return 0


async def _verify(args: argparse.Namespace, cfg: settings_mod.Settings) -> int:
    chain_problems = await chain_disagreements(cfg.database_url, args.tenant) if args.chain else []
    for problem in chain_problems:
        print(f"CHAIN BROKEN — {problem}")
    verdict = await verify(cfg.database_url, cfg.kafka_bootstrap, cfg.transactions_topic, args.tenant)
    print(f"replayed {verdict.replayed} events up to {verdict.snapshot}")
    if verdict.identical and not chain_problems:
        print("identical: the projection is exactly what the log says" + ("; every chain whole" if args.chain else ""))
        return 0
    for check, rows in verdict.differences.items():
        print(f"\nDIFFERENT — {check}:")
        for row in rows:
            print(f"  {row}")
    return 1


async def _status(args: argparse.Namespace, cfg: settings_mod.Settings) -> int:
    parts = await status.partitions(cfg.database_url, cfg.kafka_bootstrap, cfg.transactions_topic)
    group = args.group or cfg.projector_group
    members = await status.group_members(cfg.kafka_bootstrap, group)
    limits = await status.limits(cfg.database_url)
    defaults = {"writes_per_s": cfg.tenant_writes_per_s, "reads_per_s": cfg.tenant_reads_per_s,
                "burst_s": cfg.tenant_burst_s}
    if args.json:
        print(json.dumps({"partitions": [dataclasses.asdict(p) for p in parts], "members": members,
                          "limits": {"defaults": defaults, **limits}}))
        return 0
    print(f"{'partition':>9} {'log end':>10} {'projected':>10} {'lag':>8} {'lag s':>7}")
    for p in parts:
        lag_s = "?" if p.lag_seconds is None else f"{p.lag_seconds:.1f}"
        print(f"{p.partition:>9} {p.log_end:>10} {p.projected:>10} {p.lag_events:>8} {lag_s:>7}")
    print(f"\nprojector group {group!r}: {len(members)} member(s)")
    for m in members:
        print(f"  {m['client_id']} {m['host']} {m['member_id']} ({m['state']})")
    print(f"\nlimits per tenant (each of {limits['api_processes']} live API process(es) enforces its share): "
          f"default {defaults['writes_per_s']} writes/s, {defaults['reads_per_s']} reads/s, burst "
          f"{defaults['burst_s']} s")
    for row in limits["custom"]:
        print(f"  {row['tenant']}: {row['writes_per_s']} writes/s, {row['reads_per_s']} reads/s, "
              f"burst {row['burst_s']} s")
    return 0


async def _position(args: argparse.Namespace, cfg: settings_mod.Settings) -> int:
    key = PositionKey(settings_mod.require_position_key(cfg, "`ledger position`"))
    print(key.parse(check_tenant(args.tenant), args.token, "token").raw())
    return 0


async def _tenants(args: argparse.Namespace, cfg: settings_mod.Settings) -> int:
    outcome = await registry.create_tenant(cfg, args.id, args.name)
    if outcome["status"] != "committed":
        print(f"ledger: tenant {args.id} not created: {outcome['reason']}", file=sys.stderr)
        return 1
    print(f"created tenant {args.id} (position {outcome['position']})")
    return 0


async def _keys(args: argparse.Namespace, cfg: settings_mod.Settings) -> int:
    if args.keys_command == "create":
        key_id, key = await registry.create_key(cfg.database_url, args.tenant, args.scopes.split(","))
        print(f"key id: {key_id}\nkey:    {key}\n(shown once; only its hash is stored)")
    else:
        await registry.revoke_key(cfg.database_url, args.tenant, args.key_id)
        print(f"revoked {args.key_id}; every API instance refuses it within a second")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="ledger", description="Operate the wallet ledger.",
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="rebuild the projections from the log into a shadow schema, "
                                                "then switch to it atomically")
    replay.add_argument("--until", help="stop after these positions (PARTITION-OFFSET as `ledger status` counts "
                                        "them, comma-separated); no switch")
    replay.add_argument("--until-time", help="stop at the first record after this RFC 3339 time; no switch")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay.set_defaults(run=_replay)
    check = commands.add_parser("verify", help="recompute the projections from the log and compare; exit 1 "
                                               "with a diff unless identical")
    check.add_argument("--tenant", action="append", help="only these tenants (repeatable)")
    check.add_argument("--chain", action="store_true", help="also recompute every tenant's hash chain from the "
                       "projection's rows and name the first link that disagrees (the replay compares it with the log)")
    check.set_defaults(run=_verify)
    state = commands.add_parser("status", help="log end, projected position and lag per partition")
    state.add_argument("--group", help="the projectors' consumer group (default: LEDGER_PROJECTOR_GROUP)")
    state.add_argument("--json", action="store_true")
    state.set_defaults(run=_status)
    position = commands.add_parser("position", help="the PARTITION-OFFSET of a position token a tenant was "
                                                    "given (needs LEDGER_POSITION_KEY)")
    position.add_argument("tenant")
    position.add_argument("token")
    position.set_defaults(run=_position)
    tenants = commands.add_parser("tenants", help="create tenants").add_subparsers(dest="tenants_command",
                                                                                   required=True)
    create = tenants.add_parser("create", help="create a tenant")
    create.add_argument("id")
    create.add_argument("--name")
    create.set_defaults(run=_tenants)
    keys = commands.add_parser("keys", help="create or revoke API keys").add_subparsers(dest="keys_command",
                                                                                       required=True)
    key_create = keys.add_parser("create", help="a new key for a tenant (shown once)")
    key_create.add_argument("tenant")
    key_create.add_argument("--scopes", default="read,write", help="comma-separated: read, write")
    key_create.set_defaults(run=_keys)
    key_revoke = keys.add_parser("revoke", help="revoke a key")
    key_revoke.add_argument("tenant")
    key_revoke.add_argument("key_id")
    key_revoke.set_defaults(run=_keys)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        cfg = settings_mod.load()
        sys.exit(asyncio.run(args.run(args, cfg)))
    except LedgerError as e:
        print(f"ledger: {e.message}", file=sys.stderr)
        sys.exit(2)
    except settings_mod.SettingsError as e:
        print(f"ledger: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
