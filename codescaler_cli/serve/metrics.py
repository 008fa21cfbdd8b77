"""Prometheus metrics of the server (``GET /metrics``), one registry per app."""

from __future__ import annotations

from collections.abc import Callable

from .batcher import BatchReport

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    def __init__(
        self, queue_depth: Callable[[], int], store_bytes: Callable[[], int] | None = None
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "codescaler_requests",
            "HTTP requests by route and status (cancelled: the client left before its answer)",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "codescaler_request_seconds",
            "Time from request to response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.candidates = Counter("codescaler_candidates", "Candidates scored", registry=r)
        self.unique = Counter("codescaler_model_candidates", "Candidates the model ran", registry=r)
        self.dedup = Counter(
            "codescaler_dedup_hits", "Candidates answered by an identical one", registry=r
        )
        self.tokens = Counter("codescaler_tokens", "Tokens of the candidates scored", registry=r)
        self.prefix = Counter(
            "codescaler_prompt_reuse_tokens", "Prompt tokens computed once for several", registry=r
        )
        self.batch_candidates = Histogram(
            "codescaler_batch_candidates", "Candidates per batch", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "codescaler_batch_requests", "Requests per batch", buckets=SIZE_BUCKETS, registry=r
        )
        self.abandoned = Counter(
            "codescaler_abandoned_candidates",
            "Candidates of requests whose client left: dropped before scoring, or scored "
            "in a batch already running and discarded",
            ["stage"],
            registry=r,
        )
        depth = Gauge("codescaler_queue_depth", "Candidates waiting for a batch", registry=r)
        depth.set_function(queue_depth)
        self.cache_lookups = Counter(
            "codescaler_cache_lookups",
            "Candidates looked up in the score cache before a batch (hit: answered at once)",
            ["result"],
            registry=r,
        )
        size = Gauge(
            "codescaler_cache_bytes", "Size of the score cache on disk (with its log)", registry=r
        )
        size.set_function(store_bytes or (lambda: 0))

    def batch(self, report: BatchReport) -> None:
        self.candidates.inc(report.candidates)
        self.unique.inc(report.unique)
        self.dedup.inc(report.dedup_hits)
        self.tokens.inc(report.tokens)
        self.prefix.inc(report.prefix_tokens_saved)
        self.batch_candidates.observe(report.candidates)
        self.batch_requests.observe(report.requests)

    def cache(self, hits: int, misses: int) -> None:
        self.cache_lookups.labels("hit").inc(hits)
        self.cache_lookups.labels("miss").inc(misses)

    def abandon(self, candidates: int, scored: bool) -> None:
        self.abandoned.labels("discarded" if scored else "dropped").inc(candidates)

    def request(self, route: str, status: int | str, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
