"""Register maps as data: points, profiles, block grouping, decoding and encoding (pure, no I/O)."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import yaml

MAX_READ_REGISTERS = 125
MAX_WRITE_REGISTERS = 123
DEFAULT_MAX_GAP = 8


class Kind(StrEnum):
    """How the raw register words of a point are turned into a value."""

    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    FLOAT32 = "float32"
    ASCII = "ascii"
    BITFIELD = "bitfield"
    TIME = "time"  # time of day as HHMM in one register (14:30 -> 1430)
    DERIVED = "derived"  # sum of other points (no registers of its own)


class WordOrder(StrEnum):
    LOW_FIRST = "low_first"  # Deye/Sunsynk 32-bit values
    HIGH_FIRST = "high_first"  # Modbus "big endian" convention


class Access(StrEnum):
    READ = "r"
    READ_WRITE = "rw"


class Group(StrEnum):
    FAST = "fast"  # power, SOC, faults: every few seconds
    SLOW = "slow"  # energy counters, voltages: about every minute
    IDENTITY = "identity"  # device type, serial, rating: at start-up
    CONTROL = "control"  # writable settings: at start-up, after writes, periodically for drift


_WORDS = {Kind.UINT16: 1, Kind.INT16: 1, Kind.TIME: 1, Kind.UINT32: 2, Kind.INT32: 2, Kind.FLOAT32: 2}


class RegisterMapError(ValueError):
    """A profile file is malformed."""


class EncodeError(ValueError):
    """A value cannot be encoded for a point (out of range or not representable)."""


@dataclass(frozen=True)
class Point:
    """One named value of a device.

    ``value = raw * scale + offset``; for 16-bit points with a ``mask`` the raw value is
    ``(register & mask) >> lowest_set_bit(mask)`` and several points can share one register.
    """

    name: str
    addresses: tuple[int, ...]
    kind: Kind = Kind.UINT16
    scale: float = 1.0
    offset: float = 0.0
    word_order: WordOrder = WordOrder.HIGH_FIRST
    mask: int | None = None
    access: Access = Access.READ
    group: Group = Group.FAST
    min: float | None = None
    max: float | None = None
    enum: Mapping[int, str] = field(default_factory=dict, compare=False)
    codes: Mapping[int, str] = field(default_factory=dict, compare=False)  # bitfield: bit -> code
    sum_of: tuple[str, ...] = ()
    description: str = ""
    unit: str = ""  # of the scaled value ("W", "kWh", "%", "°C"...); "" = none (counts, enums, flags)
    device_class: str = ""  # what it measures, where the unit does not say (a SOC in % is "battery")

    @property
    def signed(self) -> bool:
        return self.kind in (Kind.INT16, Kind.INT32, Kind.FLOAT32)

    @property
    def writable(self) -> bool:
        return self.access is Access.READ_WRITE

    @property
    def numeric(self) -> bool:
        """True for points that :func:`decode` returns (everything but ascii and bitfield)."""
        return self.kind not in (Kind.ASCII, Kind.BITFIELD)

    @property
    def span(self) -> tuple[int, int]:
        """First and last register address the point needs (inclusive)."""
        return min(self.addresses), max(self.addresses)

    def code_for_bit(self, bit: int) -> str:
        return self.codes.get(bit, f"F{bit + 1:02}")


@dataclass(frozen=True)
class RegisterMap:
    """A device profile: its points plus bus facts, loaded from ``maps/<profile>.yaml``."""

    profile: str
    description: str
    points: tuple[Point, ...]
    register_space: tuple[tuple[int, int], ...]  # readable address ranges, inclusive
    default_unit_id: int = 1
    default_baud: int = 9600
    max_read_registers: int = MAX_READ_REGISTERS
    max_write_registers: int = MAX_WRITE_REGISTERS
    source: str = ""
    by_name: Mapping[str, Point] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.points})

    def __getitem__(self, name: str) -> Point:
        return self.by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def in_group(self, *groups: Group | str) -> tuple[Point, ...]:
        wanted = {Group(g) for g in groups}
        return tuple(p for p in self.points if p.group in wanted)

    @property
    def writable_points(self) -> tuple[Point, ...]:
        return tuple(p for p in self.points if p.writable)

    def points_at(self, address: int) -> tuple[Point, ...]:
        """Points that use register ``address``."""
        return tuple(p for p in self.points if address in p.addresses)

    def is_readable(self, start: int, count: int) -> bool:
        end = start + count - 1
        return any(lo <= start and end <= hi for lo, hi in self.register_space)

    def with_word_order(self, order: WordOrder | str) -> RegisterMap:
        """The same map with every 32-bit point using ``order`` (devices differ; make it configurable)."""
        wo = WordOrder(order)
        pts = tuple(
            replace(p, word_order=wo) if p.kind in _WORDS and _WORDS[p.kind] == 2 else p for p in self.points
        )
        return replace(self, points=pts)


@dataclass(frozen=True)
class Block:
    """One FC03 read: ``count`` registers from ``start``, covering ``points`` (names)."""

    start: int
    count: int
    points: tuple[str, ...]

    @property
    def end(self) -> int:
        """Last address read (inclusive)."""
        return self.start + self.count - 1


# ---------------------------------------------------------------- loading

_PROFILE_FILES = {
    "deye-sunsynk-1ph": "deye_sunsynk_1ph.yaml",
    "flow-transmitter": "flow_transmitter.yaml",
}


def available_profiles() -> tuple[str, ...]:
    return tuple(_PROFILE_FILES)


@cache
def load_profile(name: str) -> RegisterMap:
    """Load a packaged profile by name (``deye-sunsynk-1ph``, ``flow-transmitter``); cached."""
    try:
        fname = _PROFILE_FILES[name]
    except KeyError:
        raise KeyError(f"unknown register profile {name!r}; known: {', '.join(_PROFILE_FILES)}") from None
    text = resources.files("nattery_contracts.modbus").joinpath("maps", fname).read_text("utf-8")
    return parse_profile(yaml.safe_load(text))


def parse_profile(doc: Mapping[str, Any]) -> RegisterMap:
    """Build a :class:`RegisterMap` from a parsed YAML document (see the packaged maps for the schema)."""
    default_wo = WordOrder(doc.get("word_order", WordOrder.HIGH_FIRST))
    points: list[Point] = []
    for raw in doc["points"]:
        repeat = int(raw.get("repeat", 1))
        stride = int(raw.get("stride", 1))
        for i in range(repeat):
            points.append(_parse_point(raw, default_wo, i * stride, i + 1 if repeat > 1 else None))
    names = [p.name for p in points]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RegisterMapError(f"duplicate point names: {sorted(dupes)}")
    known = set(names)
    for p in points:
        missing = set(p.sum_of) - known
        if missing:
            raise RegisterMapError(f"{p.name}: sum_of refers to unknown points {sorted(missing)}")
    space = tuple((int(lo), int(hi)) for lo, hi in doc.get("register_space", [[0, 65535]]))
    for p in points:
        if p.addresses and not any(lo <= p.span[0] and p.span[1] <= hi for lo, hi in space):
            raise RegisterMapError(f"{p.name}: addresses {p.addresses} outside register_space")
    return RegisterMap(
        profile=str(doc["profile"]),
        description=str(doc.get("description", "")).strip(),
        points=tuple(points),
        register_space=space,
        default_unit_id=int(doc.get("unit_id", 1)),
        default_baud=int(doc.get("baud", 9600)),
        max_read_registers=int(doc.get("max_read_registers", MAX_READ_REGISTERS)),
        max_write_registers=int(doc.get("max_write_registers", MAX_WRITE_REGISTERS)),
        source=str(doc.get("source", "")).strip(),
    )


def _parse_point(raw: Mapping[str, Any], default_wo: WordOrder, shift: int, n: int | None) -> Point:
    name = str(raw["name"])
    if n is not None:
        name = name.format(n=n)
    kind = Kind(raw.get("kind", "derived" if "sum_of" in raw else "uint16"))
    addr = raw.get("addr", [])
    addresses = tuple(int(a) + shift for a in (addr if isinstance(addr, list) else [addr]))
    expected = _WORDS.get(kind)
    if kind is Kind.DERIVED:
        if addresses or not raw.get("sum_of"):
            raise RegisterMapError(f"{name}: derived points need sum_of and no addr")
    elif not addresses:
        raise RegisterMapError(f"{name}: no addr")
    elif expected is not None and len(addresses) != expected:
        raise RegisterMapError(f"{name}: {kind} needs {expected} register(s), got {addresses}")
    mask = raw.get("mask")
    if mask is not None and kind not in (Kind.UINT16, Kind.TIME):
        raise RegisterMapError(f"{name}: mask only allowed on uint16")
    if mask is not None and not 0 < int(mask) <= 0xFFFF:
        raise RegisterMapError(f"{name}: bad mask")
    access = Access(raw.get("access", "r"))
    mn = raw.get("min")
    mx = raw.get("max")
    return Point(
        name=name,
        addresses=addresses,
        kind=kind,
        scale=float(raw.get("scale", 1.0)),
        offset=float(raw.get("offset", 0.0)),
        word_order=WordOrder(raw.get("word_order", default_wo)),
        mask=int(mask) if mask is not None else None,
        access=access,
        group=Group(raw.get("group", "control" if access is Access.READ_WRITE else "fast")),
        min=float(mn) if mn is not None else None,
        max=float(mx) if mx is not None else None,
        enum={int(k): str(v) for k, v in (raw.get("enum") or {}).items()},
        codes={int(k): str(v) for k, v in (raw.get("codes") or {}).items()},
        sum_of=tuple(str(s) for s in raw.get("sum_of", ())),
        description=str(raw.get("description", "")).strip(),
        unit=str(raw.get("unit", "")),
        device_class=str(raw.get("device_class", "")),
    )


# ---------------------------------------------------------------- block grouping


def group_blocks(
    points: Iterable[Point],
    max_registers: int = MAX_READ_REGISTERS,
    max_gap: int = DEFAULT_MAX_GAP,
) -> list[Block]:
    """Group points into contiguous FC03 read blocks.

    Points are sorted by their first address; a hole of up to ``max_gap`` unused registers between
    points is read through, a larger hole starts a new block. A block never exceeds ``max_registers``
    and a point is never split across blocks (a 32-bit point, or one whose words are not adjacent
    like (78, 80), always lands whole in one block). Derived points are ignored (read their parts).
    """
    if not 1 <= max_registers <= MAX_READ_REGISTERS:
        raise ValueError(f"max_registers must be 1..{MAX_READ_REGISTERS}")
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    atoms = sorted((p.span[0], p.span[1], p.name) for p in points if p.addresses)
    blocks: list[Block] = []
    cur_start = cur_end = -1
    cur_names: list[str] = []
    for lo, hi, name in atoms:
        if hi - lo + 1 > max_registers:
            raise ValueError(f"point {name} spans {hi - lo + 1} registers > max_registers")
        if cur_names and lo - cur_end - 1 <= max_gap and max(hi, cur_end) - cur_start + 1 <= max_registers:
            cur_end = max(cur_end, hi)
            cur_names.append(name)
            continue
        if cur_names:
            blocks.append(Block(cur_start, cur_end - cur_start + 1, tuple(cur_names)))
        cur_start, cur_end, cur_names = lo, hi, [name]
    if cur_names:
        blocks.append(Block(cur_start, cur_end - cur_start + 1, tuple(cur_names)))
    return blocks


# ---------------------------------------------------------------- decoding


def _lowest_bit(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def _scaled(point: Point, raw: float) -> float:
    s = point.scale
    inv = 1.0 / s if s else 0.0
    # 2345 / 100 == 23.45 exactly as the literal; 2345 * 0.01 is not
    value = raw / round(inv) if s < 1.0 and inv and abs(inv - round(inv)) < 1e-9 else raw * s
    return round(value + point.offset, 9)  # 1256 * 0.1 - 100 -> 25.6, not 25.599999999999994


def _words(point: Point, regs: Mapping[int, int]) -> list[int]:
    return [regs[a] & 0xFFFF for a in point.addresses]


def _raw_value(point: Point, words: Sequence[int]) -> float:
    k = point.kind
    if k in (Kind.UINT16, Kind.TIME):
        w = words[0]
        if point.mask is not None:
            w = (w & point.mask) >> _lowest_bit(point.mask)
        return float(w)
    if k is Kind.INT16:
        w = words[0]
        return float(w - 0x10000 if w & 0x8000 else w)
    hi, lo = (words[1], words[0]) if point.word_order is WordOrder.LOW_FIRST else (words[0], words[1])
    if k is Kind.UINT32:
        return float((hi << 16) | lo)
    if k is Kind.INT32:
        v = (hi << 16) | lo
        return float(v - 0x1_0000_0000 if v & 0x8000_0000 else v)
    if k is Kind.FLOAT32:
        return float(struct.unpack(">f", struct.pack(">HH", hi, lo))[0])
    raise TypeError(f"{point.name}: {k} is not numeric")


def decode_point(point: Point, words: Sequence[int]) -> float:
    """Decode one numeric point from its register words (in ``point.addresses`` order)."""
    raw = _raw_value(point, words)
    if point.kind is Kind.FLOAT32:
        return raw * point.scale + point.offset
    return _scaled(point, raw)


def _as_dict(block_start: int, registers: Sequence[int] | Mapping[int, int]) -> Mapping[int, int]:
    if isinstance(registers, Mapping):
        return registers
    return {block_start + i: v for i, v in enumerate(registers)}


def _covered(point: Point, regs: Mapping[int, int]) -> bool:
    return bool(point.addresses) and all(a in regs for a in point.addresses)


def decode(
    rmap: RegisterMap, block_start: int, registers: Sequence[int] | Mapping[int, int]
) -> dict[str, float]:
    """Decode every numeric point wholly inside the registers read from ``block_start``.

    Derived points (``sum_of``) are included when all their parts are. ASCII and bitfield points
    are left out: use :func:`decode_text` and :func:`decode_faults`. ``registers`` may also be a
    mapping address -> value (then ``block_start`` is ignored), e.g. merged from several blocks.
    """
    regs = _as_dict(block_start, registers)
    out: dict[str, float] = {}
    for p in rmap.points:
        if p.numeric and p.kind is not Kind.DERIVED and _covered(p, regs):
            out[p.name] = decode_point(p, _words(p, regs))
    for p in rmap.points:
        if p.kind is Kind.DERIVED and all(s in out for s in p.sum_of):
            out[p.name] = math.fsum(out[s] for s in p.sum_of) * p.scale + p.offset
    return out


def decode_text(
    rmap: RegisterMap, block_start: int, registers: Sequence[int] | Mapping[int, int]
) -> dict[str, str]:
    """ASCII points (two characters per register, high byte first; NULs and spaces stripped)."""
    regs = _as_dict(block_start, registers)
    out: dict[str, str] = {}
    for p in rmap.points:
        if p.kind is Kind.ASCII and _covered(p, regs):
            data = b"".join(struct.pack(">H", w) for w in _words(p, regs))
            out[p.name] = data.replace(b"\x00", b"").decode("ascii", "replace").strip()
    return out


def bitfield_codes(point: Point, words: Sequence[int]) -> list[str]:
    """Active codes of a bitfield point: bit n over all its words (first word = bits 0-15)."""
    codes: list[str] = []
    for i, w in enumerate(words):
        for b in range(16):
            if w & (1 << b):
                codes.append(point.code_for_bit(i * 16 + b))
    return codes


def decode_faults(
    rmap: RegisterMap, block_start: int, registers: Sequence[int] | Mapping[int, int]
) -> dict[str, list[str]]:
    """Active codes of every bitfield point covered, e.g. ``{"fault_codes": ["F13", "F35"]}``."""
    regs = _as_dict(block_start, registers)
    return {
        p.name: bitfield_codes(p, _words(p, regs))
        for p in rmap.points
        if p.kind is Kind.BITFIELD and _covered(p, regs)
    }


# ---------------------------------------------------------------- encoding


def check_range(point: Point, value: float) -> None:
    """Raise :class:`EncodeError` if ``value`` is outside the point's min/max."""
    if isinstance(value, float) and not math.isfinite(value):
        raise EncodeError(f"{point.name}: value {value} is not finite")
    if point.min is not None and value < point.min:
        raise EncodeError(f"{point.name}: {value} < min {point.min}")
    if point.max is not None and value > point.max:
        raise EncodeError(f"{point.name}: {value} > max {point.max}")
    if point.kind is Kind.TIME:
        iv = round(value)
        if iv != value or not (0 <= iv // 100 <= 23 and 0 <= iv % 100 <= 59):
            raise EncodeError(f"{point.name}: {value} is not a time of day HHMM")


def encode(point: Point, value: float, *, current: int | None = None) -> list[int]:
    """Register words for ``value`` (in ``point.addresses`` order), after a range check.

    For masked points the other bits of the register come from ``current`` (read-modify-write;
    without it they are 0). Raises :class:`EncodeError` when out of range or not representable.
    """
    k = point.kind
    if k in (Kind.ASCII, Kind.BITFIELD, Kind.DERIVED):
        raise EncodeError(f"{point.name}: use encode_text/encode_faults for {k}")
    check_range(point, value)
    if k is Kind.FLOAT32:
        f = (value - point.offset) / point.scale
        try:
            hi, lo = struct.unpack(">HH", struct.pack(">f", f))
        except OverflowError as e:
            raise EncodeError(f"{point.name}: {value} does not fit float32") from e
        return [lo, hi] if point.word_order is WordOrder.LOW_FIRST else [hi, lo]
    s = point.scale
    inv = 1.0 / s
    if abs(inv - round(inv)) < 1e-9:
        raw = round((value - point.offset) * round(inv))
    else:
        raw = round((value - point.offset) / s)
    if k in (Kind.UINT16, Kind.TIME):
        if point.mask is not None:
            sh = _lowest_bit(point.mask)
            if not 0 <= raw <= point.mask >> sh:
                raise EncodeError(f"{point.name}: {value} does not fit mask {point.mask:#x}")
            base = (current or 0) & ~point.mask & 0xFFFF
            return [base | (raw << sh)]
        if not 0 <= raw <= 0xFFFF:
            raise EncodeError(f"{point.name}: {value} does not fit uint16")
        return [raw]
    if k is Kind.INT16:
        if not -0x8000 <= raw <= 0x7FFF:
            raise EncodeError(f"{point.name}: {value} does not fit int16")
        return [raw & 0xFFFF]
    if k is Kind.UINT32 and not 0 <= raw <= 0xFFFF_FFFF:
        raise EncodeError(f"{point.name}: {value} does not fit uint32")
    if k is Kind.INT32 and not -0x8000_0000 <= raw <= 0x7FFF_FFFF:
        raise EncodeError(f"{point.name}: {value} does not fit int32")
    u = raw & 0xFFFF_FFFF
    hi, lo = u >> 16, u & 0xFFFF
    return [lo, hi] if point.word_order is WordOrder.LOW_FIRST else [hi, lo]


def encode_text(point: Point, text: str) -> list[int]:
    """ASCII words for ``text`` (padded with NULs; raises if too long)."""
    if point.kind is not Kind.ASCII:
        raise EncodeError(f"{point.name}: not an ascii point")
    data = text.encode("ascii")
    size = 2 * len(point.addresses)
    if len(data) > size:
        raise EncodeError(f"{point.name}: {text!r} longer than {size} characters")
    data = data.ljust(size, b"\x00")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, size, 2)]


