"""What a run prints and draws: the table of its measurements (`report`) and the plot of its balance reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import ceiling, history, matrix, postmortem, tools, waited


def _row(name: str, r: dict[str, Any]) -> str:
    return (f"| {name} | {r['rate']}/s | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['max_ms']:.1f} | {r['achieved_rps']} | {r['errors']} |")


def _cpu(row: dict[str, Any]) -> str:
    return f"; {tools.cpu_text(row['cpu'])}" if "cpu" in row else ""


def fairness_lines(f: dict[str, Any]) -> list[str]:
    alone = f["alone"]
    lines = [f"fair shares: a victim's POST ?wait=true at {f['victim_rate']}/s, p99 alone {alone['p99_ms']:.1f} ms "
             "(target: within 2x, or under 50 ms, during any other tenant's flood)"]
    for label, key in (("another tenant's HTTP flood (64 connections), default limits", "http_flood"),
                       ("the same flood with a limit it never reaches", "http_flood_unlimited")):
        row = f[key]
        lines.append(f"  {label}: victim p99 {row['victim']['p99_ms']:.1f} ms ({row['ratio_p99']}x), p50 "
                     f"{row['victim']['p50_ms']:.1f} ms; flood {row['flood_rps']:.0f} req/s, {row['flood_refused']} "
                     f"refused; API {row['api_cpu_us_per_request']} CPU-us per flood request" + _cpu(row))
    if "refusal_cost" in f:
        cost = f["refusal_cost"]
        refused, served = cost["refused"], cost["served"]
        lines.append(f"  the flood alone, refused: {refused['rps']:.0f} requests/s from 64 connections (held), "
                     f"the API {refused['api_cores']:.3f} cores, {refused['api_cpu_us']} CPU-us a refusal; served: "
                     f"{served['rps']:.0f}/s, {served['api_cores']:.3f} cores, {served['api_cpu_us']} CPU-us a write "
                     f"(the API idle: {cost['api_idle_cores']:.3f} cores, taken off both)")
    for label, key in (("a flood straight to Kafka, a victim on its partition", "kafka_flood"),
                       (f"the same with a quota of {f['kafka_flood_quota']['quota_bytes_per_s']} B/s on its client.id",
                        "kafka_flood_quota")):
        row = f[key]
        lines.append(f"  {label}: victim p99 {row['victim']['p99_ms']:.1f} ms ({row['ratio_p99']}x); flood "
                     f"{row['rps']} records/s acknowledged")
    return lines


def report(results: dict[str, Any]) -> str:
    lines = ["", "| measurement | rate | p50 ms | p95 ms | p99 ms | max ms | achieved | errors |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label in ("reads_10k", "reads_1m"):
        lines += [_row(f"balance read, {r['accounts']:,} accounts", r) for r in results.get(label, [])]
    lines += [_row(f"balance read, {r['accounts']:,} accounts, each with an open hold", r)
              for r in results.get("reads_10k_held", [])]
    lines += [_row(f"history page, {label}", r) for label, r in results.get("history", {}).items()]
    lines += [_row("POST ?wait=true", r) for r in results.get("ingest_http_wait", [])]
    lines += [_row("producer client, append to outcome", r) for r in results.get("ingest_client", [])]
    if "history_cost" in results:
        lines += ["", history.cost_line(results["history_cost"])]
    sat = results.get("saturation")
    if sat:
        lines += ["", f"saturation (wrk, 64 connections): balance {sat['balance']['rps']:.0f} req/s "
                      f"(p99 {sat['balance']['p99_ms']} ms), static /healthz {sat['static']['rps']:.0f} req/s, "
                      f"ratio {sat['ratio']}x"]
    if "round_trips" in results:
        rt = results["round_trips"]
        lines.append(f"database statements per balance read: {rt['per_request']} "
                     f"({rt['statements']} / {rt['requests']})")
    if "ingest_direct" in results:
        i = results["ingest_direct"]
        lines.append(f"ingest straight to Kafka, {i.get('projectors', 1)} projector process(es): "
                     f"{i['tx_per_s']} committed tx/s "
                     f"({i['measured']} tx in {i['seconds']} s), {i['wal_bytes_per_tx']} WAL bytes per transfer"
                     + _cpu(i))
    if "ceiling" in results:
        c = results["ceiling"]
        lines.append(f"PostgreSQL's ceiling for the same rows (COPY + balances upsert, batches of {ceiling.BATCH}, "
                     f"LIKE tables): {c['tx_per_s']} tx/s, {c['wal_bytes_per_tx']} WAL bytes/tx; projector at "
                     f"{c['ratio']}x (target 0.8x)" + _cpu(c))
    for label in [k for k in results if k.startswith("ingest_direct_")]:
        i = results[label]
        build = "compiled" if i.get("compiled", True) else "pure Python"
        lines.append(f"ingest with {i['projectors']} projector process(es), ledger/ {build}: {i['tx_per_s']} "
                     f"committed tx/s, {i.get('ratio')}x the ceiling (target 0.8x)"
                     + _cpu(i))
    if "ingest_mix" in results:
        i = results["ingest_mix"]
        lines.append(f"ingest, half holds and half captures: {i['tx_per_s']} decided requests/s "
                     f"({i.get('ratio_to_transfers')}x the transfers above, same run; {i['decided']})")
    if "replay" in results:
        r = results["replay"]
        lines.append(f"replay into an empty database: {r['events_per_s']} events/s ({r['events']} in {r['seconds']} s)")
    if "batches" in results:
        b = results["batches"]
        lines.append(f"transfers committed per second over HTTP with wait=true: one per request {b['single']}, "
                     f"batches of 100 {b['batch_100']} ({b['ratio']}x)")
    for tenant, info in results.get("queries", {}).items():
        lines.append(f"queries on {tenant} ({info['transactions']:,} transactions, {info['accounts']:,} accounts), "
                     "p50 / p99 ms at 100/s:")
        lines += [f"  {name}: {row['p50_ms']:.2f} / {row['p99_ms']:.2f}" + (f" ({row['errors']} errors)"
                                                                              if row["errors"] else "")
                  for name, row in info["timings"].items()]
    if "waited" in results:
        lines += ["", *waited.lines(results["waited"])]
    if "matrix" in results:
        lines += ["", "the write matrix (issue 24; CPU-us a write by role, API/projector/PostgreSQL/Kafka):",
                  *matrix.table(results["matrix"], results.get("matrix_formance"))]
    if "fairness" in results:
        lines += ["", *fairness_lines(results["fairness"])]
    if "postmortem" in results:
        pm = results["postmortem"]
        lines += ["", f"post-mortem scenario: {pm['tenants']} tenants x {pm['wallets_per_tenant']:,} wallets x "
                      f"{pm['transactions_per_tenant']:,} transactions through the log; the three endpoints at once, "
                      "each with its users (connections); SLA p95 < 150 ms, p99 < 300 ms, errors < 0.1% (the seed's "
                      "balance read: mean 471 ms, p95 480, p99 625)",
                  "| load | users | endpoint | rate | achieved | mean ms | p95 ms | p99 ms | errors | SLA |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for level in pm["levels"]:
            for name, r in level["endpoints"].items():
                lines.append(f"| {level['multiple']}x | {level.get('users', postmortem.USERS)} | {name} | "
                             f"{r['rate']}/s | {r['achieved_rps']}/s | {r['mean_ms']:.1f} | "
                             f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']}/{r['requests']} | "
                             f"{'met' if postmortem.verdict(r) else 'MISSED'} |")
        lines += [f"post-mortem {level['multiple']}x, {level['users']} users: {tools.cpu_text(level['cpu'])}"
                  for level in pm["levels"] if "cpu" in level]
        if pm.get("waited_at_scale"):
            lines += ["", *waited.scale_lines(pm["waited_at_scale"], results.get("waited"),
                                              pm["tenants"] * pm["transactions_per_tenant"])]
        if pm.get("levers_at_10x"):
            lines += ["", "post-mortem at 10x (64 users), each lever taken away in turn (same run):",
                      "| stack | balance read p95/p99 ms | history page p95/p99 ms | transfer p95/p99 ms, achieved "
                      "| CPU |",
                      "| --- | --- | --- | --- | --- |"]
            for lever in pm["levers_at_10x"]:
                e = lever["endpoints"]
                cells = [f"{e[n]['p95_ms']:.0f} / {e[n]['p99_ms']:.0f}" for n in ("balance read", "history page")]
                t = e["transfer, wait=true"]
                lines.append(f"| {lever['lever']} | {cells[0]} | {cells[1]} | {t['p95_ms']:.0f} / {t['p99_ms']:.0f}, "
                             f"{t['achieved_rps']}/s | {tools.cpu_text(lever['cpu'])} |")
    if "isolation" in results:
        r = results["isolation"]
        lines.append(f"poison isolation, batch of {r['batch']} applied the plain way: clean {r['clean_s']} s, "
                     f"with one record PostgreSQL refuses {r['poisoned_s']} s ({r['ratio']}x)")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label in ("reads_10k", "reads_1m"):
        rows = results.get(label, [])
        if rows:
            ax.plot([r["rate"] for r in rows], [r["p99_ms"] for r in rows], marker="o", label=f"{label} p99")
            ax.plot([r["rate"] for r in rows], [r["p50_ms"] for r in rows], marker=".", linestyle="--",
                    label=f"{label} p50")
    ax.set_xlabel("offered rate (req/s, open loop)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_yscale("log")
    ax.set_title("Balance reads")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return True
