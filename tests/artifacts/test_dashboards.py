"""Grafana dashboards: the JSON model's shape, and the shipped files are up to date."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from appvitals._cli_export import dashboard_files, rules_file
from appvitals.artifacts import grafana_dashboards, prometheus_rules, to_yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PANEL_TYPES = {"timeseries", "stat", "gauge", "table", "bargauge", "text"}


@pytest.mark.parametrize("service", [None, "checkout"])
def test_dashboard_json_model_shape(service: str | None) -> None:
    """Each dashboard has Grafana's required fields, valid panels and a 24-column grid."""
    for filename, board in grafana_dashboards(service).items():
        json.dumps(board)  # serialisable
        assert filename == board["uid"] + ".json"
        assert isinstance(board["schemaVersion"], int)
        assert board["title"].startswith("appvitals")
        names = [v["name"] for v in board["templating"]["list"]]
        assert names == ["datasource", "job"]
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["type"] in PANEL_TYPES
            grid = panel["gridPos"]
            assert set(grid) == {"h", "w", "x", "y"}
            assert grid["x"] >= 0
            assert grid["x"] + grid["w"] <= 24
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert re.fullmatch(r"[A-Z]", target["refId"])
                assert 'job=~"$job"' in target["expr"]
                assert target["expr"].count("(") == target["expr"].count(")")
    if service:
        job = grafana_dashboards(service)["appvitals-overview.json"]["templating"]["list"][1]
        assert job["current"] == {"text": service, "value": service}


def test_shipped_files_match_the_generator() -> None:
    """deploy/ holds exactly what `appvitals export` generates (regenerate, do not edit).

    Regenerate with ``appvitals export prometheus-rules > deploy/appvitals-rules.yml`` and
    ``appvitals export grafana-dashboard --output-dir deploy/grafana``.
    """
    files = dashboard_files()
    assert sorted(files) == sorted(grafana_dashboards())
    for filename, text in files.items():
        assert (DEPLOY / "grafana" / filename).read_text() == text, filename
    assert (
        json.loads(files["appvitals-overview.json"])
        == grafana_dashboards()["appvitals-overview.json"]
    )
    rules = (DEPLOY / "appvitals-rules.yml").read_text()
    assert rules == rules_file()
    assert rules.split("\n", 1)[1] == to_yaml(prometheus_rules())
