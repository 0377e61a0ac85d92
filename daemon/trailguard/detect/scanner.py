"""The C scanner's Python face: whether it is built, whether it runs, and libdeflate bound to it.

``trailguard.detect._scan`` (``_scan.c``) validates a ``{"Records": [...]}`` document, counts its
records and returns the few that may be candidates, in one pass without the GIL; bound to the
`deflate` package's libdeflate it also inflates without the GIL (see ``_scan.c``).  It is
optional: without a C compiler, on a CPU without AVX2 or with ``TRAILGUARD_SCANNER=0``, the
msgspec path does the same work (same results, about half the speed).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Final

import deflate

__all__ = ["SCANNER", "gil_free", "scan_module"]

_scan: ModuleType | None
try:
    from trailguard.detect import _scan
except ImportError:  # pragma: no cover - built without a C compiler: msgspec does all the work
    _scan = None


def scan_module() -> ModuleType | None:
    """The extension module, or None when it is not built."""
    return _scan


class _Scanner:
    """Whether decoding uses the C scanner.

    On when the extension is built and the CPU has AVX2 (its portable byte-by-byte masks are a
    reference for tests, slower than msgspec); ``TRAILGUARD_SCANNER=0`` in the environment turns
    it off, for an operator who suspects it.  Tests and ``make bench`` flip ``enabled``;
    ``reference`` (tests only) sends every file to the reference decoder
    (:mod:`trailguard.detect.frame`), so three paths can be compared.
    """

    __slots__ = ("enabled", "reference")

    def __init__(self) -> None:
        self.enabled = self.available and os.environ.get("TRAILGUARD_SCANNER", "1") != "0"
        self.reference = False

    @property
    def available(self) -> bool:
        return _scan is not None and bool(_scan.SIMD)

    def describe(self) -> str:
        """For the startup log line and ``--version``: which decoder runs, and why."""
        if self.enabled:
            return "c-avx2, libdeflate without the GIL" if _LIBDEFLATE else "c-avx2"
        if _scan is None:
            return "msgspec (C scanner not built)"
        if not _scan.SIMD:
            return "msgspec (no AVX2 on this CPU)"
        return "msgspec (TRAILGUARD_SCANNER=0)"


def _bind_libdeflate() -> bool:
    """Let _scan call the `deflate` package's libdeflate without the GIL (see _scan.c)."""
    if _scan is None:
        return False
    library = getattr(getattr(deflate, "_deflate", None), "__file__", None)
    return bool(library) and bool(_scan.bind_libdeflate(str(library)))


_LIBDEFLATE: Final = _bind_libdeflate()
SCANNER: Final = _Scanner()


def gil_free() -> bool:
    """Whether a gzip'd S3 delivery is inflated and scanned without the GIL (the C scanner on,
    libdeflate bound to it), so that decoding in threads uses every core."""
    return SCANNER.enabled and _LIBDEFLATE
