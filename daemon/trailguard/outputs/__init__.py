"""Where detections go: JSONL files or stdout (webhook/SNS join with remediation)."""
