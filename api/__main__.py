"""`python -m api`: serve the API with uvicorn (uvloop, httptools) on the configured host and port."""

from __future__ import annotations

import uvicorn

from infra import logs
from infra import settings as settings_mod


def main() -> None:
    try:
        cfg = settings_mod.load()
    except settings_mod.SettingsError as e:
        raise SystemExit(f"api: {e}") from None
    uvicorn.run("api.app:create_app", factory=True, host=cfg.api_host, port=cfg.api_port, loop="uvloop",
                http="httptools", workers=cfg.api_workers,
                log_config=logs.config("api", cfg.log_level or "INFO"), log_level="warning",
                access_log=False, proxy_headers=False, timeout_graceful_shutdown=8)


if __name__ == "__main__":
    main()
