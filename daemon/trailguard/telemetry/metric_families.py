"""The definitions of trailguard's metric families: each one's name, help text, labels and
buckets, in one place (``metrics.py`` records into them and bounds every label value).

Names follow the Prometheus guide: one prefix (``trailguard_``), base units (seconds, bytes),
``_total`` on counters.
"""

from __future__ import annotations

import platform
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

__all__ = ["LAG_BUCKETS", "LATENCY_BUCKETS", "OBJECT_BUCKETS", "WINDOW_BUCKETS", "MetricFamilies"]

# Buckets, in seconds.  Delivery lag spans EventBridge (seconds) to S3 (CloudTrail delivers
# every ~5 minutes, sometimes much later) to backfills (days).
LAG_BUCKETS: Final = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 21600, 86400)
LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
WINDOW_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
OBJECT_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class MetricFamilies:
    """Every metric family, as attributes (``self.sqs_received``, ...)."""

    def define_families(self, r: CollectorRegistry, version: str) -> None:
        # -- build and config ----------------------------------------------------------------
        self.build_info = Info("trailguard_build", "trailguard's version; always 1.", registry=r)
        self.build_info.info({"version": version, "python": platform.python_version()})
        self.config_reloads = Counter(
            "trailguard_config_reloads_total",
            "Config reloads (SIGHUP) by outcome: success, or failure (the old config stays).",
            ["outcome"],
            registry=r,
        )
        self.config_last_reload_successful = Gauge(
            "trailguard_config_last_reload_successful",
            "1 when the last config reload succeeded (or none was tried), 0 when it failed.",
            registry=r,
        )
        self.config_last_reload_successful.set(1)

        # -- SQS -----------------------------------------------------------------------------
        self.sqs_received = Counter(
            "trailguard_sqs_messages_received_total",
            "SQS messages received, by queue.",
            ["queue"],
            registry=r,
        )
        self.sqs_handled = Counter(
            "trailguard_sqs_messages_handled_total",
            "SQS messages finished, by queue and outcome: deleted, test_event (deleted), released "
            "(for redelivery), left_for_redrive, unrecognised (left for redrive), rejected (left "
            "for redrive, nothing fetched), failed.",
            ["queue", "outcome"],
            registry=r,
        )
        self.sqs_rejected = Counter(
            "trailguard_sqs_messages_rejected_total",
            "SQS messages rejected before anything they name was fetched, by queue and reason: "
            "too_many_objects ([limits] max_objects_per_message), bucket_not_allowed (the "
            "queue's buckets). Left for the redrive policy.",
            ["queue", "reason"],
            registry=r,
        )
        self.sqs_message_age = Histogram(
            "trailguard_sqs_message_age_seconds",
            "Age of a message when received (now - SentTimestamp): the queue's backlog.",
            ["queue"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.sqs_visibility_extensions = Counter(
            "trailguard_sqs_visibility_extensions_total",
            "Visibility timeouts extended by the heartbeat of an in-progress message.",
            ["queue"],
            registry=r,
        )
        self.sqs_last_poll = Gauge(
            "trailguard_sqs_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful receive on the queue (0: none yet).",
            ["queue"],
            registry=r,
        )
        self.sqs_in_flight = Gauge(
            "trailguard_sqs_messages_in_flight",
            "SQS messages received and not yet finished.",
            registry=r,
        )

        # -- S3 and decoding -------------------------------------------------------------------
        self.s3_objects = Counter(
            "trailguard_s3_objects_total",
            "S3 objects named by notifications, by outcome: ok, skipped_* (not downloaded or not "
            "log files), failed_transient, failed_permanent.",
            ["outcome"],
            registry=r,
        )
        self.s3_bytes = Counter(
            "trailguard_s3_object_bytes_total",
            "Bytes of S3 objects downloaded (compressed, as stored).",
            registry=r,
        )
        self.s3_duration = Histogram(
            "trailguard_s3_object_processing_seconds",
            "Time to fetch, decompress, decode and evaluate one S3 object.",
            buckets=OBJECT_BUCKETS,
            registry=r,
        )
        self.s3_in_flight = Gauge(
            "trailguard_s3_objects_in_flight",
            "S3 objects being fetched or decoded now (bounded by limits.max_objects_in_flight).",
            registry=r,
        )
        self.s3_bytes_in_flight = Gauge(
            "trailguard_s3_object_bytes_in_flight_bytes",
            "Bytes of S3 objects held now, fetched and not yet decoded (bounded by "
            "limits.max_bytes_in_flight).",
            registry=r,
        )
        self.s3_by_account = Counter(
            "trailguard_s3_objects_by_account_total",
            "S3 log files processed, by the account and region in their key "
            "(only with [metrics] account_labels).",
            ["account", "region"],
            registry=r,
        )
        self.records_scanned = Counter(
            "trailguard_records_scanned_total",
            "CloudTrail records read (from S3 objects, EventBridge events, files).",
            registry=r,
        )
        self.records_invalid = Counter(
            "trailguard_records_invalid_total",
            "CloudTrail records that could not be decoded (skipped; the file is processed).",
            registry=r,
        )

        # -- detections ------------------------------------------------------------------------
        self.detections = Counter(
            "trailguard_detections_total",
            "Detections made durable, by event name (those the rules watch, else 'other'), "
            "outcome of the call, severity and disposition (alert or suppressed).",
            ["event_name", "outcome", "severity", "disposition"],
            registry=r,
        )
        self.detections_by_account = Counter(
            "trailguard_detections_by_account_total",
            "Detections made durable, by account and region (only with [metrics] account_labels).",
            ["account", "region"],
            registry=r,
        )
        self.duplicates = Counter(
            "trailguard_duplicates_dropped_total",
            "Detections dropped because their eventID was already recorded (SQS redelivery, "
            "CloudTrail duplicates, the same event by S3 and EventBridge).",
            registry=r,
        )
        self.dedup_takeovers = Counter(
            "trailguard_dedup_takeovers_total",
            "Dedup claims another writer (replica) made and never recorded before its lease ran "
            "out, taken over by this one: it died after claiming, perhaps after writing the "
            "detection line -- the one case an event is reported twice (an upper bound).",
            registry=r,
        )
        self.dedup_window = Histogram(
            "trailguard_dedup_record_window_seconds",
            "From detections being written and fsynced to their eventIDs recorded in the dedup "
            "store: the window in which a crash makes an event be reported twice.",
            buckets=WINDOW_BUCKETS,
            registry=r,
        )
        self.delivery_lag = Histogram(
            "trailguard_delivery_lag_seconds",
            "Processing time minus eventTime of each detection, by delivery path (s3, "
            "eventbridge, file).",
            ["path"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.forgery_suspected = Counter(
            "trailguard_forgery_suspected_total",
            "Records whose eventID the event ledger had already seen with other content (one "
            "of the two is forged; neither is ever a source for a write), by the delivery path "
            "of the record that made the conflict (s3, eventbridge, file).",
            ["path"],
            registry=r,
        )
        self.detection_latency = Histogram(
            "trailguard_detection_latency_seconds",
            "From the SQS message's SentTimestamp to its detection being durable.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        # -- policy changes ----------------------------------------------------------------------
        self.policy_changes = Counter(
            "trailguard_policy_changes_total",
            "Policy changes (Put*Policy, a new default version, a new boundary) compared with "
            "the previous document, by kind (inline, managed, boundary) and verdict: weakened, "
            "possibly_weakened (detections), not_weakened, baseline_unknown (no previous "
            "document recorded: nothing to compare with).",
            ["kind", "verdict"],
            registry=r,
        )

        # -- errors ----------------------------------------------------------------------------
        self.errors = Counter(
            "trailguard_errors_total",
            "Errors by stage (sqs_receive, s3_get, decode, ...) and type (the error's stable "
            "reason: an AWS error code or a short word).",
            ["stage", "type"],
            registry=r,
        )

        # -- remediation -----------------------------------------------------------------------
        self.jobs = Counter(
            "trailguard_remediation_jobs_total",
            "Remediation job state changes, by action and the state entered.",
            ["action", "state"],
            registry=r,
        )
        self.job_queue_depth = Gauge(
            "trailguard_remediation_queue_depth",
            "Remediation jobs waiting or running now, by state.",
            ["state"],
            registry=r,
        )
        self.job_oldest_pending_age = Gauge(
            "trailguard_remediation_oldest_pending_age_seconds",
            "Age of the oldest pending remediation job (0 when none).",
            registry=r,
        )
