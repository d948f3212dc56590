"""Image folders (torchvision ``ImageFolder`` style), read with Pillow.

Two layouts:

- ``DIR/train/<class>/*`` and ``DIR/test/<class>/*`` (or ``val``, ``valid``,
  ``validation`` instead of ``test``): the split is given;
- ``DIR/<class>/*``: one set, split with ``train_test_split(test_size=test_fraction,
  random_state=seed, stratify=y)``.

Classes are the sorted subfolder names (union of train and test). Files with
an image suffix (``.png .jpg .jpeg .bmp .gif .tif .tiff .webp .ppm .pgm``) are
read; hidden files and other suffixes are skipped (counted in ``meta``). All
images must share one size. If every image is grayscale (Pillow modes ``1``,
``L``, ``LA``, ``I``, ``I;16``, ``F``) the inputs have 1 channel, otherwise
every image is converted to RGB (3 channels). Pixels are divided by 255:
``x`` has shape ``(N, C, H, W)``, float32 in ``[0, 1]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fitscope.data.dataset import Dataset
from fitscope.data.split import split_train_test
from fitscope.data.validation import build_dataset, check_at_least_two_classes, validate_arrays
from fitscope.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
TEST_FOLDER_NAMES = ("test", "val", "valid", "validation")
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_image_folder(folder: Path) -> bool:
    """Whether ``folder`` has subfolders (class folders, or ``train``/``test``)."""
    return bool(_class_dirs(folder))


def _files(class_dir: Path) -> tuple[list[Path], int]:
    files, skipped = [], 0
    for path in sorted(class_dir.rglob("*")):
        if not path.is_file():
            continue
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped += 1
        else:
            files.append(path)
    return files, skipped


def _read_images(paths: list[Path], root: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    images, modes = [], []
    size, first = None, None
    for path in paths:
        rel = path.relative_to(root).as_posix()
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DataError(f"cannot read image {rel} in {root.name}: {' '.join(str(err).split())}") from None
        if size is None:
            size, first = image.size, rel
        elif image.size != size:
            raise DataError(
                f"image size in {root.name}: expected {size[0]}x{size[1]} (as {first}), "
                f"got {image.size[0]}x{image.size[1]} in {rel}"
            )
        modes.append(image.mode)
        images.append(image)
    gray = all(m in GRAY_MODES for m in modes)
    width, height = size
    x = np.empty((len(images), 1 if gray else 3, height, width), dtype=np.float32)
    for i, image in enumerate(images):
        pixels = np.asarray(image.convert("L" if gray else "RGB"), dtype=np.float32)
        x[i] = pixels[None] if gray else pixels.transpose(2, 0, 1)
    return x / np.float32(255.0)


def load_image_folder(folder: Path, *, test_fraction: float, seed: int) -> Dataset:
    """Load an image folder (layouts in the module docstring).

    Raises:
        DataError: no images, an unreadable image, images of different sizes,
            a single class or an empty split.
    """
    where = folder.name
    top = {p.name: p for p in _class_dirs(folder)}
    test_name = next((n for n in TEST_FOLDER_NAMES if n in top), None)
    presplit = "train" in top and test_name is not None
    parts = {"train": top["train"], "test": top[test_name]} if presplit else {"all": folder}
    class_names = sorted({c.name for part in parts.values() for c in _class_dirs(part)})
    if not class_names:
        raise DataError(
            f"image folder {folder}: expected class subfolders (in train/ and test/, or directly), got none"
        )
    index = {name: i for i, name in enumerate(class_names)}

    paths: dict[str, list[Path]] = {}
    labels: dict[str, list[int]] = {}
    skipped = 0
    for part, base in parts.items():
        paths[part], labels[part] = [], []
        for class_dir in _class_dirs(base):
            files, n_skipped = _files(class_dir)
            skipped += n_skipped
            paths[part] += files
            labels[part] += [index[class_dir.name]] * len(files)
    all_paths = [p for part in parts for p in paths[part]]
    if not all_paths:
        raise DataError(
            f"image folder {folder}: expected image files ({', '.join(sorted(IMAGE_SUFFIXES))}) "
            f"in its class folders, got none"
        )
    x_all = _read_images(all_paths, folder)
    meta = dict(format="imagefolder", layout=f"train/{test_name}" if presplit else "class folders",
                channels=int(x_all.shape[1]), skipped_files=skipped, scaling="pixels / 255")

    if presplit:
        n_train = len(paths["train"])
        return build_dataset(
            where, x_all[:n_train], np.asarray(labels["train"], dtype=np.int64),
            x_all[n_train:], np.asarray(labels["test"], dtype=np.int64),
            where=where, classes=class_names, meta=meta,
            source=f"{folder} (image folder, train/ and {test_name}/)",
        )
    x, y = validate_arrays(x_all, np.asarray(labels["all"], dtype=np.int64), where=where)
    check_at_least_two_classes(y, where=where, classes=class_names)
    x_train, y_train, x_test, y_test, stratified = split_train_test(
        x, y, test_fraction=test_fraction, seed=seed, where=where
    )
    meta.update(split_seed=seed, test_fraction=test_fraction, stratified=stratified)
    kind = "stratified split" if stratified else "shuffle split"
    return build_dataset(
        where, x_train, y_train, x_test, y_test,
        where=where, classes=class_names, meta=meta,
        source=f"{folder} (image folder; {kind}, test_fraction={test_fraction}, seed={seed})",
    )
