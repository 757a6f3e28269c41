"""Configuration: defaults → environment → arguments, and invalid values never raising."""

from __future__ import annotations

import logging

import pytest

import appvitals
from appvitals._config import Config, parse_key_values, resolve


def test_defaults() -> None:
    """With nothing set: jsonl exporter, 10 % parent-based sampling, every signal on."""
    config = resolve({}, environ={})
    assert config == Config(
        otlp_endpoints=config.otlp_endpoints, otlp_protocols=config.otlp_protocols
    )
    assert config.exporter == "jsonl"
    assert config.sampler == "parentbased_traceidratio"
    assert config.sampler_ratio == 0.1
    assert config.otlp_protocols == dict.fromkeys(("traces", "metrics", "logs"), "http/protobuf")


def test_environment_is_read() -> None:
    """OTEL_* and APPVITALS_* variables set the corresponding settings."""
    config = resolve(
        {},
        environ={
            "OTEL_SERVICE_NAME": "orders",
            "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.2,deployment.environment.name=prod,team=a%20b",
            "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://logs:4318/custom",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=secret",
            "OTEL_METRIC_EXPORT_INTERVAL": "2500",
            "OTEL_SDK_DISABLED": "false",
            "APPVITALS_LOGS": "off",
            "APPVITALS_SHUTDOWN_TIMEOUT": "1.5",
        },
    )
    assert config.service_name == "orders"
    assert config.service_version == "1.2"
    assert config.environment == "prod"
    assert config.resource_attributes["team"] == "a b"
    assert config.exporter == "otlp", "an OTLP endpoint makes otlp the default exporter"
    assert config.sampler == "always_on"
    assert config.sampler_ratio == 1.0
    assert config.otlp_endpoints == {
        "traces": "http://collector:4318/v1/traces",
        "metrics": "http://collector:4318/",
        "logs": "http://logs:4318/custom",
    }
    assert config.otlp_protocols["metrics"] == "grpc"
    assert config.otlp_headers == {"api-key": "secret"}
    assert config.metric_export_interval == 2.5
    assert config.logs is False
    assert config.shutdown_timeout == 1.5


def test_arguments_beat_environment() -> None:
    """An explicit argument wins over the environment."""
    config = resolve(
        {"service_name": "arg", "exporter": "console", "sampler_ratio": 0.5},
        environ={"OTEL_SERVICE_NAME": "env", "APPVITALS_EXPORTER": "none"},
    )
    assert (config.service_name, config.exporter) == ("arg", "console")
    assert (config.sampler, config.sampler_ratio) == ("parentbased_traceidratio", 0.5)


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("OTEL_TRACES_SAMPLER_ARG", "abc", "sampler_ratio", 0.1),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "sampler_ratio", 0.1),
        ("OTEL_TRACES_SAMPLER", "sometimes", "sampler", "parentbased_traceidratio"),
        ("APPVITALS_EXPORTER", "kafka", "exporter", "jsonl"),
        ("APPVITALS_EXPORT_MODE", "lazy", "export_mode", "auto"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "-5", "metric_export_interval", 60.0),
        ("OTEL_SDK_DISABLED", "maybe", "disabled", False),
        ("APPVITALS_CARDINALITY_LIMIT", "0", "cardinality_limit", 1000),
        ("APPVITALS_LOG_LEVEL", "LOUD", "log_level", "INFO"),
    ],
)
def test_invalid_environment_warns_once_and_falls_back(
    caplog: pytest.LogCaptureFixture, variable: str, value: str, field: str, expected: object
) -> None:
    """A bad value logs one warning naming the variable and the default applies."""
    with caplog.at_level(logging.WARNING, logger="appvitals"):
        config = resolve({}, environ={variable: value})
    assert getattr(config, field) == expected
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert variable in warnings[0].getMessage()


def test_invalid_headers_do_not_leak_into_the_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A malformed OTEL_EXPORTER_OTLP_HEADERS is reported without its (secret) value."""
    with caplog.at_level(logging.WARNING, logger="appvitals"):
        config = resolve({}, environ={"OTEL_EXPORTER_OTLP_HEADERS": "token-without-equals-s3cret"})
    assert config.otlp_headers == {}
    assert "s3cret" not in caplog.text


def test_invalid_argument_is_ignored_by_configure(caplog: pytest.LogCaptureFixture) -> None:
    """configure() drops an unusable argument with a warning instead of raising."""
    with caplog.at_level(logging.WARNING, logger="appvitals"):
        config = appvitals.configure(exporter="none", sampler_ratio=7, metric_export_interval="x")  # type: ignore[arg-type]
    assert config.sampler_ratio == 0.1
    assert config.metric_export_interval == 60.0
    assert "sampler_ratio" in caplog.text
    assert "metric_export_interval" in caplog.text


def test_parse_key_values_rejects_entries_without_equals() -> None:
    """OTEL key=value lists need '=' in each entry."""
    assert parse_key_values("a=1, b = 2 ,,") == {"a": "1", "b": "2"}
    with pytest.raises(ValueError, match="oops"):
        parse_key_values("a=1,oops")


def test_describe_masks_headers() -> None:
    """Config.describe() never shows header values."""
    config = resolve({"otlp_headers": {"authorization": "Bearer abc"}}, environ={})
    assert config.describe()["otlp_headers"] == {"authorization": "***"}
