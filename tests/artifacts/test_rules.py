"""Prometheus rules: promtool check rules, and promtool test rules with series per alert."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from appvitals.artifacts import prometheus_rules, to_yaml

SVC = 'job="svc"'


def _case(
    name: str, series: list[tuple[str, str]], at: str, alert: str, labels: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "name": name,
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series],
        "alert_rule_test": [
            {
                "eval_time": at,
                "alertname": alert,
                "exp_alerts": [{"exp_labels": label} for label in labels],
            }
        ],
    }


COUNT = "http_server_request_duration_seconds_count"
BUCKET = "http_server_request_duration_seconds_bucket"
OK = f'{COUNT}{{{SVC},http_route="/a",http_response_status_code="200"}}'
FAIL = f'{COUNT}{{{SVC},http_route="/a",http_response_status_code="500",error_type="500"}}'
PAGE = {"severity": "page", "job": "svc"}


def _slow_buckets() -> list[tuple[str, str]]:
    # Every request lands between 1 s and 2.5 s.
    series = [(f'{BUCKET}{{{SVC},le="{le}"}}', "0x80") for le in ("0.5", "1")]
    series += [(f'{BUCKET}{{{SVC},le="{le}"}}', "0+10x80") for le in ("2.5", "+Inf")]
    series.append((f"{COUNT}{{{SVC}}}", "0+10x80"))
    return series


CASES = [
    _case(
        "5xx rate", [(OK, "0+10x20"), (FAIL, "0+10x20")], "15m", "AppvitalsHighErrorRate", [PAGE]
    ),
    _case("healthy traffic", [(OK, "0+10x20")], "15m", "AppvitalsHighErrorRate", []),
    _case(
        "p95 latency",
        _slow_buckets(),
        "20m",
        "AppvitalsHighLatencyP95",
        [{"severity": "warning", "job": "svc"}],
    ),
    _case(
        "availability budget burn",
        [(OK, "0+10x80"), (FAIL, "0+10x80")],
        "70m",
        "AppvitalsAvailabilityBudgetBurnPage",
        [PAGE],
    ),
    _case(
        "latency budget burn",
        _slow_buckets(),
        "70m",
        "AppvitalsLatencyBudgetBurnPage",
        [PAGE],
    ),
    _case(
        "critical check down",
        [
            (
                f'appvitals_health_check_status_ratio{{{SVC},check_name="database",check_critical="true"}}',
                "0x10",
            )
        ],
        "5m",
        "AppvitalsHealthCheckFailing",
        [{**PAGE, "check_name": "database"}],
    ),
    _case(
        "non-critical check down",
        [
            (
                f'appvitals_health_check_status_ratio{{{SVC},check_name="disk",check_critical="false"}}',
                "0x20",
            )
        ],
        "15m",
        "AppvitalsHealthCheckDegraded",
        [{"severity": "warning", "job": "svc", "check_name": "disk"}],
    ),
    _case(
        "memory",
        [
            (
                f'system_memory_utilization_ratio{{{SVC},instance="i1",system_memory_state="used"}}',
                "0.95x10",
            )
        ],
        "8m",
        "AppvitalsMemoryHigh",
        [{"severity": "warning", "job": "svc", "instance": "i1"}],
    ),
    _case(
        "job failures",
        [
            (
                f'appvitals_job_runs_total{{{SVC},job_type="ERP_ARTICLE_SYNC",outcome="failed"}}',
                "0+1x20",
            )
        ],
        "15m",
        "AppvitalsJobFailures",
        [{**PAGE, "job_type": "ERP_ARTICLE_SYNC"}],
    ),
    _case(
        "job stale",
        [(f'appvitals_job_last_success_seconds{{{SVC},job_type="ERP_ARTICLE_SYNC"}}', "0x100")],
        "70m",
        "AppvitalsJobNotSucceeded",
        [
            {
                "severity": "warning",
                "job": "svc",
                "job_type": "ERP_ARTICLE_SYNC",
                "threshold": "ERP_ARTICLE_SYNC",
            }
        ],
    ),
    _case(
        "outgoing call errors",
        [
            (
                f'appvitals_http_client_errors_total{{{SVC},server_address="erp",category="Network",type="ConnectionRefused"}}',
                "0+5x30",
            ),
            (
                f'http_client_request_duration_seconds_count{{{SVC},server_address="erp"}}',
                "0+10x30",
            ),
        ],
        "20m",
        "AppvitalsOutgoingCallErrors",
        [{"severity": "warning", "job": "svc", "server_address": "erp", "category": "Network"}],
    ),
    _case(
        "telemetry dropped",
        [(f'appvitals_telemetry_dropped_total{{{SVC},signal="traces"}}', "0+3x20")],
        "12m",
        "AppvitalsTelemetryDropped",
        [{"severity": "warning", "job": "svc", "signal": "traces"}],
    ),
    _case(
        "internal errors",
        [(f'appvitals_internal_errors_total{{{SVC},where="span exporter"}}', "0+1x20")],
        "12m",
        "AppvitalsInternalErrors",
        [{"severity": "warning", "job": "svc", "where": "span exporter"}],
    ),
    _case(
        "cardinality overflow",
        [
            (
                f'appvitals_metrics_cardinality_overflow_total{{{SVC},instrument="page.hits"}}',
                "0+1x20",
            )
        ],
        "12m",
        "AppvitalsCardinalityOverflow",
        [{"severity": "warning", "job": "svc", "instrument": "page.hits"}],
    ),
]


def test_every_alert_has_a_promtool_test_and_annotations() -> None:
    """Each alert in the rule file is exercised below and carries the three annotations."""
    alerts = [r for g in prometheus_rules("svc")["groups"] for r in g["rules"] if "alert" in r]
    tested = {test["alert_rule_test"][0]["alertname"] for test in CASES}
    assert {a["alert"] for a in alerts} - tested <= {
        "AppvitalsAvailabilityBudgetBurnTicket",
        "AppvitalsLatencyBudgetBurnTicket",
    }
    for alert in alerts:
        assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}


def test_promtool_check_and_test_rules(tmp_path: Path, promtool: str) -> None:
    """The generated rules pass promtool check rules and the per-alert unit tests."""
    rules = tmp_path / "rules.yml"
    rules.write_text(to_yaml(prometheus_rules("svc", job_max_age={"ERP_ARTICLE_SYNC": 3600})))
    check = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # promtool compares annotations exactly; their templates were validated by `check` above,
    # so the unit tests run on the same rules without them and assert on labels.
    bare = prometheus_rules("svc", job_max_age={"ERP_ARTICLE_SYNC": 3600})
    for group in bare["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    unannotated = tmp_path / "rules_unannotated.yml"
    unannotated.write_text(to_yaml(bare))
    tests = tmp_path / "rules_test.yml"
    tests.write_text(
        to_yaml({"rule_files": [str(unannotated)], "evaluation_interval": "1m", "tests": CASES})
    )
    result = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_prometheus_config_is_valid(promtool: str) -> None:
    """deploy/prometheus.yml (scraping the app, loading the rules) passes promtool check config."""
    config = Path(__file__).resolve().parents[2] / "deploy" / "prometheus.yml"
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
