"""Aerial-looking scenes with cars and trucks, at 0.10 m per pixel.

The scene is a grid of 25.6 m cells, each a field (with trees and the odd vehicle
at any angle), a parking lot (rows of cars 2-5 px apart, painted lines between
them), a building (roof, shadow, roof fixtures that look like cars), or a road
(lanes, dashed markings, vehicles along it). Cars are 1.8 x 4.2 m, trucks 2.5 x 8 m,
in many colours. Everything is drawn per block of rows from a layout made up front,
so any size can be written in bounded memory. The ground truth is the axis-aligned
box around each vehicle.
"""

from __future__ import annotations

import math
import os

import numpy as np

from geodet.synthetic.common import COARSE, smooth, write_blocks

CLASSES = ("car", "truck")
SIZES = {0: (42.0, 18.0), 1: (80.0, 25.0)}  # (length, width) in px at 0.10 m
CELL = 256

GROUND = np.array([(80, 110, 55), (150, 140, 90), (120, 95, 70), (88, 72, 56),
                   (100, 125, 70)], float)
BODY = np.array([(235, 235, 235), (182, 184, 188), (112, 112, 118), (38, 38, 42),
                 (170, 32, 30), (32, 62, 150), (42, 92, 52), (222, 192, 44),
                 (205, 190, 160), (120, 20, 30)], float)
CARGO = np.array([(225, 225, 220), (150, 150, 155), (215, 120, 40), (60, 90, 160)], float)
ROOF = np.array([(150, 150, 150), (160, 82, 62), (92, 92, 102), (200, 190, 172)], float)
WINDOW, SHADOW, MARKING = (40, 48, 58), 0.55, (232, 232, 226)


class _Layout:
    """Everything to draw, in painting order: rectangles, discs, vehicles."""

    def __init__(self) -> None:
        self.rects: list[tuple] = []  # x0, y0, x1, y1, r, g, b
        self.discs: list[tuple] = []  # cx, cy, radius, r, g, b
        self.vehicles: list[tuple] = []  # cx, cy, angle, class, body index, cargo index

    def rect(self, x0, y0, x1, y1, colour) -> None:
        self.rects.append((x0, y0, x1, y1, *colour))

    def vehicle(self, rng, cx, cy, angle, cls) -> None:
        self.vehicles.append((cx, cy, angle, cls, rng.integers(len(BODY)),
                              rng.integers(len(CARGO))))


def _field(lay: _Layout, rng, x, y) -> None:
    for _ in range(rng.integers(0, 5)):  # trees, with shadows
        cx, cy, r = x + rng.uniform(20, 236), y + rng.uniform(20, 236), rng.uniform(6, 18)
        lay.discs.append((cx + r * 0.5, cy + r * 0.5, r, 35, 40, 30))
        lay.discs.append((cx, cy, r, *rng.choice([(40, 75, 35), (55, 90, 40)])))
    placed: list[tuple] = []
    for _ in range(rng.integers(0, 3)):
        cx, cy = x + rng.uniform(46, 210), y + rng.uniform(46, 210)
        if all(math.hypot(cx - a, cy - b) > 90 for a, b in placed):
            placed.append((cx, cy))
            lay.vehicle(rng, cx, cy, rng.uniform(0, math.pi), int(rng.random() < 0.3))


def _lot(lay: _Layout, rng, x, y) -> None:
    vertical = rng.random() < 0.5  # rows run along x, cars point along y
    asphalt = (rng.uniform(62, 92),) * 3
    lay.rect(x + 6, y + 6, x + 250, y + 250, asphalt)
    for v0 in (12, 57, 150, 195):  # two double rows, aisle between
        u = 12 + rng.integers(0, 6)
        while u + 18 <= 244:
            gap = int(rng.integers(2, 6))
            line = (u + 18 + gap / 2 - 0.5, v0, u + 18 + gap / 2 + 0.5, v0 + 42)
            line = line if vertical else (line[1], line[0], line[3], line[2])
            lay.rect(x + line[0], y + line[1], x + line[2], y + line[3], MARKING)
            if rng.random() < 0.75:
                cu, cv = u + 9 + rng.uniform(-0.5, 0.5), v0 + 21
                angle = math.pi / 2 + rng.uniform(-0.03, 0.03)
                if vertical:
                    lay.vehicle(rng, x + cu, y + cv, angle, 0)
                else:
                    lay.vehicle(rng, x + cv, y + cu, angle - math.pi / 2, 0)
            u += 18 + gap


