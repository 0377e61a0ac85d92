"""From the bytes of one CloudTrail file to its detections: decode, prefilter, rules.

Pure and synchronous, so that it can run in the event loop's thread for small inputs, in a
worker process for big ones, and in tests with plain data.
"""

from __future__ import annotations

import msgspec

from trailguard.detect.decode import DecodedFile, Prefilter, decode_file
from trailguard.detect.detection import Detection, Source, build_detection
from trailguard.detect.record import Record
from trailguard.detect.rules import RuleSet


class FileOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one file yielded: its decode statistics and its detections, in file order."""

    decoded: DecodedFile
    detections: list[Detection]


class Detector:
    """Rules plus the byte prefilter derived from them."""

    __slots__ = ("prefilter", "rules")

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.prefilter = Prefilter(rules.event_names)

    def detect(self, record: Record, source: Source) -> Detection | None:
        match = self.rules.evaluate(record)
        if match is None:
            return None
        return build_detection(record, match, source)

    def process_file(
        self, data: bytes | bytearray | memoryview, *, source: Source, name: str, key: str | None
    ) -> FileOutcome:
        """Decode one file and evaluate its candidate records.

        ``name`` identifies the file in error messages; ``key`` (path or S3 key) lets the
        decoder recognise digest and Insight files by CloudTrail's layout.
        Raises :class:`trailguard.errors.DecodeError` for a file-level problem.
        """
        decoded = decode_file(data, self.prefilter, source=name, key=key)
        detections: list[Detection] = []
        for record in decoded.candidates:
            detection = self.detect(record, source)
            if detection is not None:
                detections.append(detection)
        return FileOutcome(decoded=decoded, detections=detections)
