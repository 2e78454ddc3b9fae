"""The bridge's asyncio Modbus RTU master: pymodbus frames, our transport.

pymodbus (3.16.1, pinned) does the protocol: the request and response PDUs
(``ReadHoldingRegistersRequest``, ``WriteMultipleRegistersRequest`` ...), the RTU framer with its CRC
(``FramerRTU``), and the decoding of replies, exception responses included. The transport stays ours,
because what the bridge does better than pymodbus' client lives there (modbus-rtu.md §0, §5):

* one transaction at a time, scheduled by priority (the caller, :class:`nattery_bridge.bus.Bus`);
  pymodbus' client has a lock, not priorities;
* replies are framed by length (function code + byte count: ``FramerRTU.handleFrame`` answers "need
  more bytes" until the last one has arrived), never by inter-byte gaps, so replies that a USB adapter
  delivers in 16-byte chunks are fine; and a reply still trickling in gets more time per piece;
* the receive buffer is flushed before every request (stale bytes after a timeout cannot poison the
  next reply);
* timeout = wire time of request and reply + expected turnaround + margin (a few hundred ms at most),
  not pymodbus' 3 s x 4 attempts;
* at most one retry, only for timeouts and CRC errors (an exception reply is an answer);
* a silence after every transaction, measured from the end of the reply, learned per device
  (:mod:`nattery_bridge.pacing`): it starts at t3.5, the spec's minimum, and backs off only when a
  request sent right after a reply times out or collides; pymodbus sends the next request at once;
* a port that disappears (USB unplug: the tty vanishes, reads fail with EIO) is closed and reopened on
  the next transaction, no restart needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import serial
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteMultipleRegistersResponse,
)

from nattery_contracts.aio import within
from nattery_contracts.modbus.timing import (
    WRITE_RESPONSE_SIZE,
    bits_per_char,
    frame_time_s,
    read_response_size,
    t35_s,
)

from .pacing import AdaptivePacing

log = logging.getLogger(__name__)


class ModbusError(Exception):
    """Base of every transaction failure; ``kind`` names it for metrics."""

    kind = "error"


class PortUnavailable(ModbusError):
    kind = "port_unavailable"


class NoResponse(ModbusError):
    kind = "timeout"


class BadFrame(ModbusError):
    kind = "crc"


class ExceptionReply(ModbusError):
    kind = "exception_reply"

    def __init__(self, function: int, code: int) -> None:
        super().__init__(f"exception reply {code:#04x} to FC{function:02}")
        self.code = code


class UnexpectedReply(ModbusError):
    kind = "unexpected_reply"


@dataclass(frozen=True, slots=True)
class Timing:
    baud: int = 9600
    bits_per_char: int = 10
    turnaround_s: float = 0.05
    margin_s: float = 0.1
    # Floor of the learned pacing; None = t3.5, the minimum the spec allows (never below t3.5).
    pacing_s: float | None = None
    # Ceiling of the learned pacing (mbusd's fixed pause is 100 ms).
    pacing_max_s: float = 0.1
    pacing_memory_s: float = 3600.0
    # Once a reply has started, keep waiting while pieces keep coming no further apart than this (USB
    # adapters hand replies over in chunks: FTDI latency timer 16 ms).
    chunk_gap_s: float = 0.05

    def wire_s(self, n_bytes: int) -> float:
        return frame_time_s(n_bytes, self.baud, self.bits_per_char)

    @property
    def t35(self) -> float:
        return t35_s(self.baud, self.bits_per_char)

    @property
    def pacing_floor_s(self) -> float:
        return max(self.t35, self.pacing_s or 0.0)

    def timeout_s(self, request_bytes: int, response_bytes: int) -> float:
        """Time from the start of sending to the last byte of a reply, plus margin."""
        return self.wire_s(request_bytes + response_bytes) + 2 * self.t35 + self.turnaround_s + self.margin_s


__all__ = ["ModbusError", "RtuMaster", "Timing", "bits_per_char"]

# FC16 carries at most 123 registers (spec); pymodbus' client does not check it (modbus-rtu.md §2)
MAX_WRITE_REGISTERS = 123


def framer() -> FramerRTU:
    """pymodbus' RTU framer for a master: encodes requests, decodes responses (CRC checked)."""
    return FramerRTU(DecodePDU(is_server=False))


