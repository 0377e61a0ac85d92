"""aws.py: botocore's retries for S3 and SQS calls, and AWS_MAX_ATTEMPTS honoured."""

from __future__ import annotations

import pytest

from trailguard.aws import client_config


def retries() -> object:
    config: object = client_config()
    return config.__dict__["retries"]  # AioConfig's stubs do not list its options


def test_four_attempts_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    assert retries() == {"mode": "standard", "max_attempts": 3}


def test_aws_max_attempts_is_left_to_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert retries() == {"mode": "standard"}  # botocore reads the variable
