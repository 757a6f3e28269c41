"""Grafana dashboards for an appvitals-instrumented service.

Four dashboards — service overview (RED, errors by type, health), outgoing calls (phases,
errors by class, retries), jobs (runs, progress, durations, failures) and resources — in
Grafana's dashboard JSON model (schemaVersion 39), with a Prometheus data-source variable
and a ``job`` variable, so they import into any Grafana with a Prometheus data source.
"""

from __future__ import annotations

from typing import Any

from appvitals.artifacts import _catalog as m

SCHEMA_VERSION = 39
_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def grafana_dashboards(service: str | None = None) -> dict[str, dict[str, Any]]:
    """Dashboards by file name (``appvitals-overview.json`` …), as JSON-ready mappings.

    Args:
        service: preselect this Prometheus ``job`` in the ``job`` variable.

    Examples:
        >>> sorted(grafana_dashboards())
        ['appvitals-http-client.json', 'appvitals-jobs.json', 'appvitals-overview.json', \
'appvitals-resources.json']
    """
    builders = {
        "appvitals-overview.json": ("Service overview", _overview),
        "appvitals-http-client.json": ("Outgoing calls", _http_client),
        "appvitals-jobs.json": ("Jobs", _jobs),
        "appvitals-resources.json": ("Resources", _resources),
    }
    result = {}
    for filename, (title, build) in builders.items():
        panels = build()
        _layout(panels)
        uid = filename.removesuffix(".json")
        result[filename] = _dashboard(uid, f"appvitals · {title}", panels, service)
    return result


def _dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], service: str | None
) -> dict[str, Any]:
    job_current = {"text": service, "value": service} if service else {}
    return {
        "uid": uid,
        "title": title,
        "tags": ["appvitals"],
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Data source",
                },
                {
                    "name": "job",
                    "type": "query",
                    "label": "Service",
                    "datasource": _DATASOURCE,
                    "query": f"label_values({m.HTTP_SERVER_DURATION.series('_count')}, job)",
                    "refresh": 2,
                    "current": job_current,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def _panel(
    title: str, unit: str, *exprs: tuple[str, str], kind: str = "timeseries"
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "datasource": _DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + index), "expr": expr, "legendFormat": legend}
            for index, (expr, legend) in enumerate(exprs)
        ],
    }


def _layout(panels: list[dict[str, Any]]) -> None:
    for index, panel in enumerate(panels):
        panel["id"] = index + 1
        panel["gridPos"] = {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 8}


_J = '{job=~"$job"}'


def _j(*extra: str) -> str:
    return "{" + ",".join(['job=~"$job"', *extra]) + "}"


_WITH_ERROR = _j('error_type!=""')
_USED = _j('system_memory_state="used"')


def _overview() -> list[dict[str, Any]]:
    count = m.HTTP_SERVER_DURATION.series("_count")
    bucket = m.HTTP_SERVER_DURATION.series("_bucket")
    five_xx = 'http_response_status_code=~"5.."'
    return [
        _panel(
            "Requests per second by route",
            "reqps",
            (f"sum by (http_route) (rate({count}{_J}[5m]))", "{{http_route}}"),
        ),
        _panel(
            "Error ratio (5xx)",
            "percentunit",
            (f"sum(rate({count}{_j(five_xx)}[5m])) / sum(rate({count}{_J}[5m]))", "5xx"),
        ),
        _panel(
            "Latency p50 / p95 / p99",
            "s",
            *[
                (
                    f"histogram_quantile({q}, sum by (le) (rate({bucket}{_J}[5m])))",
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
        ),
        _panel(
            "Errors by type",
            "reqps",
            (f"sum by (error_type) (rate({count}{_WITH_ERROR}[5m]))", "{{error_type}}"),
        ),
        _panel("Active requests", "short", (f"sum({m.HTTP_SERVER_ACTIVE.name}{_J})", "active")),
        _panel(
            "Health checks (1 = healthy)",
            "short",
            (f"min by (check_name) ({m.HEALTH_STATUS.name}{_J})", "{{check_name}}"),
            kind="stat",
        ),
    ]


def _http_client() -> list[dict[str, Any]]:
    count = m.HTTP_CLIENT_DURATION.series("_count")
    phase = m.HTTP_CLIENT_PHASE.series("_bucket")
    return [
        _panel(
            "Outgoing calls per second by host",
            "reqps",
            (f"sum by (server_address) (rate({count}{_J}[5m]))", "{{server_address}}"),
        ),
        _panel(
            "Errors by class",
            "reqps",
            (
                f"sum by (category, type) (rate({m.HTTP_CLIENT_ERRORS.name}{_J}[5m]))",
                "{{category}} / {{type}}",
            ),
        ),
        _panel(
            "Phase p95 (dns, connect, tls, first byte, download)",
            "s",
            (f"histogram_quantile(0.95, sum by (phase, le) (rate({phase}{_J}[5m])))", "{{phase}}"),
        ),
        _panel(
            "Retries per second",
            "short",
            (
                f"sum by (server_address) (rate({m.HTTP_CLIENT_RETRIES.name}{_J}[5m]))",
                "{{server_address}}",
            ),
        ),
    ]


def _jobs() -> list[dict[str, Any]]:
    bucket = m.JOB_DURATION.series("_bucket")
    return [
        _panel(
            "Runs by outcome (per hour)",
            "short",
            (
                f"sum by (job_type, outcome) (increase({m.JOB_RUNS.name}{_J}[1h]))",
                "{{job_type}} {{outcome}}",
            ),
        ),
        _panel(
            "Active runs", "short", (f"sum by (job_type) ({m.JOB_ACTIVE.name}{_J})", "{{job_type}}")
        ),
        _panel(
            "Progress of active runs",
            "percentunit",
            (
                f"max by (job_type, job_run_id) ({m.JOB_PROGRESS.name}{_J})",
                "{{job_type}} {{job_run_id}}",
            ),
        ),
        _panel(
            "Duration p95",
            "s",
            (
                f"histogram_quantile(0.95, sum by (job_type, le) (rate({bucket}{_J}[1h])))",
                "{{job_type}}",
            ),
        ),
        _panel(
            "Items by result (per hour)",
            "short",
            (
                f"sum by (job_type, result) (increase({m.JOB_ITEMS.name}{_J}[1h]))",
                "{{job_type}} {{result}}",
            ),
        ),
        _panel(
            "Time since last success",
            "s",
            (f"time() - max by (job_type) ({m.JOB_LAST_SUCCESS.name}{_J})", "{{job_type}}"),
        ),
    ]


def _resources() -> list[dict[str, Any]]:
    return [
        _panel(
            "Process CPU utilisation",
            "percentunit",
            (f"sum by (instance) ({m.PROCESS_CPU_UTILIZATION.name}{_J})", "{{instance}}"),
        ),
        _panel(
            "Process memory (RSS)",
            "bytes",
            (f"sum by (instance) ({m.PROCESS_MEMORY.name}{_J})", "{{instance}}"),
        ),
        _panel(
            "System memory used",
            "percentunit",
            (f"max by (instance) ({m.SYSTEM_MEMORY_UTILIZATION.name}{_USED})", "{{instance}}"),
        ),
        _panel(
            "Telemetry dropped / internal errors",
            "short",
            (
                f"sum by (signal) (increase({m.TELEMETRY_DROPPED.name}{_J}[10m]))",
                "dropped {{signal}}",
            ),
            (f"sum by (where) (increase({m.INTERNAL_ERRORS.name}{_J}[10m]))", "error in {{where}}"),
        ),
    ]
