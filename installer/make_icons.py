"""Render the app icon set from its one source, resources/icons/trailstop.svg.

    .venv/bin/python installer/make_icons.py        (or: make icons)

Writes, beside the SVG: trailstop-<N>.png for the Linux icon theme and the window, trailstop.ico (Windows:
PNG images inside an ICO container, Vista and later) and trailstop.icns (macOS: PNG images in the ICNS
slots). Both containers are written here byte by byte, so no image tool beyond Qt is needed.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ICONS = ROOT / "resources" / "icons"
SOURCE = ICONS / "trailstop.svg"

# hicolor theme sizes (Linux desktop entries, taskbars) and the window icon.
PNG_SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)
# Explorer, the taskbar and the Start menu pick from these; 256 is the large-icon view.
ICO_SIZES = (16, 20, 24, 32, 40, 48, 64, 256)
# ICNS slot type -> pixel size. ic11-ic14 are the @2x (Retina) variants of 16, 32, 128 and 256 points.
ICNS_SLOTS = (
    ("icp4", 16),
    ("icp5", 32),
    ("icp6", 64),
    ("ic07", 128),
    ("ic08", 256),
    ("ic09", 512),
    ("ic10", 1024),
    ("ic11", 32),
    ("ic12", 64),
    ("ic13", 256),
    ("ic14", 512),
)


def render_png(svg: Path, size: int) -> bytes:
    """The SVG drawn at ``size`` x ``size`` pixels on a transparent background, as PNG bytes."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg}: not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):  # type: ignore[call-overload]  # the stubs want bytes; Qt, str
        raise SystemExit(f"could not encode a {size} px PNG")
    buffer.close()
    return bytes(data.data())


def ico_bytes(images: dict[int, bytes]) -> bytes:
    """An ICO file holding one PNG image per size (a width or height of 256 is written as 0)."""
    sizes = sorted(images)
    header = struct.pack("<HHH", 0, 1, len(sizes))
    offset = len(header) + 16 * len(sizes)
    entries, payload = b"", b""
    for size in sizes:
        png = images[size]
        side = 0 if size >= 256 else size
        entries += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(png), offset + len(payload))
        payload += png
    return header + entries + payload


def icns_bytes(slots: list[tuple[str, bytes]]) -> bytes:
    """An ICNS file: 'icns', the total length, then (type, length, PNG) blocks; lengths are big-endian."""
    body = b"".join(kind.encode("ascii") + struct.pack(">I", 8 + len(png)) + png for kind, png in slots)
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    cache: dict[int, bytes] = {}

    def png(size: int) -> bytes:
        if size not in cache:
            cache[size] = render_png(source, size)
        return cache[size]

    for size in PNG_SIZES:
        (ICONS / f"trailstop-{size}.png").write_bytes(png(size))
    (ICONS / "trailstop.ico").write_bytes(ico_bytes({size: png(size) for size in ICO_SIZES}))
    (ICONS / "trailstop.icns").write_bytes(icns_bytes([(kind, png(size)) for kind, size in ICNS_SLOTS]))
    del app
    print(
        f"icons from {source.relative_to(ROOT)}: {len(PNG_SIZES)} PNG sizes, trailstop.ico "
        f"({len(ICO_SIZES)} sizes), trailstop.icns ({len(ICNS_SLOTS)} slots) in {ICONS.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
