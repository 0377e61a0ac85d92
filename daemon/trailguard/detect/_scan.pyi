# Type stub of the C scanner (_scan.c).

SIMD: int

def records(
    buffer: bytes | bytearray | memoryview,
    names: tuple[bytes, ...],
    simd: bool = True,
    max_record: int = -1,
) -> tuple[int, int, int, list[int]] | str: ...
def bind_libdeflate(path: str) -> bool: ...
def gunzip(buffer: bytes | bytearray | memoryview, size: int) -> bytes | None: ...
def gunzip_records(
    buffer: bytes | bytearray | memoryview,
    size: int,
    names: tuple[bytes, ...],
    max_record: int = -1,
) -> str | tuple[int, bytes, list[int | bytes]] | None: ...
