"""Webhook dispatch: signs events and POSTs them to tenant-supplied URLs without letting a URL reach inside."""

from infra import compiled

compiled.use()  # before any module of `ledger`: the compiled build when it is current
