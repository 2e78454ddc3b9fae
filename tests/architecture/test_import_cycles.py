"""No import cycle between modules of the project, and packages depend on each other only downwards.

What counts: every ``import`` / ``from ... import`` statement in a first-party module (at any depth,
``if TYPE_CHECKING:`` included), resolved to the first-party module it names (``from pkg import sub``
is ``pkg.sub`` when that module exists, else ``pkg``). Implicit parent-package imports are not edges.
See conftest.py for how modules are found.
"""

from __future__ import annotations

from arch_source import cycles, cyclic_components, import_graph, modules

# Import edges (importer, imported) known to close a cycle today, each being removed by its owner.
# Removing an edge here is how the list shrinks; test_known_cycle_edges_still_exist fails when an
# entry no longer exists or no longer closes a cycle, so the list cannot go stale.
# (The one cycle of the last commit, nattery_trading.optimiser.lp <-> .reasons, is removed by trading's
# split of issue 10, already in the work tree.)
KNOWN_CYCLE_EDGES: list[tuple[str, str]] = []

# Which first-party packages each may import (ARCHITECTURE §2: services never import each other; the
# edge installs the light contracts package only; contracts and the bundled data import nothing of
# ours; the data package is read by trading's back-test, the simulator and integration's replay).
ALLOWED_PACKAGE_IMPORTS: dict[str, set[str]] = {
    "nattery_contracts": set(),
    "nattery_data": set(),
    "nattery_shared": {"nattery_contracts"},
    "nattery_device": {"nattery_contracts", "nattery_shared"},
    "nattery_trading": {"nattery_contracts", "nattery_shared", "nattery_data"},
    "nattery_analytics": {"nattery_contracts", "nattery_shared"},
    "nattery_user": {"nattery_contracts", "nattery_shared"},
    "nattery_integration": {"nattery_contracts", "nattery_shared", "nattery_data"},
    "nattery_bridge": {"nattery_contracts"},
    "nattery_sim": {"nattery_contracts", "nattery_data"},
}


def _without_known(graph: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    known = set(KNOWN_CYCLE_EDGES)
    return {a: frozenset(b for b in bs if (a, b) not in known) for a, bs in graph.items()}


def test_the_walk_sees_the_project() -> None:
    """Guards the walker itself: every package found, and real edges resolved (a walker that found
    nothing would pass the cycle test trivially)."""
    graph = import_graph()
    assert {name.split(".")[0] for name in modules()} == set(ALLOWED_PACKAGE_IMPORTS)
    assert "nattery_device.devices.service" in graph["nattery_device.devices.endpoints"]
    assert "nattery_contracts.events" in graph["nattery_shared.rabbit"]
    assert sum(map(len, graph.values())) > 500


def test_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": [], "e": ["e"]}) == [
        ["a", "b", "c", "a"],
        ["e", "e"],
    ]
    assert cycles({"a": ["b"], "b": []}) == []


def test_no_import_cycle() -> None:
    found = cycles(_without_known(import_graph()))
    assert not found, "import cycles (each printed as a chain of imports):\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in found
    )


def test_known_cycle_edges_still_exist() -> None:
    graph = import_graph()
    stale = [edge for edge in KNOWN_CYCLE_EDGES if edge[1] not in graph.get(edge[0], frozenset())]
    assert not stale, f"remove from KNOWN_CYCLE_EDGES (the import is gone): {stale}"
    # an edge closes a cycle exactly when both ends are in one strongly connected component
    components = cyclic_components(graph)
    fixed = [(a, b) for a, b in KNOWN_CYCLE_EDGES if not any(a in c and b in c for c in components)]
    assert not fixed, f"remove from KNOWN_CYCLE_EDGES (no longer part of a cycle): {fixed}"


def test_packages_import_only_what_they_may() -> None:
    wrong = sorted(
        f"{importer} imports {imported}"
        for importer, targets in import_graph().items()
        for imported in targets
        if (src := importer.split(".")[0]) != (dst := imported.split(".")[0])
        and dst not in ALLOWED_PACKAGE_IMPORTS[src]
    )
    assert not wrong, "imports across package lines that ARCHITECTURE §2 forbids:\n  " + "\n  ".join(wrong)
