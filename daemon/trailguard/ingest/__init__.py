"""The front of the flow: what arrives on the queues and what it names.

``notifications`` turns one SQS message body into object references (or one CloudTrail record,
for EventBridge API-call events) without any I/O; the queue and object-store edges around it
live in their own modules.
"""
