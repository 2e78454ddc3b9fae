"""The project's bundled real data (prices, household demand, PV), one copy each: see SOURCES.md.

A package of its own with no dependencies, so that trading, the simulator and the integration service's
replay read the same files without depending on each other.
"""

from __future__ import annotations

from pathlib import Path

AGILE_IMPORT_REGION_J = "octopus_agile_import_region_J_2020-2022.csv"
UK_HOUSEHOLD_DEMAND = "uk_average_household_demand_halfhourly_kw.csv"
PVGIS_OXFORD_2016 = "pvgis_oxford_2016_hourly_w.csv"

DATA_DIR = Path(__file__).resolve().parent


def path(name: str) -> Path:
    """The bundled file ``name``; FileNotFoundError names what exists when it is not one of them."""
    found = DATA_DIR / name
    if found.parent != DATA_DIR or not found.is_file():
        have = sorted(p.name for p in DATA_DIR.glob("*.csv"))
        raise FileNotFoundError(f"no bundled data file {name!r}; bundled: {', '.join(have)}")
    return found
