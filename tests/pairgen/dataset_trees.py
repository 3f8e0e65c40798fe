"""Tiny dataset trees in the EXACT official layouts, written into a tmp folder by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_gif(path: Path, binary: np.ndarray) -> Path:
    """SCR-style mask: 8-bit gray GIF with values {0, 255}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(binary, 255, 0).astype(np.uint8), mode="L").save(path)
    return path


def write_jsrt_img(path: Path, values: np.ndarray) -> Path:
    """Headerless big-endian uint16 (12-bit values), as the JSRT distribution ships `.IMG` files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.asarray(values, dtype=">u2").tobytes())
    return path


def disc(side: int, cy: float, cx: float, r: float) -> np.ndarray:
    rows, cols = np.mgrid[:side, :side]
    return (rows - cy) ** 2 + (cols - cx) ** 2 < r * r


def chest_like(side: int, i: int = 0) -> np.ndarray:
    """uint8 side×side in the usual polarity: bright body, two dark lung fields (rows 20-70 %, cols 19-41 % and
    59-81 %), bright mediastinum between them. Pixel (0, 0) = i makes cases distinguishable."""
    image = np.full((side, side), 180, np.uint8)
    rows = slice(int(0.2 * side), int(0.7 * side))
    image[rows, int(0.19 * side):int(0.41 * side)] = 40
    image[rows, int(0.59 * side):int(0.81 * side)] = 40
    image[0, 0] = i
    return image


def scr_png_tree(root: Path, names: list[str], image_side: int = 64, mask_side: int = 128,
                 structures: tuple[str, ...] = ("left lung", "heart"), air_bright: bool = False) -> Path:
    """Flat dev layout: images/<case>.png + masks/<structure>/<case>.gif. 'left lung' = the image-right field,
    'heart' = a central block. air_bright stores the PNGs inverted (raw JSRT polarity, like the dev copy)."""
    left_lung = np.zeros((mask_side, mask_side), bool)
    left_lung[int(0.2 * mask_side):int(0.7 * mask_side), int(0.59 * mask_side):int(0.81 * mask_side)] = True
    heart = np.zeros((mask_side, mask_side), bool)
    heart[int(0.5 * mask_side):int(0.8 * mask_side), int(0.4 * mask_side):int(0.65 * mask_side)] = True
    shapes = {"left lung": left_lung, "heart": heart}
    for i, name in enumerate(names):
        image = chest_like(image_side, i)
        write_png(root / "images" / f"{name}.png", 255 - image if air_bright else image)
        for structure in structures:
            write_gif(root / "masks" / structure / f"{name}.gif", shapes.get(structure, heart))
    return root


def scr_official_tree(root: Path, side: int = 64, mask_side: int = 32) -> Path:
    """Official downloads: All247images/*.IMG and SCR fold1/masks/<structure>/, fold2/masks/<structure>/."""
    raw = np.full((side, side), 3000, np.uint16)          # high raw value = much transmitted X-ray (air)
    raw[:, : side // 2] = 800                             # left half: tissue
    write_jsrt_img(root / "JSRT" / "All247images" / "JPCLN002.IMG", raw)
    write_jsrt_img(root / "JSRT" / "All247images" / "JPCNN001.IMG", raw[::-1].copy())
    lung = np.zeros((mask_side, mask_side), bool)
    lung[4:20, 4:28] = True
    heart = np.zeros((mask_side, mask_side), bool)
    heart[12:28, 12:20] = True                           # overlaps the lung in rows 12..19
    for fold, case in (("fold1", "JPCLN002"), ("fold2", "JPCNN001")):
        write_gif(root / "scratch" / fold / "masks" / "left lung" / f"{case}.gif", lung)
        write_gif(root / "scratch" / fold / "masks" / "heart" / f"{case}.gif", heart)
    return root


def cityscapes_tree(root: Path, frames: dict[str, list[str]], height: int = 8, width: int = 16) -> Path:
    """leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png + gtFine/…_gtFine_labelIds.png.

    frames: split → frame stems such as 'aachen_000000_000019'. Labels cycle through ids 0..33 (+ offset).
    """
    for split, stems in frames.items():
        for k, stem in enumerate(stems):
            city = stem.split("_")[0]
            rgb = np.full((height, width, 3), 10 * k, np.uint8)
            write_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", rgb)
            ids = ((np.arange(height * width) + k) % 34).reshape(height, width).astype(np.uint8)
            write_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
    return root


def camvid_tree(root: Path, counts: dict[str, int], with_lists: bool = True, height: int = 6,
                width: int = 8) -> Path:
    """SegNet CamVid: <split>/ + <split>annot/ PNGs, <split>.txt with /SegNet/CamVid/ paths. Labels cycle 0..11."""
    for split, n in counts.items():
        lines = []
        for k in range(n):
            name = f"{split[:2]}{k:03d}_{k:06d}.png"
            write_png(root / split / name, np.full((height, width, 3), 20 * k % 256, np.uint8))
            labels = ((np.arange(height * width) + k) % 12).reshape(height, width).astype(np.uint8)
            write_png(root / f"{split}annot" / name, labels)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        if with_lists:
            (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def folder_tree(root: Path, n: int, rgb: bool = False, side: int = 16) -> Path:
    """images/<stem>.png + masks/<stem>.png, binary masks stored 0/255."""
    for k in range(n):
        mask = disc(side, side / 2, side / 2, 2 + k % 4)
        gray = np.where(mask, 220, 30).astype(np.uint8)
        image = np.stack([gray, gray // 2, gray // 3], axis=2) if rgb else gray
        write_png(root / "images" / f"img{k:02d}.png", image)
        write_png(root / "masks" / f"img{k:02d}.png", np.where(mask, 255, 0).astype(np.uint8))
    return root
