"""The Modbus RTU slave: serial I/O on asyncio, wire-time emulation, fault injection, control socket.

pymodbus does the protocol: its RTU framer (``FramerRTU`` with a server-side ``DecodePDU``) sizes,
CRC-checks and decodes requests, each request PDU's ``datastore_update`` reads or writes the device's
registers in pymodbus' datastore (:mod:`nattery_sim.datastore`), and the framer encodes the reply.
The transport is ours, like the bridge's: a simulator must emulate the wire (frame times, t3.5, the
device's turnaround), deliver replies in chunks, stay deaf after a reply, go silent during a restart
and for other unit ids, and damage CRCs on purpose, none of which pymodbus' serial server can do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import serial
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

from nattery_contracts.modbus import frame_time_s, t35_s
from nattery_sim.clock import SimClock
from nattery_sim.devices import SimDevice
from nattery_sim.faults import FaultConfig

log = logging.getLogger("nattery_sim")

__all__ = ["RtuSlave", "SimClock"]


class RtuSlave:
    """Serves ``device``'s holding registers as Modbus RTU unit ``unit`` on a serial port."""

    def __init__(
        self,
        device: SimDevice,
        port: str,
        *,
        unit: int = 1,
        baud: int = 9600,
        bits_per_char: int = 10,
        faults: FaultConfig | None = None,
        clock: SimClock | None = None,
        tick_s: float = 0.25,
        control_socket: str | None = None,
    ) -> None:
        self.device = device
        self.port = port
        self.unit = unit
        self.baud = baud
        self.bits_per_char = bits_per_char
        self.faults = faults or FaultConfig()
        self.clock = clock or SimClock(datetime.now(UTC))
        self.tick_s = tick_s
        self.control_socket = control_socket
        self.silent_until = 0.0  # monotonic; restart in progress
        self.stats = {
            "requests": 0,
            "replies": 0,
            "ignored_other_unit": 0,
            "bad_crc": 0,
            "dropped": 0,
            "deaf": 0,
            "ignored_writes": 0,
        }
        self._last_reply_end = -1e9  # monotonic: when the last reply's final byte left
        self._framer = FramerRTU(DecodePDU(is_server=True))
        self._rx = bytearray()  # received, not yet framed
        self._frames: asyncio.Queue[bytes] = asyncio.Queue()
        self._silence: asyncio.TimerHandle | None = None
        self._ser: serial.Serial | None = None
        self._last_tick = self.clock.now()
        self._stop = asyncio.Event()
        self.failed = False
        device.drop_write = self._drop_write

    # ------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._ser = serial.Serial(self.port, baudrate=self.baud, timeout=0, exclusive=False)
        fd = self._ser.fileno()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)
        tasks = [asyncio.create_task(self._serve()), asyncio.create_task(self._physics())]
        server = None
        if self.control_socket:
            _unlink(self.control_socket)
            server = await asyncio.start_unix_server(self._control_client, path=self.control_socket)
        log.info(
            "serving unit %d on %s at %d baud (%s)", self.unit, self.port, self.baud, self.device.rmap.profile
        )
        try:
            await self._stop.wait()
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if server is not None:
                server.close()
                _unlink(self.control_socket or "")
            self._ser.close()

    def stop(self) -> None:
        self._stop.set()

    def _hangup(self, why: str) -> None:
        """The port is gone: stop (exit status 1) instead of spinning on a dead descriptor."""
        log.error("serial port %s lost (%s): stopping", self.port, why)
        assert self._ser is not None
        asyncio.get_running_loop().remove_reader(self._ser.fileno())
        self.failed = True
        self.stop()

    def restart(self, silence_s: float = 3.0) -> None:
        """Device restart: registers back to power-on values, no replies for ``silence_s``."""
        self.silent_until = time.monotonic() + silence_s
        self.device.fault_codes = set()
        self.device.reset_registers()
        log.warning("restart: silent for %.1f s, registers reset", silence_s)

    # ------------------------------------------------------------ physics
    async def _physics(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.tick()

    def tick(self) -> None:
        now = self.clock.now()
        dt = (now - self._last_tick).total_seconds()
        self._last_tick = now
        self.device.tick(now, dt)

    # ------------------------------------------------------------ receive
    def _on_readable(self) -> None:
        assert self._ser is not None
        try:
            data = os.read(self._ser.fileno(), 512)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # EIO: the pty's other side (socat) is gone, or the adapter unplugged
            self._hangup(str(e))
            return
        if not data:
            self._hangup("end of file")
            return
        if self._silence:
            self._silence.cancel()
        self._rx += data
        self._take_frames()
        if self._rx:
            # t3.5 of silence ends a frame; a pty has no timing, so allow scheduling jitter
            wait = max(t35_s(self.baud, self.bits_per_char), 0.02)
            self._silence = asyncio.get_running_loop().call_later(wait, self._on_silence)

    def _take_frames(self) -> None:
        """Queue every request the buffer holds: pymodbus' framer knows a request's length from its
        function code (and byte count), so a frame is served as soon as its last byte arrives."""
        while self._rx:
            try:
                used, _ = self._framer.handleFrame(bytes(self._rx), 0, 0)
            except ModbusIOException:
                used = len(self._rx)  # framed and CRC-checked, body undecodable: reply_for answers it
            if not used:
                return  # incomplete, or a function pymodbus cannot size: the silence timer ends it
            self._frames.put_nowait(bytes(self._rx[:used]))
            del self._rx[:used]

    def _on_silence(self) -> None:
        buf = bytes(self._rx)
        self._rx.clear()
        if _crc_ok(buf):
            self._frames.put_nowait(buf)  # a frame of a function we cannot size: answered 01
        else:
            self.stats["dropped"] += 1
            log.debug("dropped %d stray bytes", len(buf))

    # ------------------------------------------------------------ serve
    async def _serve(self) -> None:
        while True:
            frame = await self._frames.get()
            received = time.monotonic()
            try:
                await self._handle(frame, received)
            except Exception:  # never let one bad frame kill the device
                log.exception("error handling frame %s", frame.hex())

    def _drop_write(self) -> bool:
        """The device's write fault hook: acknowledge the next write without storing it."""
        if self.faults.take_ignore_write():
            self.stats["ignored_writes"] += 1  # acknowledged, not stored: the read-back differs
            return True
        return False

    def _request(self, frame: bytes) -> ModbusPDU | ExcCodes | None:
        """The request in one frame if it is ours; an exception code for a frame of ours that is no
        request we can execute; None for silence (bad CRC, another unit, a broadcast, noise)."""
        ours = len(frame) >= 2 and frame[0] == self.unit
        try:
            used, request = self._framer.handleFrame(frame, 0, 0)
        except ModbusIOException:
            # CRC right, body refused by pymodbus' decoder: a read of 0 or more than 125 registers
            return ExcCodes.ILLEGAL_VALUE if ours else None
        if not used:  # complete (silence ended it) but of a function pymodbus cannot size
            if not _crc_ok(frame):
                self.stats["bad_crc"] += 1
                return None
            return ExcCodes.ILLEGAL_FUNCTION if ours else None
        if request is None:
            self.stats["bad_crc"] += 1
            return None
        if request.dev_id != self.unit:
            self.stats["ignored_other_unit"] += 1
            return None  # not ours (or broadcast 0: no reply to broadcasts)
        return request

    async def _execute(self, request: ModbusPDU) -> ModbusPDU:
        """pymodbus' own request handling against the device's datastore."""
        if request.function_code not in self.device.functions:
            return ExceptionResponse(request.function_code, ExcCodes.ILLEGAL_FUNCTION)
        if self.clock.factor:
            # While time runs, a request sees the simulated instant it arrives at (a read's clock and
            # counters; a write lands after the physics up to now), not the last physics tick, which
            # at a high time factor is simulated minutes old.
            self.tick()
        try:
            return await request.datastore_update(self.device.regs.context, self.unit)
        except Exception:  # as pymodbus' server does: the device failed (04), and keeps serving
            log.exception("request %s failed", request)
            return ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)

    async def reply_for(self, frame: bytes) -> bytes | None:
        """The reply to one request frame with the wire faults applied (no timing), or None for
        silence. The serial server and in-process tests (a master calling this directly) share it."""
        request = self._request(frame)
        if request is None:
            return None
        if self.faults.take_no_reply():
            self.stats["dropped"] += 1
            return None
        if (
            isinstance(request, ModbusPDU)
            and request.function_code == 3
            and self.faults.silences(request.address, request.count)
        ):
            self.stats["dropped"] += 1
            return None
        self.stats["requests"] += 1
        function = frame[1] & 0x7F
        response: ModbusPDU
        if self.faults.take_exception():
            response = ExceptionResponse(function, self.faults.exception_code)
        elif isinstance(request, ExcCodes):
            response = ExceptionResponse(function, request)
        else:
            response = await self._execute(request)
        response.dev_id = self.unit
        reply = self._framer.buildFrame(response)
        if self.faults.take_corrupt():
            reply = reply[:-2] + bytes([reply[-2] ^ 0xFF, reply[-1] ^ 0x5A])
        return reply

    async def _handle(self, frame: bytes, received: float) -> None:
        if time.monotonic() < self.silent_until:
            return
        # A pty delivers a request at once: ``received`` is where its first byte would be on the wire
        # (the reply delay below adds the request's own frame time).
        if received - self._last_reply_end < self.faults.deaf_after_reply_ms / 1000.0:
            self.stats["deaf"] += 1  # still busy after its own reply: the request is lost
            return
        reply = await self.reply_for(frame)
        if reply is None:
            return
        # wire emulation: request on the wire, t3.5 to end it, turnaround, reply on the wire
        bpc = self.bits_per_char
        delay = (
            frame_time_s(len(frame), self.baud, bpc)
            + t35_s(self.baud, bpc)
            + self.faults.turnaround_ms / 1000.0
            + frame_time_s(len(reply), self.baud, bpc)
        )
        await asyncio.sleep(max(0.0, received + delay - time.monotonic()))
        if time.monotonic() < self.silent_until:
            return
        if self.faults.chunked and len(reply) > self.faults.chunk_size:
            n = self.faults.chunk_size
            for i in range(0, len(reply), n):
                if i:
                    await asyncio.sleep(self.faults.chunk_gap_ms / 1000.0)
                self._write(reply[i : i + n])
        else:
            self._write(reply)
        self._last_reply_end = time.monotonic()
        self.stats["replies"] += 1

    def _write(self, data: bytes) -> None:
        assert self._ser is not None
        fd = self._ser.fileno()
        view = memoryview(data)
        deadline = time.monotonic() + 1.0
        while view and time.monotonic() < deadline:
            try:
                n = os.write(fd, view)
                view = view[n:]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError as e:
                log.debug("write error %s", e)
                return

    # ------------------------------------------------------------ control socket (JSON lines)
    async def _control_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = self.control(json.loads(line))
                except Exception as e:
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    def control(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Handle one control command (see README "Runtime control")."""
        cmd = msg.get("cmd", "status")
        if cmd == "set":
            self.faults.update({k: v for k, v in msg.items() if k != "cmd"})
        elif cmd == "clear":
            keep = self.faults.turnaround_ms
            self.faults.update({f: v for f, v in FaultConfig().as_dict().items() if f != "turnaround_ms"})
            self.faults.turnaround_ms = keep
            self.device.set_fault_codes(set())
        elif cmd == "restart":
            self.restart(float(msg.get("seconds", 3.0)))
        elif cmd == "fault_codes":
            codes = set(self.device.fault_codes)
            if "set" in msg:
                codes = set(msg["set"])
            codes |= set(msg.get("raise", []))
            codes -= set(msg.get("clear", []))
            self.device.set_fault_codes(codes)
        elif cmd == "time_factor":
            self.tick()
            self.clock.set_factor(float(msg["factor"]))
        elif cmd == "tick":
            self.tick()
        elif cmd == "advance":
            # drive the physics clock: ``seconds`` of simulated time now, in ``step_s`` physics steps
            remaining, step_s = float(msg["seconds"]), float(msg.get("step_s", 1.0))
            if remaining < 0 or step_s <= 0:
                raise ValueError("advance needs seconds >= 0 and step_s > 0")
            self.tick()
            while remaining > 0:
                dt = min(step_s, remaining)
                self.clock.advance(dt)
                self.tick()
                remaining -= dt
        elif cmd == "battery":
            # pin (a number) or release (null) the battery's physical state, e.g. a hot battery
            self.tick()
            self.device.pin(msg)
            self.tick()
        elif cmd == "poke":
            # a register changed behind the master's back (installer app, another master, firmware)
            self.device.poke(str(msg["name"]), float(msg["value"]))
        elif cmd != "status":
            raise ValueError(f"unknown command {cmd!r}")
        if cmd == "status":
            self.tick()
        return {
            "ok": True,
            "profile": self.device.rmap.profile,
            "unit": self.unit,
            "sim_time": self.clock.now().isoformat(),
            "silent": time.monotonic() < self.silent_until,
            "faults": self.faults.as_dict(),
            "fault_codes": sorted(self.device.fault_codes),
            "truth": self.device.truth(),
            "mode": getattr(self.device, "mode", None),
            "stats": dict(self.stats),
        }


def _crc_ok(frame: bytes) -> bool:
    """Whether ``frame`` ends in the CRC of what precedes it (pymodbus' CRC-16/Modbus)."""
    return len(frame) >= 4 and FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()
