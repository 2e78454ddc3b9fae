"""No SQL text outside repository modules and migrations.

What counts as SQL: a string literal (not a docstring; f-strings by their literal parts) in a
first-party module that begins, after whitespace, ``(`` and ``--`` comments, with the upper-case
keywords of a statement (``SELECT x``, ``INSERT INTO``, ``UPDATE t SET``, ``DELETE FROM``, ``WITH t AS (``,
``CREATE/ALTER/DROP TABLE|INDEX|...``, ``TRUNCATE``, ``PRAGMA``) or of a clause only a query builder
writes (``WHERE x =``, ``AND x <``, ``ORDER BY``, ``GROUP BY``, ``JOIN t``, ``ON CONFLICT``,
``RETURNING``, ``LIMIT %s``). InfluxQL counts too: a query is a query, whichever store answers it.
Exact pattern: ``SQL_START`` in arch_source.py.

Where SQL belongs: ``repository.py`` / ``*_repository.py``, a ``repositories/`` package, anything under
``migrations/``; plus ALLOWED_SQL_MODULES below.
"""

from __future__ import annotations

from arch_source import ROOT, SQL_START, is_sql_home, modules, sql_literals

# Modules whose whole job is SQL of the kit's own mechanics, or a store that is its package's
# repository under another name. Permanent; each with its reason.
ALLOWED_SQL_MODULES: dict[str, str] = {
    "shared/src/nattery_shared/db.py": "the pool's readiness ping (SELECT 1)",
    "shared/src/nattery_shared/migrations.py": "alembic runner: schema and version-table SQL",
    "shared/src/nattery_shared/dedup.py": "the consumed-events table every service uses",
    "shared/src/nattery_shared/outbox.py": "the outbox table every publishing service uses",
    "edge/modbus-bridge/src/nattery_bridge/store.py": "the bridge's SQLite outbox: its repository",
}

# Modules with SQL today that their owners are moving into repositories (issue 10). Remove an entry
# when its SQL has moved: test_known_violations_still_exist fails on an entry without SQL (or gone),
# so this list only shrinks and never goes stale.
KNOWN_VIOLATIONS: dict[str, str] = {}


def _violations() -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = {}
    for module in modules().values():
        if is_sql_home(module) or module.rel in ALLOWED_SQL_MODULES:
            continue
        if literals := sql_literals(module):
            found[module.rel] = literals
    return found


def test_the_pattern_tells_sql_from_prose() -> None:
    for sql in (
        "SELECT 1",
        "SELECT id, org_id FROM devices WHERE org_id = %s",
        "\n  INSERT INTO outbox (id) VALUES (%s)",
        "UPDATE outbox SET published_at = now() WHERE id = %s",
        "DELETE FROM x WHERE id = ANY(%s)",
        "WITH due AS (SELECT 1) SELECT * FROM due",
        "CREATE UNIQUE INDEX i ON t (c)",
        " AND time < now()",
        " WHERE site_id = %s",
        " ORDER BY created_at",
        "ON CONFLICT (id) DO NOTHING",
        "-- why\nSELECT 1",
        "PRAGMA journal_mode=WAL",
    ):
        assert SQL_START.match(sql), sql
    for prose in (
        "select a site first",
        "Select the cheapest slots",
        "Update the plan when prices change",
        "SELECTED",
        "WHERE the battery is",
        "ORDER",
        "/api/device/v1/sites",
        "AND",
    ):
        assert not SQL_START.match(prose), prose


def test_no_sql_outside_repositories_and_migrations() -> None:
    new = {path: lines for path, lines in _violations().items() if path not in KNOWN_VIOLATIONS}
    assert not new, (
        "SQL text outside repository modules and migrations; move it into the area's repository.py "
        "(a function per query) and call that:\n"
        + "\n".join(f"  {path}:{line}: {text}" for path, lines in sorted(new.items()) for line, text in lines)
    )


def test_known_violations_still_exist() -> None:
    found = _violations()
    gone = sorted(path for path in KNOWN_VIOLATIONS if path not in found)
    assert not gone, f"no SQL left in these (or they are gone): remove them from KNOWN_VIOLATIONS: {gone}"


def test_allowed_modules_exist_and_hold_sql() -> None:
    by_rel = {m.rel: m for m in modules().values()}
    for path in ALLOWED_SQL_MODULES:
        assert (ROOT / path).exists(), f"{path} is gone: remove it from ALLOWED_SQL_MODULES"
        assert sql_literals(by_rel[path]), f"{path} has no SQL any more: remove it from ALLOWED_SQL_MODULES"
