"""The PNG writer makes files a decoder accepts: signature, chunk CRCs, IHDR, pixel data."""

from __future__ import annotations

import struct
import zlib

from bench.plot import latency_bins
from bench.png import Canvas


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack_from(">I", data, i)
        tag, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + n]
        (crc,) = struct.unpack_from(">I", data, i + 8 + n)
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, tag
        out.append((tag, body))
        i += 12 + n
    return out


def test_png_decodes_to_the_drawn_pixels() -> None:
    """A 7x5 canvas with one red rectangle and a black diagonal decodes back to them."""
    c = Canvas(7, 5)
    c.rect(1, 1, 3, 3, (255, 0, 0))
    c.line(0, 4, 4, 0, (0, 0, 0))
    parts = chunks(c.png())
    assert [t for t, _ in parts] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", parts[0][1]) == (7, 5, 8, 2, 0, 0, 0)
    raw = zlib.decompress(parts[1][1])
    rows = [raw[y * 22 : (y + 1) * 22] for y in range(5)]
    assert all(r[0] == 0 for r in rows)  # filter type None

    def px(x: int, y: int) -> tuple[int, ...]:
        return tuple(rows[y][1 + 3 * x : 4 + 3 * x])

    assert px(2, 1) == (255, 0, 0) and px(3, 3) == (255, 255, 255)
    assert px(0, 4) == px(4, 0) == px(2, 2) == (0, 0, 0)
    assert px(6, 4) == (255, 255, 255)


def test_drawing_outside_is_clipped_and_text_draws_ink() -> None:
    c = Canvas(40, 12)
    c.rect(-5, -5, 100, 2, (0, 0, 255))
    c.line(-3, 5, 50, 5, (0, 255, 0))
    c.text(1, 3, "p99 1.5MS")
    assert c.pixels.count(bytes((0, 0, 0))) > 10
    assert len(c.pixels) == 40 * 12 * 3


def test_latency_bins_hold_every_sample() -> None:
    counts, lo, hi = latency_bins([0.001 * i for i in range(1, 1001)], 10)
    assert sum(counts) == 1000 and lo == 0.001 and hi > 0.99
