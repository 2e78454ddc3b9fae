"""Helpers for tests, demos and the fleet runner: socat pty pairs, a simulator subprocess with its
control socket, and a tiny synchronous RTU master on pymodbus' frames (``FramerRTU`` and its PDUs).

The bridge's tests may use these too::

    with PtyPair(tmp_path / "ttySim", tmp_path / "ttyBridge") as pty, \\
         SimProcess(pty.a, control_socket=tmp_path / "ctl", args=["--time-factor", "60"]) as sim:
        master = RtuMaster(pty.b)
        regs = master.read(1, 184, 1)
        sim.control({"cmd": "set", "no_reply_next": 2})
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import serial
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

T = TypeVar("T")

# A master's framer: builds requests, decodes responses. Stateless between calls, so one will do.
_MASTER = FramerRTU(DecodePDU(is_server=False))


def read_request(unit: int, address: int, count: int) -> bytes:
    """FC03 request frame (8 bytes)."""
    return _MASTER.buildFrame(ReadHoldingRegistersRequest(address=address, count=count, dev_id=unit))


def write_request(unit: int, address: int, values: Sequence[int]) -> bytes:
    """FC16 request frame (9 + 2N bytes). pymodbus checks no count here: tests send 124 on purpose."""
    return _MASTER.buildFrame(
        WriteMultipleRegistersRequest(address=address, registers=list(values), dev_id=unit)
    )


def write_single_request(unit: int, address: int, value: int) -> bytes:
    """FC06 request frame (8 bytes)."""
    return _MASTER.buildFrame(WriteSingleRegisterRequest(address=address, registers=[value], dev_id=unit))


def with_crc(body: bytes) -> bytes:
    """``body`` + its CRC-16/Modbus as on the wire (for hand-made frames)."""
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))


def decode_response(frame: bytes) -> ModbusPDU:
    """The response in one complete frame; ValueError if its CRC is wrong or it is not a frame."""
    try:
        used, pdu = _MASTER.handleFrame(frame, 0, 0)
    except ModbusIOException as e:
        raise ValueError(f"undecodable frame {frame.hex()}") from e
    if not used or pdu is None:
        raise ValueError(f"bad CRC or incomplete frame {frame.hex()}")
    return pdu


def wait_for(pred: Callable[[], T | None], timeout: float, what: str) -> T:
    """Wait for ``pred()`` to return something truthy and return it. ``timeout`` only guards against a
    hang (it raises TimeoutError); it is no claim about how fast the thing happens."""
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def control(socket_path: str | Path, msg: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One JSON-lines command on a simulator's control socket (README "Runtime control")."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(socket_path))
        s.sendall(json.dumps(msg).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply: dict[str, Any] = json.loads(buf)
    return reply


class PtyPair:
    """``socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B``: a virtual null-modem cable."""

    def __init__(self, a: str | Path, b: str | Path, log: str | Path | None = None) -> None:
        self.a = str(a)
        self.b = str(b)
        self.log = str(log) if log else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 5.0) -> Self:
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat is not installed (apt-get install socat)")
        for p in (self.a, self.b):
            Path(p).parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(p):
                Path(p).unlink()
        out = Path(self.log).open("ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [socat, "-d", "-d", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
        wait_for(lambda: Path(self.a).exists() and Path(self.b).exists(), timeout, "socat links")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SimProcess:
    """``python -m nattery_sim --port PORT ...`` as a subprocess, with its JSON control socket."""

    def __init__(
        self,
        port: str | Path,
        *,
        control_socket: str | Path,
        args: Sequence[str] = (),
        log: str | Path | None = None,
    ) -> None:
        self.port = str(port)
        self.control_socket = str(control_socket)
        self.args = list(args)
        self.log = str(log) if log else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Self:
        if os.path.lexists(self.control_socket):
            Path(self.control_socket).unlink()
        cmd = [sys.executable, "-m", "nattery_sim", "--port", self.port]
        cmd += ["--control-socket", self.control_socket, *self.args]
        out = Path(self.log).open("ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=out)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited with {self.proc.returncode}")
            try:
                return bool(self.control({"cmd": "status"})["ok"])
            except OSError:
                return False

        wait_for(ready, timeout, "simulator control socket")
        return self

    def control(self, msg: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        return control(self.control_socket, msg, timeout)

    def status(self) -> dict[str, Any]:
        return self.control({"cmd": "status"})

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RtuMaster:
    """Minimal synchronous RTU master for tests (one transaction at a time, no retries)."""

    def __init__(self, port: str | Path, baud: int = 9600, timeout: float = 1.0) -> None:
        self.ser = serial.Serial(str(port), baudrate=baud, timeout=0.005)
        self.timeout = timeout
        self.last_chunks: list[tuple[float, bytes]] = []  # (seconds after send, bytes) of the last reply
        self.last_elapsed = 0.0

    def close(self) -> None:
        self.ser.close()

    def transact(self, frame: bytes, timeout: float | None = None) -> bytes | None:
        """Send ``frame``; return the complete raw reply frame (CRC unchecked), or None on timeout."""
        self.ser.reset_input_buffer()
        framer = FramerRTU(DecodePDU(is_server=False))
        buf = b""  # the reply so far
        self.last_chunks = []
        t0 = time.monotonic()
        self.ser.write(frame)
        deadline = t0 + (self.timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            data = self.ser.read(max(1, self.ser.in_waiting))
            if data:
                self.last_chunks.append((time.monotonic() - t0, data))
                buf += bytes(data)
                try:
                    # the framer sizes the reply from its function code and byte count: 0 = need more
                    used, _ = framer.handleFrame(buf, 0, 0)
                except ModbusIOException:
                    used = len(buf)
                if used:
                    self.last_elapsed = time.monotonic() - t0
                    return buf
        self.last_elapsed = time.monotonic() - t0
        return None

    def request(self, frame: bytes, timeout: float | None = None) -> ModbusPDU | None:
        """The decoded reply (an ``ExceptionResponse`` for exception replies), or None on timeout."""
        raw = self.transact(frame, timeout)
        return decode_response(raw) if raw is not None else None

    def read(self, unit: int, address: int, count: int) -> list[int]:
        resp = self.request(read_request(unit, address, count))
        if resp is None:
            raise TimeoutError("no reply")
        if isinstance(resp, ExceptionResponse):
            raise RuntimeError(f"exception {resp.exception_code}")
        return list(resp.registers)

    def write(self, unit: int, address: int, values: Sequence[int]) -> ModbusPDU | None:
        return self.request(write_request(unit, address, list(values)))

    def write_single(self, unit: int, address: int, value: int) -> ModbusPDU | None:
        return self.request(write_single_request(unit, address, value))
