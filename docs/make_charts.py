"""Draw the docs' chart pictures: the built-in sample's charts, shrunk to a few dozen KB.

Usage: `python docs/make_charts.py docs` (`make docs-charts`). The run is the same as
`make run`'s, so the pictures show what a newcomer's first run draws.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image

from clustering.cli import main
from clustering.naming import PNG_ELBOW, PNG_HEATMAP, PNG_PCA

# Pixels: legible on GitHub, small in the repository (the heatmap is about as tall as wide).
MAX_WIDTH, MAX_HEIGHT = 900, 600
COLOURS = 64  # a palette this size keeps the lines and the heatmap's shades


def make_charts(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as out:
        if main(["run", "--out", out, "--quiet"]) != 0:
            raise SystemExit("the sample run failed")
        for name in (PNG_ELBOW, PNG_PCA, PNG_HEATMAP):
            image = Image.open(Path(out) / "latest" / name).convert("RGB")
            scale = min(MAX_WIDTH / image.width, MAX_HEIGHT / image.height)
            size = (round(image.width * scale), round(image.height * scale))
            small = image.resize(size, Image.Resampling.LANCZOS)
            target = folder / name
            small.quantize(COLOURS).save(target, optimize=True)
            written.append(target)
    return written


if __name__ == "__main__":
    for path in make_charts(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
