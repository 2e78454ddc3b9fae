"""Local HTTP servers replaying the providers' answers (shapes from the team's provider references).

Used by the tests and by ``make run`` (no internet there): ``python -m nattery_integration.replay
--port 8099`` serves Octopus, Elexon, Modo, ENTSO-E and Open-Meteo under one port, one path prefix per
provider (see ``server.BASE_PATHS``). Every answer carries ``X-Nattery-Replay``: it is a replay.
"""
