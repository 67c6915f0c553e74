#!/usr/bin/env python3
"""Draw the 128x128 PNG icons of the demo images (standard library only).

Usage: python3 images/tools/make_icons.py [OUTPUT_DIR]

Writes ``webapp/icon.png`` and ``vncapp/icon.png`` below OUTPUT_DIR (by default
the ``images/`` folder this script lives in). The output is deterministic, so
re-running it leaves the committed files unchanged.
"""

from __future__ import annotations

import math
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

SIZE = 128

Color = tuple[int, int, int, int]
Sdf = Callable[[float, float], float]


# --- signed distance functions (negative inside, in pixels) -------------------


def rounded_rect(cx: float, cy: float, hw: float, hh: float, r: float) -> Sdf:
    def sdf(x: float, y: float) -> float:
        qx = abs(x - cx) - (hw - r)
        qy = abs(y - cy) - (hh - r)
        outside = math.hypot(max(qx, 0.0), max(qy, 0.0))
        inside = min(max(qx, qy), 0.0)
        return outside + inside - r

    return sdf


def circle(cx: float, cy: float, r: float) -> Sdf:
    return lambda x, y: math.hypot(x - cx, y - cy) - r


def ellipse_ring(cx: float, cy: float, rx: float, ry: float, width: float) -> Sdf:
    def sdf(x: float, y: float) -> float:
        # Approximate distance to the ellipse outline, good enough for icons.
        nx, ny = (x - cx) / rx, (y - cy) / ry
        k = math.hypot(nx, ny)
        if k == 0.0:
            return min(rx, ry) - width / 2
        grad = math.hypot(nx / rx, ny / ry)
        return abs((k - 1.0) * k / grad) - width / 2

    return sdf


def ring(cx: float, cy: float, r: float, width: float) -> Sdf:
    return lambda x, y: abs(math.hypot(x - cx, y - cy) - r) - width / 2


def segment(x0: float, y0: float, x1: float, y1: float, width: float) -> Sdf:
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy

    def sdf(x: float, y: float) -> float:
        t = max(0.0, min(1.0, ((x - x0) * dx + (y - y0) * dy) / length2))
        return math.hypot(x - (x0 + t * dx), y - (y0 + t * dy)) - width / 2

    return sdf


def intersect(a: Sdf, b: Sdf) -> Sdf:
    return lambda x, y: max(a(x, y), b(x, y))


# --- rasterising --------------------------------------------------------------


def render(layers: list[tuple[Sdf, Color | Callable[[float, float], Color]]]) -> bytes:
    """Composite the layers (painter's order) into raw RGBA rows."""
    rows = bytearray()
    for py in range(SIZE):
        rows.append(0)  # PNG filter type "None" for this scanline
        for px in range(SIZE):
            x, y = px + 0.5, py + 0.5
            r = g = b = a = 0.0
            for sdf, paint in layers:
                coverage = max(0.0, min(1.0, 0.5 - sdf(x, y)))
                if coverage == 0.0:
                    continue
                cr, cg, cb, ca = paint(x, y) if callable(paint) else paint
                sa = coverage * ca / 255.0
                out_a = sa + a * (1.0 - sa)
                if out_a > 0.0:
                    r = (cr * sa + r * a * (1.0 - sa)) / out_a
                    g = (cg * sa + g * a * (1.0 - sa)) / out_a
                    b = (cb * sa + b * a * (1.0 - sa)) / out_a
                a = out_a
            rows += bytes((round(r), round(g), round(b), round(a * 255.0)))
    return bytes(rows)


def png(raw_rows: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw_rows, 9))
        + chunk(b"IEND", b"")
    )


def vertical_gradient(top: Color, bottom: Color) -> Callable[[float, float], Color]:
    def paint(_x: float, y: float) -> Color:
        t = y / SIZE
        return tuple(round(c0 + (c1 - c0) * t) for c0, c1 in zip(top, bottom, strict=True))  # type: ignore[return-value]

    return paint


