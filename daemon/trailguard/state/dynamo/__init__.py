"""The DynamoDB state backend: every state interface on one shared table, for several replicas
(``[state] backend = "dynamodb"``; the design is docs/DYNAMODB.md).

``keys.py`` builds keys (escaped, hashed, time-sortable); ``table.py`` is the client, the error
mapping, the readiness and schema checks and ``trailguard state init``; ``dedup.py``,
``ledger.py``, ``history.py`` and ``jobs.py`` implement the protocols of ``state/`` and
``remediate/jobs.py``; ``coordination.py`` the per-account IAM write lock and the shared IAM
token bucket.  ``state/backends.py`` builds them from the config.
"""
