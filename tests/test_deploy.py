"""deploy/: the files an operator copies are well-formed and say what the README promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
METRICS = [
    "contactsync_runs_total",
    "contactsync_run_duration_seconds",
    "contactsync_last_success_timestamp_seconds",
    "contactsync_cursor_lag_seconds",
    "contactsync_outbox_pending",
    "contactsync_outbox_oldest_pending_age_seconds",
    "contactsync_writes_total",
    "contactsync_http_requests_total",
    "contactsync_rate_limit_wait_seconds_total",
    "contactsync_conflicts_open",
    "contactsync_webhook_events_total",
]


def test_the_dashboard_charts_every_metric() -> None:
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for name in METRICS:
        assert name in exprs, name


def test_prometheus_scrapes_metrics() -> None:
    cfg = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = cfg["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"]


def test_compose_runs_postgres_and_the_daemon() -> None:
    cfg = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = cfg["services"]
    assert services["db"]["image"].startswith("postgres")
    assert services["contactsync"]["command"][0] == "run"
    assert services["contactsync"]["stop_signal"] == "SIGTERM"
    assert "postgresql+psycopg://" in services["contactsync"]["environment"]["CONTACTSYNC_DATABASE_URL"]


def test_the_systemd_unit_restarts_on_failure_and_stops_with_sigterm() -> None:
    unit = (DEPLOY / "contactsync.service").read_text()
    for line in ("Restart=on-failure", "KillSignal=SIGTERM", "User=contactsync"):
        assert re.search(rf"^{re.escape(line)}$", unit, re.M), line
    assert re.search(r"^ExecStart=\S*contactsync run -c ", unit, re.M)


def test_the_image_runs_as_a_user_not_root() -> None:
    lines = [ln.strip() for ln in (DEPLOY / "Dockerfile").read_text().splitlines() if ln.strip()]
    assert any(ln.startswith("FROM ") and "slim" in ln for ln in lines) or any("python:3.11-slim" in ln for ln in lines)
    assert "RUN pip install . \\" in lines
    users = [ln for ln in lines if ln.startswith("USER ")]
    assert users and not users[-1].split()[1].startswith(("root", "0"))
    assert lines[-1] == 'CMD ["run", "-c", "/etc/contactsync/config.yaml"]'
