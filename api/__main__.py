"""`python -m api`: serve the API with uvicorn (uvloop, httptools) on the configured host and port."""

from __future__ import annotations

import os

import uvicorn

from infra import logs
from ledger import settings as settings_mod


def main() -> None:
    cfg = settings_mod.load()
    uvicorn.run("api.app:create_app", factory=True, host=cfg.api_host, port=cfg.api_port, loop="uvloop",
                http="httptools", workers=int(os.environ.get("LEDGER_API_WORKERS", "1")),
                log_config=logs.config("api", os.environ.get("LEDGER_LOG_LEVEL", "INFO")), log_level="warning",
                access_log=False, proxy_headers=False, timeout_graceful_shutdown=8)


if __name__ == "__main__":
    main()