# Observer signature: (kind, start, end, ok, error_kind)
Observer = Callable[[str, float, float, bool, str | None], None]


class RtuMaster:
    def __init__(
        self,
        port: str,
        unit: int,
        timing: Timing,
        *,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
        retries: int = 1,
        reopen_interval_s: float = 1.0,
        observer: Observer | None = None,
    ) -> None:
        self.port = port
        self.unit = unit
        self.timing = timing
        self.retries = retries
        self.reopen_interval_s = reopen_interval_s
        self._serial_kwargs = {"bytesize": bytesize, "parity": parity, "stopbits": stopbits}
        self._serial: serial.Serial | None = None
        self._fd: int | None = None
        self._framer = framer()
        self._rx = bytearray()  # the reply received so far
        self._waiter: asyncio.Future[ModbusPDU] | None = None
        self._last_end = 0.0
        self._last_good_end: float | None = None  # end of the last good reply (monotonic)
        self._pacers: dict[int, AdaptivePacing] = {}
        self._last_rx = 0.0
        self._last_open_attempt = -1e9
        self._observer = observer
        self.stats: dict[str, int] = {}
        self.last_success = 0.0
        self.last_tx_start = 0.0  # request sent (monotonic)
        self.last_tx_end = 0.0  # reply received or given up

    def pacer(self, unit: int | None = None) -> AdaptivePacing:
        """The learned pacing of one device (unit id) on this line."""
        u = self.unit if unit is None else unit
        p = self._pacers.get(u)
        if p is None:
            t = self.timing
            p = AdaptivePacing(t.pacing_floor_s, t.pacing_max_s, time.monotonic, memory_s=t.pacing_memory_s)
            self._pacers[u] = p
        return p

    @property
    def pacing_s(self) -> float:
        return self.pacer().pacing_s

    # ------------------------------------------------------------ port handling
    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def _count(self, kind: str) -> None:
        self.stats[kind] = self.stats.get(kind, 0) + 1

    def open(self) -> None:
        """Open the port now (raises PortUnavailable)."""
        self._last_open_attempt = time.monotonic()
        try:
            ser = serial.Serial(
                self.port,
                baudrate=self.timing.baud,
                timeout=0,
                write_timeout=0,
                exclusive=True,
                **self._serial_kwargs,
            )
        except (OSError, serial.SerialException, ValueError) as e:
            raise PortUnavailable(f"cannot open {self.port}: {e}") from e
        self._serial = ser
        self._fd = ser.fileno()
        with contextlib.suppress(Exception):
            ser.reset_input_buffer()
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)
        log.info("serial port %s open", self.port)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
        self._serial = None
        self._fd = None
        self._rx.clear()

    def _lost(self, err: BaseException) -> None:
        log.warning("serial port %s lost: %s", self.port, err)
        self._count("port_lost")
        self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(PortUnavailable(f"{self.port} lost: {err}"))

    def _ensure_open(self) -> None:
        if self._serial is not None:
            return
        if time.monotonic() - self._last_open_attempt < self.reopen_interval_s:
            raise PortUnavailable(f"{self.port} unavailable (next reopen attempt pending)")
        self.open()

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 1024)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost(e)
            return
        if not data:
            self._lost(EOFError("end of file"))
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            self._count("stray_bytes")
            return  # nobody waits: dropped by the flush before the next request anyway
        self._last_rx = time.monotonic()
        self._rx += data
        try:
            used, pdu = self._framer.handleFrame(bytes(self._rx), 0, 0)
        except ModbusIOException as e:  # CRC right, body pymodbus cannot decode
            waiter.set_exception(BadFrame(f"undecodable reply {self._rx.hex()}: {e}"))
            return
        if not used:
            return  # length (function code + byte count) not reached yet: a chunk, wait for the rest
        if pdu is None:
            waiter.set_exception(BadFrame(f"bad CRC in reply {self._rx.hex()}"))
            return
        waiter.set_result(pdu)

    # ------------------------------------------------------------ transactions
    async def read_holding(self, address: int, count: int, kind: str = "poll") -> list[int]:
        request = ReadHoldingRegistersRequest(address=address, count=count, dev_id=self.unit)
        resp = await self._transact(request, read_response_size(count), kind)
        if not isinstance(resp, ReadHoldingRegistersResponse) or len(resp.registers) != count:
            raise UnexpectedReply(f"asked for {count} registers at {address}, got {resp}")
        return list(resp.registers)

    async def write_registers(self, address: int, values: list[int], kind: str = "write") -> None:
        if not 1 <= len(values) <= MAX_WRITE_REGISTERS:
            raise ValueError(f"FC16 writes 1..{MAX_WRITE_REGISTERS} registers, not {len(values)}")
        if not all(0 <= v <= 0xFFFF for v in values):
            raise ValueError(f"register values outside 0..65535: {values}")
        request = WriteMultipleRegistersRequest(address=address, registers=values, dev_id=self.unit)
        resp = await self._transact(request, WRITE_RESPONSE_SIZE, kind)
        if not isinstance(resp, WriteMultipleRegistersResponse) or (resp.address, resp.count) != (
            address,
            len(values),
        ):
            raise UnexpectedReply(f"FC16 echo {resp} != {address}/{len(values)}")

    async def _transact(self, request: ModbusPDU, response_len: int, kind: str) -> ModbusPDU:
        frame = self._framer.buildFrame(request)  # raises ValueError for a count pymodbus refuses
        attempts = self.retries + 1
        last: ModbusError | None = None
        for attempt in range(attempts):
            try:
                return await self._once(frame, response_len, request.function_code, kind)
            except (NoResponse, BadFrame) as e:
                last = e
                if attempt + 1 < attempts:
                    self._count("retry")
                    continue
            except ModbusError:
                raise
        assert last is not None
        raise last

    async def _once(self, request: bytes, response_len: int, function: int, kind: str) -> ModbusPDU:
        # Pacing: silence after the previous transaction, from the end of its reply.
        pacer = self.pacer()
        wait = self._last_end + pacer.pacing_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            self._ensure_open()
        except PortUnavailable:
            self._count("port_unavailable")
            raise
        assert self._fd is not None
        loop = asyncio.get_running_loop()
        self._rx.clear()
        self._flush_input()
        self._waiter = loop.create_future()
        start = time.monotonic()
        self.last_tx_start = start
        gap = None if self._last_good_end is None else start - self._last_good_end
        ok = False
        err: str | None = None
        try:
            try:
                os.write(self._fd, request)
            except OSError as e:
                self._lost(e)
                raise PortUnavailable(f"write to {self.port} failed: {e}") from e
            timeout = self.timing.timeout_s(len(request), response_len)
            deadline = start + timeout
            while True:
                try:
                    resp = await within(asyncio.shield(self._waiter), max(0.0, deadline - time.monotonic()))
                    break
                except TimeoutError:
                    # a reply still trickling in (chunked by the adapter) gets more time per piece
                    extended = self._last_rx + self.timing.chunk_gap_s
                    if self._last_rx > start and extended > time.monotonic():
                        deadline = extended
                        continue
                    raise NoResponse(f"no reply within {timeout * 1000:.0f} ms") from None
            if resp.dev_id != self.unit or resp.function_code & 0x7F != function:
                raise UnexpectedReply(f"reply from unit {resp.dev_id} FC{resp.function_code & 0x7F:02}")
            if isinstance(resp, ExceptionResponse):
                raise ExceptionReply(function, resp.exception_code)
            ok = True
            self.last_success = time.monotonic()
            self._last_good_end = self.last_success
            pacer.success()
            return resp
        except ModbusError as e:
            err = e.kind
            self._count(e.kind)
            if isinstance(e, NoResponse | BadFrame | UnexpectedReply) and pacer.failure(gap):
                self._count("pacing_backoff")
                log.info("unit %d: reply lost %.1f ms after the last one; pacing now %.1f ms",
                         self.unit, (gap or 0) * 1000, pacer.pacing_s * 1000)  # fmt: skip
            raise
        finally:
            end = time.monotonic()
            self._last_end = end
            self.last_tx_end = end
            if self._waiter is not None and not self._waiter.done():
                self._waiter.cancel()
            self._waiter = None
            if self._observer is not None:
                self._observer(kind, start, end, ok, err)

    def _flush_input(self) -> None:
        if self._fd is None:
            return
        while True:
            try:
                data = os.read(self._fd, 1024)
            except BlockingIOError:
                return
            except OSError as e:
                self._lost(e)
                raise PortUnavailable(f"{self.port} lost: {e}") from e
            if not data:
                return
            self._count("stale_bytes")
