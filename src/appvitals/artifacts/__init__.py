"""Operator artifacts generated for the metrics appvitals really emits.

``prometheus_rules()`` returns alerting and recording rules (RED, SLO burn rates, health,
jobs, outgoing calls, instrumentation health); ``grafana_dashboards()`` returns Grafana
dashboards; ``to_yaml()`` renders rules for Prometheus. The ``appvitals export`` command
prints them. Metric names come from :mod:`appvitals.artifacts._catalog`, translated with the
same function that renders ``/metrics``, and a test checks every name against what the
library emits.
"""

from appvitals.artifacts._dashboards import grafana_dashboards
from appvitals.artifacts._rules import prometheus_rules
from appvitals.artifacts._yaml import to_yaml

__all__ = ["grafana_dashboards", "prometheus_rules", "to_yaml"]
