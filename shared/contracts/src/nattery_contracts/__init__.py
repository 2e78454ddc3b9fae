"""The contract between Nattery's parts (ARCHITECTURE §4 and §5), defined once and imported everywhere.

This package is deliberately light (pydantic and pyyaml only) so that the edge (bridge and simulator)
can install it without the service kit (`nattery_shared`: FastAPI, database, broker clients):

- `mqtt`: MQTT topics and payloads between the edge and the cloud.
- `events`: RabbitMQ CloudEvents between the services.
- `modbus`: inverter register maps and the register codec.
- `aio`: the small asyncio helpers both sides of the contract use.
"""
