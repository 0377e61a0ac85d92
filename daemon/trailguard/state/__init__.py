"""trailguard's own durable state, each part behind a small interface.

``dedup``: which CloudTrail eventIDs were already handled (SQLite by default; the
:class:`DedupStore` protocol lets a shared store serve several replicas later).
``history``: every policy document and attachment the trail or a snapshot showed, in eventTime
order (:class:`PolicyHistoryStore`; SQLite by default).
"""

from trailguard.state.dedup import DedupStore, SqliteDedupStore
from trailguard.state.policy_history import PolicyHistoryStore
from trailguard.state.policy_history_sqlite import SqliteHistoryStore

__all__ = ["DedupStore", "PolicyHistoryStore", "SqliteDedupStore", "SqliteHistoryStore"]
