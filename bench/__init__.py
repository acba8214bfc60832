"""`make bench`: reproducible figures for reads, ingest, scale and replay, each beside a same-run baseline."""

from infra import compiled

compiled.use()  # before any module of `ledger`: the compiled build when it is current
