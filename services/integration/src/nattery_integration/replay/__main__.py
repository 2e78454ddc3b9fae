"""``python -m nattery_integration.replay [--host 127.0.0.1] [--port 8099]``: serve the replays."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from nattery_integration.replay.server import BASE_PATHS, LABEL, create_replay_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nattery_integration.replay", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s replay %(message)s")
    log = logging.getLogger("nattery.replay")
    log.warning("provider REPLAY on http://%s:%d (%s)", args.host, args.port, LABEL)
    for provider, path in BASE_PATHS.items():
        log.info("  %-10s http://%s:%d%s", provider, args.host, args.port, path)
    uvicorn.run(create_replay_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
