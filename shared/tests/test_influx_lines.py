from datetime import UTC, datetime

import pytest

from nattery_shared.influx import _parse_results, line


def test_line_protocol_escapes_sorts_tags_and_writes_floats() -> None:
    ts = datetime(2026, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)
    text = line("inverter", {"site": "a b", "org": "o,1"}, {"battery_power_w": 12, "x=y": -1.5}, ts)
    assert text == r"inverter,org=o\,1,site=a\ b battery_power_w=12.0,x\=y=-1.5 1767225601500000000"


def test_line_drops_non_finite_and_needs_a_field() -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    assert "nan" not in line("m", {}, {"a": float("nan"), "b": 1.0}, ts)
    with pytest.raises(ValueError):
        line("m", {}, {"a": float("inf")}, ts)


def test_query_results_become_typed_rows() -> None:
    payload = {
        "results": [
            {
                "statement_id": 0,
                "series": [
                    {
                        "name": "inverter",
                        "tags": {"device": "d1"},
                        "columns": ["time", "mean"],
                        "values": [[1000, 2.5]],
                    }
                ],
            }
        ]
    }
    [[series]] = _parse_results(payload)
    assert series.tags == {"device": "d1"}
    assert series.rows == [{"time": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), "mean": 2.5}]


def test_timestamps_are_exact_to_the_microsecond() -> None:
    # 1767225601.000001 is not representable as a float: float maths would give ...000000.
    ts = datetime(2026, 1, 1, 0, 0, 1, 1, tzinfo=UTC)
    assert line("m", {}, {"a": 1.0}, ts).endswith(" 1767225601000001000")
