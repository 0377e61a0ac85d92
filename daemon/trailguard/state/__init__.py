"""trailguard's own durable state, each part behind a small interface.

``dedup``: which CloudTrail eventIDs were already handled (SQLite by default; the
:class:`DedupStore` protocol lets a shared store serve several replicas later).
"""

from trailguard.state.dedup import DedupStore, SqliteDedupStore

__all__ = ["DedupStore", "SqliteDedupStore"]
