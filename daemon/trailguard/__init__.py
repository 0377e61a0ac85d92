"""trailguard: watch AWS CloudTrail for IAM policy removal and act on it."""

__version__ = "0.1.0"

__all__ = ["__version__"]
