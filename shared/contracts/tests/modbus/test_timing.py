from __future__ import annotations

import pytest

from nattery_contracts.modbus import (
    bits_per_char,
    frame_time_s,
    read_response_size,
    t15_s,
    t35_s,
    transaction_time_s,
    write_request_size,
)


def test_timing() -> None:
    assert frame_time_s(8, 9600) == pytest.approx(8 * 10 / 9600)
    assert frame_time_s(8, 9600, 11) == pytest.approx(8 * 11 / 9600)
    assert t35_s(9600) == pytest.approx(0.0036458, rel=1e-3)
    assert t35_s(9600, 11) == pytest.approx(0.0040104, rel=1e-3)
    assert t35_s(38400) == 0.00175
    assert t35_s(19200) == pytest.approx(3.5 * 10 / 19200)
    assert t15_s(9600) == pytest.approx(0.0015625, rel=1e-3) and t15_s(38400) == 0.00075
    # reference table (modbus-rtu.md §4): FC03 60 registers at 9600 8N1 = 145.8 ms incl. 2 x t3.5
    assert transaction_time_s(8, read_response_size(60), 9600) == pytest.approx(0.1458, abs=5e-4)
    assert transaction_time_s(8, read_response_size(1), 9600) == pytest.approx(0.0229, abs=5e-4)
    # FC16 6 registers: 21 + 8 bytes = 37.5 ms
    assert transaction_time_s(write_request_size(6), 8, 9600) == pytest.approx(0.0375, abs=5e-4)


def test_frame_sizes_at_the_limits() -> None:
    assert read_response_size(125) == 255  # the largest RTU ADU is 256 bytes
    assert write_request_size(123) == 255


def test_bits_per_char() -> None:
    assert bits_per_char(8, "N", 1) == 10  # 8N1, what Deye uses
    assert bits_per_char(8, "E", 1) == 11  # 8E1, the spec's default
    assert bits_per_char(8, "N", 2) == 11  # 8N2, the spec's choice without parity