# --- the two icons ------------------------------------------------------------

WHITE: Color = (255, 255, 255, 255)


def webapp_icon() -> bytes:
    """A browser window showing a globe."""
    tile = rounded_rect(64, 64, 62, 62, 22)
    window = rounded_rect(64, 68, 46, 38, 8)
    title_bar = intersect(window, lambda x, y: y - 44.0)
    globe_c = (64.0, 76.0)
    globe_r = 22.0
    inside_globe = circle(*globe_c, globe_r - 1)
    blue = (30, 110, 200, 255)
    layers: list[tuple[Sdf, Color | Callable[[float, float], Color]]] = [
        (tile, vertical_gradient((38, 166, 154, 255), (0, 105, 92, 255))),
        (window, WHITE),
        (title_bar, (207, 216, 220, 255)),
        (circle(30, 38, 3.2), (239, 83, 80, 255)),
        (circle(40, 38, 3.2), (255, 202, 40, 255)),
        (circle(50, 38, 3.2), (102, 187, 106, 255)),
        (circle(*globe_c, globe_r), (227, 242, 253, 255)),
        (ring(*globe_c, globe_r, 3.5), blue),
        (intersect(ellipse_ring(*globe_c, 9, globe_r, 3.0), inside_globe), blue),
        (segment(64, 54, 64, 98, 3.0), blue),
        (segment(42, 76, 86, 76, 3.0), blue),
        (intersect(segment(20, 65, 108, 65, 3.0), inside_globe), blue),
        (intersect(segment(20, 87, 108, 87, 3.0), inside_globe), blue),
    ]
    return png(render(layers))


def vncapp_icon() -> bytes:
    """A monitor on a stand, with a clock on its screen."""
    tile = rounded_rect(64, 64, 62, 62, 22)
    clock_c = (64.0, 56.0)
    hour = math.radians(300.0)  # ten o'clock
    minute = math.radians(60.0)  # ten past
    ticks = []
    for i in range(12):
        ang = math.radians(i * 30.0)
        inner = 17.0 if i % 3 == 0 else 19.0
        ticks.append(
            (
                segment(
                    clock_c[0] + inner * math.sin(ang),
                    clock_c[1] - inner * math.cos(ang),
                    clock_c[0] + 21.0 * math.sin(ang),
                    clock_c[1] - 21.0 * math.cos(ang),
                    2.2 if i % 3 == 0 else 1.4,
                ),
                (55, 71, 79, 255),
            )
        )
    dark: Color = (38, 50, 56, 255)
    layers: list[tuple[Sdf, Color | Callable[[float, float], Color]]] = [
        (tile, vertical_gradient((92, 107, 192, 255), (40, 53, 147, 255))),
        (rounded_rect(64, 106, 22, 4, 3), dark),
        (rounded_rect(64, 96, 7, 10, 1), dark),
        (rounded_rect(64, 56, 50, 36, 6), dark),
        (
            rounded_rect(64, 56, 44, 30, 2),
            vertical_gradient((129, 212, 250, 255), (2, 136, 209, 255)),
        ),
        (circle(*clock_c, 25), WHITE),
        (ring(*clock_c, 25, 2.5), dark),
        *ticks,
        (
            segment(
                *clock_c, clock_c[0] + 11 * math.sin(hour), clock_c[1] - 11 * math.cos(hour), 3.5
            ),
            dark,
        ),
        (
            segment(
                *clock_c,
                clock_c[0] + 18 * math.sin(minute),
                clock_c[1] - 18 * math.cos(minute),
                2.5,
            ),
            dark,
        ),
        (circle(*clock_c, 2.8), (229, 57, 53, 255)),
    ]
    return png(render(layers))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    for name, draw in (("webapp", webapp_icon), ("vncapp", vncapp_icon)):
        target = out / name / "icon.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(draw())
        print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
