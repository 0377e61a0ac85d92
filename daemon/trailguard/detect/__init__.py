"""The pure core: decoding CloudTrail files, evaluating rules, building detections.

Nothing in this package does I/O beyond what it is handed, imports asyncio or aiobotocore.
"""
