"""The names every part of trailguard shares, defined once; this module imports nothing of it.

Severities, outcomes and dispositions of a detection; the identity types and user-agent presets
suppressions name; the IAM event names and source; remediation action names, modes and job
states; the outcomes of a message and an object, the delivery paths and error stages.  The
config validates against these, rules and detections use them, metrics initialise
their label sets from them and the jobs CLI lists them, so a name added here reaches all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, get_args

__all__ = [
    "ACTION_MODES",
    "ACTION_NAMES",
    "CHANGE_COUNTS",
    "CHANGE_EVENT_NAMES",
    "CHANGE_KINDS",
    "CHANGE_VERDICTS",
    "DELIVERY_PATHS",
    "DISPOSITIONS",
    "ERROR_STAGES",
    "IAM_EVENT_SOURCE",
    "IDENTITY_TYPES",
    "JOB_STATES",
    "MESSAGE_OUTCOMES",
    "OBJECT_OUTCOMES",
    "OUTCOMES",
    "PERMISSIONS_BOUNDARY_EVENTS",
    "QUEUED_JOB_STATES",
    "REJECT_REASONS",
    "REMEDIATION_MODES",
    "REMOVAL_EVENT_NAMES",
    "RESTORE_ACTIONS",
    "SEVERITIES",
    "SEVERITY_RANK",
    "TERMINAL_STATES",
    "USER_AGENT_PRESETS",
    "WRITING_ACTIONS",
    "ActionMode",
    "ActionName",
    "ChangeCount",
    "ChangeKind",
    "ChangeVerdict",
    "DeliveryPath",
    "Disposition",
    "IdentityType",
    "JobState",
    "MessageOutcome",
    "ObjectOutcome",
    "Outcome",
    "RejectReason",
    "RemediationMode",
    "Severity",
    "UserAgentPreset",
]

# -- a detection ------------------------------------------------------------------------------

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = get_args(Severity)
SEVERITY_RANK: Final[Mapping[Severity, int]] = {s: i for i, s in enumerate(SEVERITIES)}

Outcome = Literal["success", "failure"]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)

Disposition = Literal["alert", "suppressed"]
DISPOSITIONS: Final[tuple[Disposition, ...]] = get_args(Disposition)

IdentityType = Literal[
    "Root",
    "IAMUser",
    "AssumedRole",
    "FederatedUser",
    "AWSAccount",
    "AWSService",
    "IdentityCenterUser",
    "Unknown",
    "SAMLUser",
    "WebIdentityUser",
    "Directory",
]
IDENTITY_TYPES: Final[frozenset[str]] = frozenset(get_args(IdentityType))

UserAgentPreset = Literal["terraform", "pulumi", "cloudformation", "aws-service-linked-role"]
USER_AGENT_PRESETS: Final[tuple[UserAgentPreset, ...]] = get_args(UserAgentPreset)

# -- IAM events -------------------------------------------------------------------------------

IAM_EVENT_SOURCE: Final = "iam.amazonaws.com"
#: The ten IAM policy-removal APIs trailguard watches.
REMOVAL_EVENT_NAMES: Final[tuple[str, ...]] = (
    "DeleteUserPolicy",
    "DeleteRolePolicy",
    "DeleteGroupPolicy",
    "DeletePolicy",
    "DeletePolicyVersion",
    "DetachUserPolicy",
    "DetachRolePolicy",
    "DetachGroupPolicy",
    "DeleteUserPermissionsBoundary",
    "DeleteRolePermissionsBoundary",
)
PERMISSIONS_BOUNDARY_EVENTS: Final[frozenset[str]] = frozenset(
    {"DeleteUserPermissionsBoundary", "DeleteRolePermissionsBoundary"}
)
#: The IAM calls that change what a policy allows without removing it: each is compared with the
#: previous document (README "Policy weakening").  CreatePolicyVersion counts only with
#: setAsDefault; CreatePolicy and CreateUser/CreateRole make something new, not a change.
CHANGE_EVENT_NAMES: Final[tuple[str, ...]] = (
    "PutUserPolicy",
    "PutRolePolicy",
    "PutGroupPolicy",
    "CreatePolicyVersion",
    "SetDefaultPolicyVersion",
    "PutUserPermissionsBoundary",
    "PutRolePermissionsBoundary",
)
#: What a change changed: an inline policy, a managed policy's default version, a boundary.
ChangeKind = Literal["inline", "managed", "boundary"]
CHANGE_KINDS: Final[tuple[ChangeKind, ...]] = get_args(ChangeKind)
#: The verdicts of a comparison that make a detection (a rule's ``verdicts``).
ChangeVerdict = Literal["weakened", "possibly_weakened"]
CHANGE_VERDICTS: Final[tuple[ChangeVerdict, ...]] = get_args(ChangeVerdict)
#: How a change was judged (``trailguard_policy_changes_total{verdict}``): the two above, proven
#: not weakened, or no previous document to compare with.
ChangeCount = Literal["weakened", "possibly_weakened", "not_weakened", "baseline_unknown"]
CHANGE_COUNTS: Final[tuple[ChangeCount, ...]] = get_args(ChangeCount)

# -- remediation ------------------------------------------------------------------------------

RemediationMode = Literal["dry-run", "approve", "enforce"]
REMEDIATION_MODES: Final[tuple[RemediationMode, ...]] = get_args(RemediationMode)
ActionMode = Literal["dry-run", "approve", "enforce", "off"]
ACTION_MODES: Final[tuple[ActionMode, ...]] = get_args(ActionMode)

ActionName = Literal[
    "restore_inline_policy",
    "reattach_managed_policy",
    "restore_policy_version",
    "recreate_managed_policy",
    "restore_permissions_boundary",
    "revert_policy_change",
    "quarantine_actor",
    "audit_actor",
    "notify",
]
ACTION_NAMES: Final[tuple[ActionName, ...]] = get_args(ActionName)
#: The actions that put back what a removal (or a weakening change) took away (subject to the
#: circuit breaker).
RESTORE_ACTIONS: Final[frozenset[ActionName]] = frozenset(
    {
        "restore_inline_policy",
        "reattach_managed_policy",
        "restore_policy_version",
        "recreate_managed_policy",
        "restore_permissions_boundary",
        "revert_policy_change",
    }
)
#: The actions that write to IAM (serialised per account, confirmed before writing).
WRITING_ACTIONS: Final[frozenset[ActionName]] = RESTORE_ACTIONS | {"quarantine_actor"}

JobState = Literal[
    "pending",
    "awaiting_approval",
    "running",
    "succeeded",
    "failed",
    "dead",
    "skipped",
    "dry_run",
]
JOB_STATES: Final[tuple[JobState, ...]] = get_args(JobState)
TERMINAL_STATES: Final[frozenset[JobState]] = frozenset({"succeeded", "dead", "skipped", "dry_run"})
#: States a job can sit in, waiting: the queue-depth gauge has one series for each.
QUEUED_JOB_STATES: Final[tuple[JobState, ...]] = (
    "pending",
    "awaiting_approval",
    "running",
    "failed",
)

# -- ingest -----------------------------------------------------------------------------------

MessageOutcome = Literal[
    "deleted",  # every object processed and its detections durable: deleted
    "test_event",  # an s3:TestEvent: acknowledged (deleted)
    "released",  # transient failures outlived their retries (or shutdown): visible again soon
    "left_for_redrive",  # a permanent failure: left invisible for the queue's redrive policy
    "unrecognised",  # a body of no known shape: left for the redrive policy
    "rejected",  # too many objects, or a bucket not allowed: nothing fetched, left for redrive
    "failed",  # handling raised: the message comes back after its visibility timeout
]
MESSAGE_OUTCOMES: Final[tuple[MessageOutcome, ...]] = get_args(MessageOutcome)

# Why a message was rejected before anything it names was fetched (left for the redrive policy).
RejectReason = Literal[
    "too_many_objects",  # more objects than [limits] max_objects_per_message
    "bucket_not_allowed",  # a bucket not in its queue's [[sources.sqs]] buckets
]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = get_args(RejectReason)

ObjectOutcome = Literal[
    "ok",
    "skipped_digest",
    "skipped_insight",
    "skipped_excluded",
    "skipped_other",
    "failed_transient",
    "failed_permanent",
]
OBJECT_OUTCOMES: Final[tuple[ObjectOutcome, ...]] = get_args(ObjectOutcome)


# Where a detection's record came from: an S3 log file, an EventBridge event, a local file.
DeliveryPath = Literal["s3", "eventbridge", "file"]
DELIVERY_PATHS: Final[tuple[DeliveryPath, ...]] = get_args(DeliveryPath)

# The stages OperationError and the rest of the error tree name (errors.py); others are "other".
ERROR_STAGES: Final[tuple[str, ...]] = (
    "sqs_attributes",
    "sqs_receive",
    "sqs_delete",
    "sqs_visibility",
    "parse",
    "s3_get",
    "s3_list",
    "decode",
    "output",
    "state",
    "remediation",
    "config",
)
