"""Load generator: publishes telemetry like N sites (see ``loadgen.py``)."""