def _yard(lay: _Layout, rng, x, y) -> None:
    """A loading yard: trucks side by side, 3-6 px apart, in one or two rows."""
    vertical = rng.random() < 0.5
    lay.rect(x + 6, y + 6, x + 250, y + 250, (rng.uniform(120, 150),) * 3)  # concrete
    for v0 in (14, 140)[: rng.integers(1, 3)]:
        u = 10 + rng.integers(0, 10)
        while u + 25 <= 246:
            if rng.random() < 0.8:
                cu, cv = u + 12.5, v0 + 40
                angle = rng.choice([math.pi / 2, -math.pi / 2]) + rng.uniform(-0.02, 0.02)
                if vertical:
                    lay.vehicle(rng, x + cu, y + cv, angle, 1)
                else:
                    lay.vehicle(rng, x + cv, y + cu, angle - math.pi / 2, 1)
            u += 25 + int(rng.integers(3, 7))


def _building(lay: _Layout, rng, x, y) -> None:
    w, h = rng.uniform(80, 200, size=2)
    x0, y0 = x + rng.uniform(10, 246 - w - 12), y + rng.uniform(10, 246 - h - 12)
    lay.rect(x0 + 10, y0 + 10, x0 + w + 10, y0 + h + 10, (45, 45, 42))  # shadow
    lay.rect(x0, y0, x0 + w, y0 + h, ROOF[rng.integers(len(ROOF))])
    for _ in range(rng.integers(0, 3)):  # roof fixtures, car-sized: hard negatives
        fw, fh = rng.uniform(10, 24), rng.uniform(18, 44)
        if rng.random() < 0.5:
            fw, fh = fh, fw
        if fw < w - 8 and fh < h - 8:
            fx, fy = x0 + rng.uniform(4, w - fw - 4), y0 + rng.uniform(4, h - fh - 4)
            lay.rect(fx, fy, fx + fw, fy + fh, (205, 205, 200))


def _road(lay: _Layout, rng, x, y) -> None:
    horizontal = rng.random() < 0.5
    c = rng.uniform(60, 196)

    def span(u0, v0, u1, v1, colour):
        if horizontal:
            lay.rect(x + u0, y + v0, x + u1, y + v1, colour)
        else:
            lay.rect(x + v0, y + u0, x + v1, y + u1, colour)

    span(0, c - 35, 256, c + 35, (rng.uniform(58, 78),) * 3)
    for u in range(int(rng.integers(0, 48)) - 48, 256, 48):
        span(max(u, 0), c - 1, min(u + 24, 256), c + 1, MARKING)
    u = rng.uniform(0, 40)
    while True:
        cls = int(rng.random() < 0.3)
        length = SIZES[cls][0]
        u += length / 2
        if u + length / 2 > 250:
            break
        if rng.random() < 0.6:
            v = c + rng.choice([-17.0, 17.0])
            angle = rng.choice([0.0, math.pi])
            if horizontal:
                lay.vehicle(rng, x + u, y + v, angle, cls)
            else:
                lay.vehicle(rng, x + v, y + u, angle + math.pi / 2, cls)
        u += length / 2 + rng.uniform(12, 40)


