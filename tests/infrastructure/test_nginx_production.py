"""The compose gateway config (same template + production.conf) passes `nginx -t`.

Rendered as the nginx image does (envsubst on NATTERY_* only), with the container paths moved into a
temporary prefix and a throwaway self-signed certificate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

NGINX_DIR = REPO_ROOT / "infrastructure" / "nginx"
COMPOSE_VALUES = {
    # Resolvable stand-ins: nginx -t resolves upstream host names.
    "NATTERY_DEVICE_UPSTREAM": "127.0.0.1:3001",
    "NATTERY_TRADING_UPSTREAM": "127.0.0.1:3002",
    "NATTERY_ANALYTICS_UPSTREAM": "127.0.0.1:3003",
    "NATTERY_USER_UPSTREAM": "127.0.0.1:3004",
    "NATTERY_INTEGRATION_UPSTREAM": "127.0.0.1:3005",
    "NATTERY_DASHBOARD_ORIGIN": "https://app.example.com",
}

pytestmark = pytest.mark.skipif(
    not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()) or not shutil.which("envsubst"),
    reason="nginx/envsubst not installed",
)


def test_production_gateway_config_is_valid(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    (tmp_path / "logs").mkdir()
    (tmp_path / "certs").mkdir()
    shutil.copytree(NGINX_DIR / "nattery", tmp_path / "nattery")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test",
            "-keyout",
            str(tmp_path / "certs" / "tls.key"),
            "-out",
            str(tmp_path / "certs" / "tls.crt"),
        ],
        check=True,
        capture_output=True,
    )
    variables = " ".join(f"${{{name}}}" for name in COMPOSE_VALUES)
    rendered = subprocess.run(
        ["envsubst", variables],
        input=(NGINX_DIR / "nattery-http.conf.template").read_text(),
        env={**os.environ, **COMPOSE_VALUES},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "${" not in rendered
    (tmp_path / "00-nattery-http.conf").write_text(rendered)
    production = (NGINX_DIR / "production.conf").read_text()
    production = production.replace("/etc/nginx/certs/", f"{tmp_path}/certs/")
    production = production.replace("/var/log/nginx/", f"{tmp_path}/logs/")
    (tmp_path / "default.conf").write_text(production)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\nevents {{}}\n"
        "http {\n    include 00-nattery-http.conf;\n    include default.conf;\n}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-e", "logs/error.log", "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
