# Type stub of the C scanner (_scan.c).

SIMD: int

def records(
    buffer: bytes | bytearray | memoryview, names: tuple[bytes, ...], simd: bool = True
) -> tuple[int, int, int, list[int]] | str: ...
