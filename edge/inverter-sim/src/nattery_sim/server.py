"""The Modbus RTU slave: serial I/O on asyncio, wire-time emulation, fault injection, control socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import serial

from nattery_contracts.modbus import (
    READ_HOLDING,
    WRITE_MULTIPLE,
    WRITE_SINGLE,
    ExceptionCode,
    FrameAssembler,
    FrameError,
    build_exception_response,
    build_read_response,
    build_write_multiple_response,
    build_write_single_response,
    check_crc,
    frame_time_s,
    parse_request,
    t35_s,
)
from nattery_sim.devices import SimDevice
from nattery_sim.faults import FaultConfig

log = logging.getLogger("nattery_sim")


class SimClock:
    """Simulated time: ``start`` + wall time elapsed * ``factor`` (0 freezes the physics)."""

    def __init__(self, start: datetime, factor: float = 1.0) -> None:
        self.start = start if start.tzinfo else start.replace(tzinfo=UTC)
        self.factor = factor
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.factor)


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
        self._asm = FrameAssembler("request")
        self._frames: asyncio.Queue[bytes] = asyncio.Queue()
        self._silence: asyncio.TimerHandle | None = None
        self._ser: serial.Serial | None = None
        self._last_tick = self.clock.now()
        self._stop = asyncio.Event()
        self.failed = False

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
        try:
            frame = self._asm.feed(data)
            while frame is not None:
                self._frames.put_nowait(frame)
                frame = self._asm.feed()
        except FrameError:
            pass  # unknown length: the silence timer ends the frame
        if self._asm.pending:
            # t3.5 of silence ends a frame; a pty has no timing, so allow scheduling jitter
            wait = max(t35_s(self.baud, self.bits_per_char), 0.02)
            self._silence = asyncio.get_running_loop().call_later(wait, self._on_silence)

    def _on_silence(self) -> None:
        buf = self._asm.pending
        self._asm.reset()
        if len(buf) >= 4 and check_crc(buf):
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

    def respond(self, frame: bytes) -> bytes | None:
        """The reply to one request frame (no faults, no timing), or None for silence."""
        if not check_crc(frame):
            self.stats["bad_crc"] += 1
            return None
        try:
            req = parse_request(frame)
        except FrameError:
            return None
        if req.unit != self.unit:
            self.stats["ignored_other_unit"] += 1
            return None  # not ours (or broadcast 0: no reply to broadcasts)
        self.stats["requests"] += 1
        fc = req.function
        if fc == READ_HOLDING:
            regs = self.device.read(req.address, req.count)
            if isinstance(regs, ExceptionCode):
                return build_exception_response(self.unit, fc, regs)
            return build_read_response(self.unit, regs)
        if fc in (WRITE_SINGLE, WRITE_MULTIPLE):
            if fc == WRITE_MULTIPLE and not 1 <= req.count <= self.device.rmap.max_write_registers:
                return build_exception_response(self.unit, fc, ExceptionCode.ILLEGAL_DATA_VALUE)
            if self.faults.take_ignore_write():
                self.stats["ignored_writes"] += 1  # acknowledged, not stored: the read-back differs
            else:
                exc = self.device.write(req.address, list(req.values))
                if exc is not None:
                    return build_exception_response(self.unit, fc, exc)
            if fc == WRITE_SINGLE:
                return build_write_single_response(self.unit, req.address, req.values[0])
            return build_write_multiple_response(self.unit, req.address, req.count)
        return build_exception_response(self.unit, fc, ExceptionCode.ILLEGAL_FUNCTION)

    def reply_for(self, frame: bytes) -> bytes | None:
        """The reply to one request frame with the wire faults applied (no timing), or None for
        silence. The serial server and in-process tests (a master calling this directly) share it."""
        ours = len(frame) >= 2 and frame[0] == self.unit and check_crc(frame)
        if ours and self.faults.take_no_reply():
            self.stats["dropped"] += 1
            return None
        if ours and self.faults.silent_registers and frame[1] == READ_HOLDING:
            with contextlib.suppress(FrameError):
                req = parse_request(frame)
                if self.faults.silences(req.address, req.count):
                    self.stats["dropped"] += 1
                    return None
        if ours and self.faults.take_exception():
            reply: bytes | None = build_exception_response(self.unit, frame[1], self.faults.exception_code)
            self.stats["requests"] += 1
        else:
            reply = self.respond(frame)
        if reply is not None and self.faults.take_corrupt():
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
        reply = self.reply_for(frame)
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
            now = self.clock.now()
            self.tick()
            self.clock = SimClock(now, float(msg["factor"]))
        elif cmd == "tick":
            self.tick()
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


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()