def layout(size: int, seed: int) -> _Layout:
    """The scene's content, cell by cell (each cell from its own random stream)."""
    lay = _Layout()
    # The cell grid starts at an offset, so that no tiling grid lines up with it.
    ox, oy = np.random.default_rng([seed, size]).integers(CELL // 4, CELL // 2, size=2)
    for j in range(int(oy), size - CELL + 1, CELL):
        for i in range(int(ox), size - CELL + 1, CELL):
            rng = np.random.default_rng([seed, i, j])
            r = rng.random()
            kind = (_field if r < 0.25 else _lot if r < 0.5 else _yard if r < 0.65
                    else _building if r < 0.8 else _road)
            kind(lay, rng, i, j)
    return lay


def envelopes(vehicles: np.ndarray) -> np.ndarray:
    """Axis-aligned boxes (N, 4) around vehicles ``(cx, cy, angle, class, ...)``."""
    lengths = np.array([SIZES[int(c)][0] for c in vehicles[:, 3]])
    widths = np.array([SIZES[int(c)][1] for c in vehicles[:, 3]])
    cos, sin = np.abs(np.cos(vehicles[:, 2])), np.abs(np.sin(vehicles[:, 2]))
    hx, hy = lengths / 2 * cos + widths / 2 * sin, lengths / 2 * sin + widths / 2 * cos
    cx, cy = vehicles[:, 0], vehicles[:, 1]
    return np.stack([cx - hx, cy - hy, cx + hx, cy + hy], axis=1)


def _draw_vehicle(block, top, v, shadow: bool) -> None:
    cx, cy, angle, cls, body, cargo = v
    length, width = SIZES[int(cls)]
    if shadow:
        cx, cy = cx + 3, cy + 3
    reach = math.hypot(length, width) / 2 + 1
    r0, r1 = max(int(cy - reach), top), min(int(cy + reach) + 1, top + block.shape[1])
    c0, c1 = max(int(cx - reach), 0), min(int(cx + reach) + 1, block.shape[2])
    if r0 >= r1 or c0 >= c1:
        return
    py, px = np.mgrid[r0:r1, c0:c1] + 0.5
    dx, dy = px - cx, py - cy
    u = dx * math.cos(angle) + dy * math.sin(angle)  # along the length, + is the front
    w = -dx * math.sin(angle) + dy * math.cos(angle)
    inside = (np.abs(u) <= length / 2) & (np.abs(w) <= width / 2)
    view = block[:, r0 - top:r1 - top, c0:c1]
    if shadow:
        view[:, inside] *= SHADOW
        return
    f = u / length  # -0.5 (rear) .. 0.5 (front)
    colour = np.broadcast_to(BODY[int(body)][:, None, None], (3, *u.shape)).copy()
    if cls == 0:
        glass = ((f > 0.1) & (f < 0.27)) | ((f > -0.4) & (f < -0.3))
        side = np.abs(w) > width / 2 - 1.5
        colour[:, glass & ~side] = np.array(WINDOW)[:, None]
    else:
        colour[:, f < 0.26] = CARGO[int(cargo)][:, None]
        colour[:, (f >= 0.26) & (f < 0.3)] = np.array((30, 30, 30))[:, None]
    view[:, inside] = colour[:, inside]


def vehicle_scene(path: str | os.PathLike, size: int = 4096,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write the scene; return the true boxes ``(N, 4)`` (scene pixels) and class ids
    (0 car, 1 truck)."""
    lay = layout(size, seed)
    rects = np.array(lay.rects, float).reshape(-1, 7)
    discs = np.array(lay.discs, float).reshape(-1, 6)
    vehicles = np.array(lay.vehicles, float).reshape(-1, 6)
    boxes = envelopes(vehicles)
    reach = np.array([math.hypot(*SIZES[int(c)]) / 2 + 4 for c in vehicles[:, 3]])
    rng = np.random.default_rng(seed)
    n_coarse = size // COARSE + 2
    ground = GROUND[rng.integers(len(GROUND), size=(n_coarse, n_coarse))]

    def paint(rows: slice) -> np.ndarray:
        top = rows.start
        noise = np.random.default_rng([seed, top]).normal(0, 6, (rows.stop - top, size, 3))
        block = np.moveaxis(smooth(rows, size, ground) + noise, -1, 0)
        for x0, y0, x1, y1, *colour in rects[(rects[:, 1] < rows.stop) & (rects[:, 3] > top)]:
            block[:, max(round(y0), top) - top:max(round(y1), top) - top,
                  max(round(x0), 0):round(x1)] = np.array(colour)[:, None, None]
        for cx, cy, r, *colour in discs[np.abs(discs[:, 1] - (top + rows.stop) / 2)
                                        < r_half(rows) + discs[:, 2]]:
            ys, xs = np.ogrid[top:rows.stop, max(int(cx - r), 0):int(cx + r) + 1]
            disc = (xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= r * r
            sub = block[:, :, max(int(cx - r), 0):int(cx + r) + 1]
            sub[:, disc] = np.array(colour)[:, None]
        near = np.abs(vehicles[:, 1] - (top + rows.stop) / 2) < r_half(rows) + reach
        for shadow in (True, False):
            for v in vehicles[near]:
                _draw_vehicle(block, top, v, shadow)
        return np.clip(block, 0, 255).astype(np.uint8)

    write_blocks(path, size, paint)
    return boxes, vehicles[:, 3].astype(np.int64)


def r_half(rows: slice) -> float:
    return (rows.stop - rows.start) / 2
