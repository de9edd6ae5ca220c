"""``python -m whylogs_songbird.server``: run the local songbird-compatible server."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from whylogs_songbird.server.config import API_KEYS_ENV, ServerConfig


def build_parser() -> argparse.ArgumentParser:
    """The command line of the server."""
    parser = argparse.ArgumentParser(
        prog="python -m whylogs_songbird.server",
        description="Run a local server compatible with the songbird (WhyLabs) sessions API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port to listen on (default: 8787)")
    parser.add_argument(
        "--data-dir", type=Path, default=Path("songbird-data"), help="where sessions and profiles are kept"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        metavar="KEY",
        help=f"an accepted API key, '<id>.<secret>[:<org-id>]' (repeatable; default: ${API_KEYS_ENV})",
    )
    parser.add_argument("--url-ttl", type=int, default=900, metavar="SECONDS", help="lifetime of upload URLs")
    parser.add_argument("--latency-ms", type=int, default=0, metavar="N", help="delay every API request by N ms")
    parser.add_argument("--public-url", default=None, metavar="URL", help="base URL used in links")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="answer this fraction (0-1) of API requests with 500, 503, 429 or a dropped connection (default: 0)",
    )
    parser.add_argument("--fault-seed", type=int, default=None, metavar="N", help="seed of the fault decisions")
    parser.add_argument("--no-access-log", action="store_true", help="do not log each request")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until interrupted."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ServerConfig(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            api_keys=args.api_keys,
            url_ttl_seconds=args.url_ttl,
            latency_ms=args.latency_ms,
            public_url=args.public_url,
            fault_rate=args.fault_rate,
            fault_seed=args.fault_seed,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from whylogs_songbird.server.embedded import run_server

    log = logging.getLogger("whylogs_songbird.server")
    log.info(
        "data in %s, %d API keys, upload URLs live %d s", config.data_dir, len(config.api_keys), config.url_ttl_seconds
    )
    if config.fault_rate:
        log.warning("fault injection is on: %g of API requests fail (seed %s)", config.fault_rate, config.fault_seed)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after its graceful shutdown
        run_server(config, access_log=not args.no_access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
