"""Prometheus metrics at ``GET /metrics`` (prometheus-client, one registry per app).

Built in: API request latency by route template, method and status; live SSE
streams; events published by type; auth rejections by reason; event-bus
subscribers and journal errors (read from the bus at scrape time).

Everything else is pulled from the daemon *at scrape time* through providers:
``ctx.services["metrics_providers"]`` is a list of callables, each returning a list
of samples ``(metric_name, help, kind, labels, value)`` where ``kind`` is
``"gauge"`` or ``"counter"`` and ``labels`` a ``dict[str, str]``. Samples with the
same name are grouped into one metric family, e.g.::

    def vm_metrics() -> list[Sample]:
        return [("volant_vms", "VMs by state", "gauge", {"state": s}, n)
                for s, n in counts.items()]

A provider that raises is logged and skipped; the scrape still succeeds.
Counters are named without ``_total``; the exposition adds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from quart import Blueprint, Quart, Response, current_app, g, request

from volant.api import spec
from volant.api.context import ApiContext
from volant.logging import get_logger

log = get_logger("volant.api.metrics")

Sample = tuple[str, str, str, dict[str, str], float]
Provider = Callable[[], list[Sample]]

blueprint = Blueprint("metrics", __name__)

EXTENSION_KEY = "volant_metrics"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ProviderCollector(Collector):
    """Asks the providers in ``ctx.services`` for samples on every scrape."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        families: dict[str, tuple[GaugeMetricFamily | CounterMetricFamily, list[str]]] = {}
        for name, help_text, kind, labels, value in self._samples():
            if name not in families:
                label_names = sorted(labels)
                family_cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                families[name] = (family_cls(name, help_text, labels=label_names), label_names)
            family, label_names = families[name]
            family.add_metric([str(labels.get(label, "")) for label in label_names], float(value))
        for family, _ in families.values():
            yield family

    def _samples(self) -> Iterator[Sample]:
        bus = self.ctx.services.get("events")
        if bus is not None:
            yield ("volant_event_bus_subscribers", "Live subscriptions on the event bus",
                   "gauge", {}, float(bus.subscriber_count))
            yield ("volant_event_last_id", "Newest durable event id", "gauge", {},
                   float(bus.last_seq))
            yield ("volant_event_journal_errors", "Event journal writes that failed",
                   "counter", {}, float(getattr(bus, "journal_errors", 0)))
        providers: list[Provider] = list(self.ctx.services.get("metrics_providers", []))
        for provider in providers:
            try:
                samples = list(provider())
            except Exception as exc:  # one broken provider must not break the scrape
                log.error("metrics provider failed", provider=repr(provider), error=repr(exc))
                continue
            for sample in samples:
                if len(sample) != 5 or sample[2] not in ("gauge", "counter"):
                    log.error("malformed metrics sample", provider=repr(provider),
                              sample=repr(sample))
                    continue
                yield sample


class ApiMetrics:
    """The app's registry and the instruments the API code updates directly."""

    def __init__(self, ctx: ApiContext) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_latency = Histogram(
            "volant_api_request_duration_seconds",
            "API request handling time (for streams: until the response starts)",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.sse_streams = Gauge(
            "volant_sse_subscribers", "Open SSE event streams", registry=self.registry
        )
        self.events_published = Counter(
            "volant_events_published", "Events published on the bus since start, by type",
            ["type"], registry=self.registry,
        )
        self.auth_rejections = Counter(
            "volant_api_rejections", "Requests refused by the auth/exposure layer",
            ["reason"], registry=self.registry,
        )
        self.registry.register(ProviderCollector(ctx))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def app_metrics(app: Quart) -> ApiMetrics:
    metrics: ApiMetrics = app.extensions[EXTENSION_KEY]
    return metrics


def install_metrics(app: Quart, ctx: ApiContext) -> ApiMetrics:
    """Create the per-app registry, hook request timing and the bus listener."""
    metrics = ApiMetrics(ctx)
    app.extensions[EXTENSION_KEY] = metrics

    @app.before_request
    async def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    async def _observe(response: Response) -> Response:
        started = getattr(g, "metrics_started", None)
        if started is not None:
            rule = request.url_rule
            route = rule.rule if rule is not None else "unmatched"
            metrics.request_latency.labels(route, request.method, str(response.status_code)) \
                .observe(time.perf_counter() - started)
        return response

    bus: Any = ctx.services.get("events")
    if bus is not None and hasattr(bus, "listeners"):
        bus.listeners.append(lambda event: metrics.events_published.labels(event.type).inc())
    return metrics


@blueprint.get("/metrics")
@spec.api_doc(
    summary="Prometheus metrics",
    tags=["system"],
    operation_id="getMetrics",
    responses={200: spec.Response("Prometheus text exposition format", spec.STRING,
                                  media_type="text/plain")},
)
async def metrics_endpoint() -> Response:
    body = app_metrics(current_app).render()
    return Response(body, content_type=CONTENT_TYPE_LATEST)
