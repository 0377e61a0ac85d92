"""trailguard's own durable state, each part behind a small interface, on SQLite (one process)
or DynamoDB (``dynamo/``: several replicas); ``backends.py`` opens the configured one.

``dedup.py``: which CloudTrail eventIDs were already reported; ``ledger.py``: the contents each
eventID came with; ``policy_history.py``: every policy document and attachment the trail or a
snapshot showed, in eventTime order (``policy_history_sqlite.py``, and replay's scratch store
in ``policy_history_memory.py``).  Nothing is imported here: a command pays only for the
stores it opens.
"""
