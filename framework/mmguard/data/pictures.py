"""Pictures with names from Debian packages, for aligning the pre-trained LVLM (``engine/align.py``).

- ``tuxpaint-stamps-default``: photo cut-outs and drawings (animals, food, plants, vehicles, ...), most with a
  one-line English caption in a ``.txt`` beside the PNG; the folder is the category. Stamps of letters, numerals,
  coins and arithmetic are left out, so that the aligned model has seen no digits (the regime's test domain).
- ``fonts-noto-color-emoji``: colour emoji rendered from the font with Pillow, named by ``unicodedata``.

``fetch_pictures`` downloads and unpacks them into the cache with ``apt-get download`` and ``dpkg -x`` (no root,
nothing installed). Images are composited on white and kept at their own size; the model's processor resizes.
"""
from __future__ import annotations

import subprocess
import tempfile
import unicodedata
from pathlib import Path
from typing import Dict, List

from PIL import Image, ImageDraw, ImageFont

from mmguard.core.errors import UserError
from mmguard.data.sample import Sample

PACKAGES = ("tuxpaint-stamps-default", "fonts-noto-color-emoji")
STAMPS = Path("usr/share/tuxpaint/stamps")
EMOJI_FONT = Path("usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
# stamp folders that show letters, numerals or sums: digits must stay a domain the aligned model does not know
EXCLUDED_STAMPS = ("symbols/alphabets", "symbols/math", "symbols/money", "symbols/numbers")
# emoji blocks with one picture per code point (pictographs, transport, food, animals, ...)
EMOJI_RANGES = ((0x1F300, 0x1F5FF), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x1FA70, 0x1FAFF))


def fetch_pictures(root: Path, packages=PACKAGES) -> Path:
    """The Debian ``packages`` unpacked under ``root`` (downloaded once)."""
    if all((root / (".done-" + p)).is_file() for p in packages):
        return root
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        for package in packages:
            if (root / (".done-" + package)).is_file():
                continue
            run = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
            debs = sorted(Path(tmp).glob(f"{package}_*.deb"))
            if run.returncode != 0 or not debs:
                raise UserError(f"cannot download the Debian package {package} ({run.stderr.strip()[-200:]}); "
                                f"run 'apt-get update' once, or unpack it yourself under {root} with dpkg -x")
            subprocess.run(["dpkg", "-x", str(debs[0]), str(root)], check=True)
            (root / (".done-" + package)).write_text(debs[0].name + "\n")
    return root


def on_white(path: Path) -> Image.Image:
    image = Image.open(path).convert("RGBA")
    canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
    canvas.alpha_composite(image)
    canvas.thumbnail((256, 256), Image.BICUBIC)  # stamps are up to ~1000 px; the model sees 128
    return canvas.convert("RGB")


def _english_caption(txt: Path) -> str:
    first = txt.read_text(encoding="utf-8", errors="replace").splitlines()[0:1]
    return first[0].strip() if first and "=" not in first[0].split(" ")[0] else ""


def stamp_name(path: Path) -> str:
    """``apple_fuji.png`` -> ``apple``; ``red-gazania.png`` -> ``red gazania``; trailing numbers dropped."""
    words = path.stem.replace("-", " ").replace("_", " ").lower().split()
    words = [w for w in words if not w.isdigit()]
    return " ".join(words).rstrip("0123456789").strip() or path.stem.lower()


def stamps(root: Path) -> List[Dict]:
    """One entry per stamp PNG that has an English caption: image path, name, caption, category."""
    base = root / STAMPS
    if not base.is_dir():
        raise UserError(f"no tuxpaint stamps under {base}: fetch them with fetch_pictures({root})")
    out = []
    for png in sorted(base.rglob("*.png")):
        rel = png.relative_to(base).as_posix()
        if rel.startswith(EXCLUDED_STAMPS) or "_mirror" in png.stem or "_flip" in png.stem:
            continue
        txt = png.with_suffix(".txt")
        caption = _english_caption(txt) if txt.is_file() else ""
        if not caption:
            continue
        out.append({"image": png, "name": stamp_name(png), "caption": caption, "category": rel.split("/")[0]})
    return out


def emoji(root: Path, size: int = 109) -> List[Dict]:
    """One entry per single-code-point emoji that the font draws: image, name (``unicodedata``), category."""
    font_path = root / EMOJI_FONT
    if not font_path.is_file():
        raise UserError(f"no Noto colour emoji font at {font_path}: fetch it with fetch_pictures({root})")
    font = ImageFont.truetype(str(font_path), size)  # the colour bitmaps exist at 109 px only
    out = []
    for lo, hi in EMOJI_RANGES:
        for cp in range(lo, hi + 1):
            name = unicodedata.name(chr(cp), "").lower()
            if not name or font.getmask(chr(cp)).getbbox() is None:
                continue
            canvas = Image.new("RGB", (136, 128), "white")
            ImageDraw.Draw(canvas).text((4, 0), chr(cp), font=font, embedded_color=True)
            out.append({"image": canvas, "name": name, "caption": f"An emoji of {name}.", "category": "emoji"})
    return out


def caption_samples(entries: List[Dict], prefix: str) -> List[Sample]:
    """Stage 1 (LLaVA's feature alignment): describe the picture -> its caption."""
    return [Sample(f"{prefix}{i:05d}", _image(e), "Describe the image.", e["caption"], [], meta={"name": e["name"]})
            for i, e in enumerate(entries)]


def vqa_samples(entries: List[Dict], prefix: str) -> List[Sample]:
    """Stage 2 (visual instruction tuning): what is it, and what kind of thing is it."""
    out = []
    for i, e in enumerate(entries):
        image = _image(e)
        out.append(Sample(f"{prefix}{i:05d}w", image, "What is this?", e["name"], [], meta={"type": "name"}))
        out.append(Sample(f"{prefix}{i:05d}k", image, "What kind of thing is this?", e["category"], [],
                          meta={"type": "category"}))
    return out


def _image(entry: Dict) -> Image.Image:
    image = entry["image"]
    return image if isinstance(image, Image.Image) else on_white(Path(image))
