"""CloudWatch metrics as EMF log lines (powertools ``single_metric``): one line per event, emitted where it
happens. Chalice routes cannot be wrapped by ``@metrics.log_metrics``, and a shared ``Metrics`` set could
be flushed by another blueprint. Namespace ``Cascade/<stage>`` (CASCADE_METRICS_NAMESPACE, set by infra),
the same as the log metric filters', so alarms and the dashboard read them side by side."""
import logging
import os

from aws_lambda_powertools.metrics import MetricUnit, single_metric

log = logging.getLogger("cascade.metrics")


def count(name: str, value: int = 1, service: str = "switch", **dimensions: str) -> None:
    """Never raises: a metric must not turn an answered request into an error."""
    try:
        with single_metric(name=name, unit=MetricUnit.Count, value=value,
                           namespace=os.environ.get("CASCADE_METRICS_NAMESPACE", "Cascade/local"),
                           default_dimensions={"service": service}) as metric:
            for key, text in dimensions.items():
                metric.add_dimension(key, text)
    except Exception:   # noqa: BLE001
        log.warning("metric %s not emitted", name, exc_info=True)
