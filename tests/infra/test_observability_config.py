import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.dashboards import DASHBOARD_DIR, DASHBOARDS, dashboard_exprs, render
from infra.prometheus import PROM_DIR, render_config

promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")


def test_committed_dashboards_are_the_rendered_specs():
    for name, (title, panels) in DASHBOARDS.items():
        committed = json.loads((DASHBOARD_DIR / f"{name}.json").read_text())
        assert committed == render(name, title, panels)
    assert len(dashboard_exprs()) >= 20


def test_committed_prometheus_config_is_the_rendered_one():
    committed = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert committed == render_config(rules=Path("alerts.yml"))


@promtool
def test_promtool_accepts_config_and_rules():
    for args in (["check", "config", str(PROM_DIR / "prometheus.yml")],
                 ["check", "rules", str(PROM_DIR / "alerts.yml")]):
        result = subprocess.run(["promtool", *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_the_dashboards_and_datasource():
    root = DASHBOARD_DIR.parent / "provisioning"
    source = yaml.safe_load((root / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in source["datasources"]}
    for path in DASHBOARD_DIR.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["datasource"]["uid"] in uids
    provider = yaml.safe_load((root / "dashboards" / "marquee.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
