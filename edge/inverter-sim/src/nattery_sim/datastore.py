"""A simulated device's holding registers, kept in pymodbus' datastore (``pymodbus.simulator``, 3.16.1).

pymodbus owns the registers and answers requests against them: ``SimData`` blocks cover the register
map's readable space (gaps in it are invalid: exception 02), registers that no writable point uses
are read-only (a write to them: exception 02), and each request PDU's own ``datastore_update`` reads
or writes them. The device adds only what the register map knows and pymodbus cannot: value ranges,
points that must be written whole, the device's read/write size limits; it does so in the access
hook pymodbus calls before every read and write (``SimDevice(action=...)``).

Physics writes its measurements straight into the same registers through :class:`Registers`, a
mapping view (address -> word) over pymodbus' register list, so what the datastore serves is always
what the physics last published, without a copy to keep in sync.

The legacy ``ModbusDeviceContext``/``ModbusSequentialDataBlock`` classes are deprecated in 3.16.1 and
gone in 4.0 (modbus-rtu.md §5.1), hence ``SimDevice``/``SimData``. ``SimCore`` is what pymodbus'
own servers build from them (``server/base.py``); the transport is ours (see ``server.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import cast

from pymodbus.datastore import ModbusServerContext
from pymodbus.simulator import DataType, SimAction, SimData
from pymodbus.simulator import SimDevice as PymodbusDevice
from pymodbus.simulator.simcore import SimCore

from nattery_contracts.modbus import RegisterMap

# id 0: pymodbus' catch-all device. Which unit id the simulator answers to is the serial side's
# business (server.py stays silent for other ids, as an RS-485 device does; pymodbus would answer
# them with exception 04).
_ANY_UNIT = 0


def _runs(lo: int, hi: int, writable: set[int]) -> Iterator[tuple[int, int, bool]]:
    """(start, count, read_only) runs of one readable range, split where writability changes."""
    start = lo
    for a in range(lo + 1, hi + 2):
        if a > hi or (a in writable) != (start in writable):
            yield start, a - start, start not in writable
            start = a


class Registers(MutableMapping[int, int]):
    """The register map's readable space in a pymodbus datastore; ``regs[address]`` is one word."""

    def __init__(self, rmap: RegisterMap, action: SimAction) -> None:
        writable = {a for p in rmap.writable_points for a in p.addresses}
        blocks = [
            SimData(start, values=[0] * count, datatype=DataType.REGISTERS, readonly=read_only)
            for lo, hi in rmap.register_space
            for start, count, read_only in _runs(lo, hi, writable)
        ]
        core = SimCore(PymodbusDevice(id=_ANY_UNIT, simdata=blocks, action=action))
        #: what a request PDU's ``datastore_update(context, device_id)`` works on (its signature still
        #: names the legacy context class; pymodbus' own servers pass a SimCore, as here)
        self.context = cast(ModbusServerContext, core)
        # pymodbus keeps the device's registers as one list from the lowest address (gaps filled with
        # invalid entries); this view reads and writes that list in place.
        start, _, words, _ = core.devices[_ANY_UNIT].block["x"]
        self._start = start
        self._words = words
        self._addresses = frozenset(a for lo, hi in rmap.register_space for a in range(lo, hi + 1))

    def offset(self, address: int) -> int:
        """Index of ``address`` in the list pymodbus hands to the access hook (``current_registers``)."""
        return address - self._start

    def clear(self) -> None:
        """Every register to 0 (a device restart), in place: pymodbus keeps serving the same list."""
        for a in self._addresses:
            self._words[a - self._start] = 0

    def __getitem__(self, address: int) -> int:
        if address not in self._addresses:
            raise KeyError(address)
        return self._words[address - self._start]

    def __setitem__(self, address: int, word: int) -> None:
        if address not in self._addresses:
            raise KeyError(address)
        if not 0 <= word <= 0xFFFF:
            raise ValueError(f"register {address}: {word} is not a 16-bit word")
        self._words[address - self._start] = word

    def __delitem__(self, address: int) -> None:
        raise TypeError("registers cannot be removed")

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._addresses))

    def __len__(self) -> int:
        return len(self._addresses)
