"""`python -m api`: serve the API with uvicorn (uvloop, httptools) on the configured host and port."""

from __future__ import annotations

import uvicorn

from infra import logs
from infra import settings as settings_mod


def main() -> None:
    try:
        cfg = settings_mod.load()
        settings_mod.require_position_key(cfg, "the API")  # each worker would refuse to start without it
    except settings_mod.SettingsError as e:
        raise SystemExit(f"api: {e}") from None
    # Past `limit_concurrency` connections or requests in flight, uvicorn answers 503 itself (a plain-text
    # body, not the contract's JSON: it never reaches the app). uvicorn 0.54 has no timeout for reading a
    # request's headers: its keep-alive timer runs only between requests, so a client that opens a connection
    # and trickles its headers holds it; `limit_concurrency` is what bounds how many such connections there
    # can be. A proxy in front (nginx in docker-compose.scale.yml) should enforce header timeouts.
    uvicorn.run("api.app:create_app", factory=True, host=cfg.api_host, port=cfg.api_port, loop="uvloop",
                http="httptools", workers=cfg.api_workers,
                log_config=logs.config("api", cfg.log_level or "INFO"), log_level="warning",
                access_log=False, proxy_headers=False, timeout_graceful_shutdown=8,
                limit_concurrency=cfg.api_concurrency_max, backlog=cfg.api_backlog_max,
                timeout_keep_alive=cfg.api_keep_alive_timeout_s)


if __name__ == "__main__":
    main()
