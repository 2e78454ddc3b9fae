"""The plan job and result messages (JSON) and how a worker turns one into the other."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

import numpy as np

from nattery_trading.optimiser import Battery, Plan, PlanInput, Site, solve


def encode_job(job_id: uuid.UUID, site_id: uuid.UUID, inp: PlanInput) -> bytes:
    return json.dumps(
        {
            "job_id": str(job_id),
            "site_id": str(site_id),
            "start": inp.start.isoformat(),
            "slot_minutes": inp.slot_minutes,
            "import_price_p_per_kwh": np.round(inp.import_price_p_per_kwh, 4).tolist(),
            "export_price_p_per_kwh": np.round(inp.export_price_p_per_kwh, 4).tolist(),
            "load_kw": np.round(inp.load_kw, 4).tolist(),
            "pv_kw": np.round(inp.pv_kw, 4).tolist(),
            "initial_soc_pct": inp.initial_soc_pct,
            "battery": asdict(inp.battery),
            "site": {k: (None if v == float("inf") else v) for k, v in asdict(inp.site).items()},
            "terminal_value_p_per_kwh": inp.terminal_value_p_per_kwh,
        },
        separators=(",", ":"),
    ).encode()


def decode_job(body: bytes) -> tuple[str, str, PlanInput]:
    d: dict[str, Any] = json.loads(body)
    site = {k: (float("inf") if v is None and k.endswith("_kw") else v) for k, v in d["site"].items()}
    inp = PlanInput(
        start=datetime.fromisoformat(d["start"]),
        slot_minutes=int(d["slot_minutes"]),
        import_price_p_per_kwh=np.asarray(d["import_price_p_per_kwh"], dtype=np.float64),
        export_price_p_per_kwh=np.asarray(d["export_price_p_per_kwh"], dtype=np.float64),
        load_kw=np.asarray(d["load_kw"], dtype=np.float64),
        pv_kw=np.asarray(d["pv_kw"], dtype=np.float64),
        initial_soc_pct=float(d["initial_soc_pct"]),
        battery=Battery(**d["battery"]),
        site=Site(**site),  # type: ignore[arg-type]
        terminal_value_p_per_kwh=d["terminal_value_p_per_kwh"],
    )
    return d["job_id"], d["site_id"], inp


def encode_result(job_id: str, site_id: str, plan: Plan) -> bytes:
    return json.dumps(
        {
            "job_id": job_id,
            "site_id": site_id,
            "status": plan.status,
            "method": plan.method,
            "objective_p": None if np.isnan(plan.objective_p) else round(plan.objective_p, 4),
            "battery_power_kw": np.round(plan.battery_power_kw, 4).tolist(),
            "soc_pct": np.round(plan.soc_pct, 3).tolist(),
            "reasons": plan.reasons,
            "solve_ms": round(plan.solve_ms, 3),
        },
        separators=(",", ":"),
    ).encode()


def run_job(body: bytes) -> bytes:
    """One job, or a JSON array of jobs (a batch: fewer messages per battery) → result(s) alike."""
    if body[:1] == b"[":
        results = [run_job(json.dumps(j, separators=(",", ":")).encode()) for j in json.loads(body)]
        return b"[" + b",".join(results) + b"]"
    job_id, site_id, inp = decode_job(body)
    return encode_result(job_id, site_id, solve(inp))


def batch(bodies: list[bytes], size: int) -> list[bytes]:
    """Group encoded jobs into messages of ``size`` jobs (``size`` 1 keeps one job per message)."""
    if size <= 1:
        return bodies
    return [b"[" + b",".join(bodies[i : i + size]) + b"]" for i in range(0, len(bodies), size)]
