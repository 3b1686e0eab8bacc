"""The ranking service's settings: one pydantic settings object, overridable by ``MARQUEE_*``
environment variables, validated at start and logged as one line.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serve.constraints import Constraints
from serve.rerank import RerankConfig
from streams.config import DEFAULT_BOOTSTRAP
from streams.contract.listen import BindHost, bind_host_field
from streams.contract.settings import ENV_FILE


class ServeSettings(BaseSettings):
    """What the service loads and how it ranks. ``MARQUEE_MODEL_PATH=var/models/x.onnx`` etc."""

    model_config = SettingsConfigDict(env_prefix="MARQUEE_", env_file=ENV_FILE, extra="ignore",
                                      frozen=True)

    data_dir: Path = Field(Path("var"), description="vocab.json, catalogue.jsonl, feast/")
    model_path: Path | None = Field(None, description="ONNX model; None = not ready")
    online_store: str | None = Field(None, description="sqlite | redis (default: feature_repo)")
    host: BindHost = bind_host_field("host")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port of /v1/rank")
    replicas: int = Field(1, ge=1, le=64, description="ranking replicas (Ray Serve)")
    health_check_period_s: float = Field(
        2.0, gt=0, le=60, description="how often Ray Serve checks each replica: a killed "
        "replica is noticed (and replaced) within about this (Ray's default is 10 s)")
    replica_niceness: int = Field(
        0, ge=-20, le=19, description="CPU niceness a replica takes once it can serve (Ray "
        "starts workers at 15, so a booting replacement yields to the serving replicas); "
        "lowering it needs CAP_SYS_NICE; 15 keeps Ray's")
    onnx_threads: int = Field(1, ge=1, le=64, description="intra-op threads per replica")
    batch_max_size: int = Field(16, ge=1, le=512,
                                description="most requests in one ONNX call")
    batch_wait_s: float = Field(
        0.0, ge=0, le=1, description="how long a batch waits for more requests; 0 = take what "
        "queued while the last batch ran (batches form under load, no wait at low load)")
    k_default: int = Field(20, ge=1, le=200, description="items returned when a request has "
                           "no k")
    k_max: int = Field(100, ge=1, le=1000, description="largest k a request may ask for")
    exposure_strength: float = Field(
        0.3, ge=0, le=10, description="score penalty per unit of log exposure ratio; 0 = off")
    new_title_days: float = Field(14, gt=0, description="released within this many days = new")
    overexposed_quantile: float = Field(
        0.9, gt=0, lt=1, description="impressions_24h above this catalogue quantile = over-exposed")
    item_stats_ttl_s: float = Field(10, gt=0, description="how often item stats are re-read")
    max_ongoing_requests: int = Field(32, ge=1, le=1024, description="requests a replica "
                                      "works on at once (Ray Serve); more wait at the proxy")
    max_queued_requests: int = Field(32, ge=-1, le=100_000, description="requests waiting at "
                                     "the proxy per deployment; past this a fast 503 with "
                                     "Retry-After (-1: unbounded, not advised). With 32 "
                                     "ongoing, about 0.4 s of work at 150 requests/s")
    route_retry_max_s: float = Field(
        0.01, gt=0, le=1, description="longest a queued request waits before the proxy looks "
        "again for a free replica slot (Ray Serve's router backoff, 0.5 s by default there: "
        "under sustained overload a freed slot then idles while requests wait)")
    retry_after_s: int = Field(1, ge=1, le=3600, description="Retry-After of a 503 (shed or "
                               "expired request)")
    request_timeout_ms: int = Field(5000, ge=1, le=60_000, description="a request not "
                                    "answered this long after the replica took it is dropped "
                                    "with 503 (X-Request-Timeout-Ms overrides per request)")
    store_timeout_s: float = Field(
        0.25, gt=0, le=30, description="a Redis feature read that takes longer fails (no "
        "retries) and the request is answered degraded, from its in-session events")
    store_retry_s: float = Field(
        1.0, ge=0, le=300, description="after a failed feature read, requests skip the store "
        "(degraded) for this long; then one tries it again, and the first that succeeds ends "
        "the outage (0 = try on every request)")
    readyz_timeout_s: float = Field(2.0, gt=0, description="/readyz reports a dependency "
                                    "that does not answer within this as down")
    max_body_bytes: int = Field(1 << 20, ge=1024, le=1 << 30, description="largest request "
                                "body; a larger one gets 413 before it is read")
    session_events_max: int = Field(500, ge=1, le=10_000,
                                    description="most in-session events in one request")
    rerank: RerankConfig = Field(default_factory=RerankConfig, description="re-ranker "
                                 "settings, e.g. {\"mode\": \"exact\"} (serve.rerank.RerankConfig)")
    constraints: Constraints = Field(
        default_factory=Constraints,
        description="business constraints applied to every list (a request adds to them)")

    experiments: str | None = Field(
        None, description="the experiment config: a YAML or JSON file (or a JSON object) with "
        "name, mode (ab | interleave) and variants (each a model file or `popular`); "
        "validated at start (serve.experiment_config)")
    rankings_log: bool = Field(True, description="log every served ranking to "
                               "MARQUEE_RANKINGS_TOPIC (never blocks a request)")
    bootstrap_servers: str = Field(
        DEFAULT_BOOTSTRAP, validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS",
                                                         "bootstrap_servers"),
        description="host:port[,host:port...] of the Kafka-protocol broker")
    rankings_topic: str = Field("marquee.rankings", min_length=1,
                                description="topic of the rankings log")
    rankings_queue_max: int = Field(
        100_000, ge=1, le=10_000_000, description="ranking records a replica holds for the "
        "broker at most; past this a record is dropped and counted "
        "(marquee_rankings_logged_total{result=\"dropped\"})")

    @model_validator(mode="after")
    def _k(self) -> ServeSettings:
        if self.k_default > self.k_max:
            raise ValueError(f"k_default ({self.k_default}) > k_max ({self.k_max}); "
                             "raise MARQUEE_K_MAX or lower MARQUEE_K_DEFAULT")
        return self

    def summary(self) -> str:
        """One log line of the effective settings."""
        logged = f"{self.rankings_topic}@{self.bootstrap_servers}" if self.rankings_log else "off"
        return (f"serve: model={self.model_path} data_dir={self.data_dir} "
                f"online={self.online_store or 'default'} replicas={self.replicas} "
                f"onnx_threads={self.onnx_threads} batch={self.batch_max_size}/"
                f"{self.batch_wait_s * 1e3:g}ms exposure_strength={self.exposure_strength} "
                f"rerank={self.rerank.mode}/{self.rerank.solver} experiments="
                f"{self.experiments or 'none'} rankings_log="
                f"{logged}")