def encode_faults(point: Point, codes: Iterable[str]) -> list[int]:
    """Bitfield words with the bits for ``codes`` set (``F13`` -> bit 12, or a named code)."""
    if point.kind is not Kind.BITFIELD:
        raise EncodeError(f"{point.name}: not a bitfield point")
    nbits = 16 * len(point.addresses)
    by_code = {point.code_for_bit(b): b for b in range(nbits)}
    words = [0] * len(point.addresses)
    for code in codes:
        if code not in by_code:
            raise EncodeError(f"{point.name}: unknown code {code!r}")
        b = by_code[code]
        words[b // 16] |= 1 << (b % 16)
    return words


def store_value(
    point: Point, value: float | str | Iterable[str], registers: MutableMapping[int, int]
) -> None:
    """Encode ``value`` into an address -> word store (read-modify-write for masked points)."""
    if point.kind is Kind.ASCII:
        words = encode_text(point, str(value))
    elif point.kind is Kind.BITFIELD:
        assert not isinstance(value, (int, float, str))
        words = encode_faults(point, value)
    else:
        assert isinstance(value, (int, float))
        cur = registers.get(point.addresses[0], 0) if point.mask is not None else None
        words = encode(point, float(value), current=cur)
    for a, w in zip(point.addresses, words, strict=True):
        registers[a] = w
