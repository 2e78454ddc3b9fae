"""Nattery Modbus RTU inverter simulator: battery physics behind the shared register maps.

Modules: ``server`` (RTU slave, wire timing, faults, control socket), ``devices`` (Deye hybrid and
flow-transmitter physics), ``profiles`` (real PV and load data), ``faults``, ``fleet`` (many sites with
bridges), ``testing`` (socat pty pair, simulator subprocess, tiny RTU master). See the package README.
"""
