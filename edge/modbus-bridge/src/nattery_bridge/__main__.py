"""``modbus-bridge``: run the bridge with settings from ``NATTERY_BRIDGE_*`` environment variables."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from .app import Bridge
from .settings import BridgeSettings

log = logging.getLogger("nattery_bridge")


SHUTDOWN_OVERRUN_EXIT_CODE = 75


async def _amain(settings: BridgeSettings) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def overrun() -> None:
        log.error("shutdown took over %.1f s: exiting without finishing it", settings.shutdown_timeout_s)
        logging.shutdown()
        os._exit(SHUTDOWN_OVERRUN_EXIT_CODE)

    def stop() -> None:
        log.info("stopping")
        task.cancel()
        loop.call_later(settings.shutdown_timeout_s, overrun)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    with contextlib.suppress(asyncio.CancelledError):
        await Bridge(settings).run()


def main() -> None:
    # Settings come from the environment (balena device/fleet variables); a local file of the same
    # NATTERY_BRIDGE_* lines can be named in NATTERY_BRIDGE_ENV_FILE (environment wins).
    settings = BridgeSettings(_env_file=os.environ.get("NATTERY_BRIDGE_ENV_FILE"))
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(_amain(settings))


if __name__ == "__main__":
    main()
