"""Prometheus metrics of the webhook service (prometheus-client), in a registry of its own per app so that
several apps in one process (tests) never share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "policy_evaluator_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "policy_evaluator_http_request_duration_seconds",
            "Time from request to response, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.jobs_submitted = Counter(
            "policy_evaluator_jobs_submitted",
            "Evaluation jobs this replica created on the Ray cluster.",
            registry=self.registry,
        )
        self.jobs_resubmitted = Counter(
            "policy_evaluator_jobs_resubmitted",
            "Jobs this replica resubmitted because they exited 3 (an outage: W&B, S3 or Ray unreachable).",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "policy_evaluator_webhook_duplicates",
            "Deliveries answered with the job an earlier delivery of the same version created.",
            registry=self.registry,
        )
        self.failures = Counter(
            "policy_evaluator_webhook_failures",
            "Deliveries not turned into a job, by reason (unauthenticated, malformed, unknown_artifact, "
            "cluster_unavailable, wandb_unavailable, refused).",
            ["reason"],
            registry=self.registry,
        )

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format the scraper's Accept header asks for, and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
