"""Remediation: planning jobs from detections, storing them durably, running actions that
undo a policy removal.  See docs/ARCHITECTURE.md ("Remediation").

The modules are imported directly (``trailguard.remediate.planner`` is pure and must not pull in
aiobotocore through this package).
"""
