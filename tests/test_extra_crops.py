"""dataset/make_extra_crops.py: cuts the real-mask training crops from a clone of their source repository."""

import csv
import hashlib
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_extra_crops", REPO / "dataset" / "make_extra_crops.py")
crops = importlib.util.module_from_spec(spec)
spec.loader.exec_module(crops)


@pytest.mark.parametrize("box, expected", [
    ((100, 50, 200, 150), (85, 35, 215, 165)),  # 15% of 100 px each side
    ((0, 0, 40, 20), (0, 0, 46, 23)),  # clipped at the photo's top-left corner
    ((280, 180, 300, 200), (277, 177, 300, 200)),  # and at its bottom-right one
])
def test_crop_box_widens_by_the_margin_and_clips(box, expected):
    assert crops.crop_box(box, 300, 200) == expected


def test_cut_shrinks_large_crops_only():
    photo = np.zeros((1000, 1000, 3), np.uint8)
    assert crops.cut(photo, (100, 100, 600, 400)).shape == (154, 256, 3)  # 650x390 shrunk to 256 wide
    assert crops.cut(photo, (10, 10, 30, 50)).shape == (52, 26, 3)  # small: native size


def write_clone(root: Path, seed=0):
    rng = np.random.default_rng(seed)
    photo = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    (root / "JPEGImages").mkdir(parents=True)
    assert cv2.imwrite(str(root / "JPEGImages" / "a photo.jpg"), photo)
    return hashlib.sha256((root / "JPEGImages" / "a photo.jpg").read_bytes()).hexdigest()


def write_list(path: Path, sha256: str):
    rows = [("big", "with_mask/b1.jpg", "with_mask", "60 40 160 160"),
            ("small", "without_mask/s1.jpg", "without_mask", "10 10 30 40")]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["folder", "file", "label", "source_image", "source_sha256", "box_xyxy"])
        for folder, file, label, box in rows:
            writer.writerow([folder, file, label, "JPEGImages/a photo.jpg", sha256, box])


def test_cuts_every_listed_crop_with_a_manifest(tmp_path):
    sha256 = write_clone(tmp_path / "clone")
    write_list(tmp_path / "list.csv", sha256)
    out = tmp_path / "out"
    assert crops.main(["--source", str(tmp_path / "clone"), "--output", str(out), "--list", str(tmp_path / "list.csv")]) == 0
    big = cv2.imread(str(out / "big" / "with_mask" / "b1.jpg"))
    assert big.shape == (156, 130, 3)  # a 100x120 box + 15 px left and right, 18 px above and below
    assert cv2.imread(str(out / "small" / "without_mask" / "s1.jpg")).shape == (38, 26, 3)
    with open(out / "big" / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert manifest == [{"file": "with_mask/b1.jpg", "label": "with_mask", "source_image": "JPEGImages/a photo.jpg",
                         "source_sha256": sha256, "box_xyxy": "60 40 160 160"}]
    assert not list(out.rglob(".*tmp"))


def test_a_changed_source_photo_is_skipped_and_reported(tmp_path, capsys):
    write_clone(tmp_path / "clone")
    write_list(tmp_path / "list.csv", "0" * 64)
    code = crops.main(["--source", str(tmp_path / "clone"), "--output", str(tmp_path / "out"),
                       "--list", str(tmp_path / "list.csv")])
    assert code == 2 and "not the expected photo" in capsys.readouterr().err
    assert not (tmp_path / "out" / "big" / "with_mask" / "b1.jpg").exists()


def test_missing_clone_is_one_error_line(tmp_path, capsys):
    assert crops.main(["--source", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_the_shipped_list_names_every_shared_crop(shared_dir):
    """dataset/extra_crops.csv lists exactly the crops in ../shared/extra_training, with their boxes."""
    with open(crops.LIST, newline="") as f:
        listed = {(row["folder"], row["file"]): row["box_xyxy"] for row in csv.DictReader(f)}
    found = {}
    for folder in ("ilc2021", "ilc2021_small"):
        manifest = shared_dir / "extra_training" / folder / "manifest.csv"
        if not manifest.is_file():
            pytest.skip(f"{manifest} not found")
        with open(manifest, newline="") as f:
            found.update({(folder, row["file"]): row["box_xyxy"] for row in csv.DictReader(f)})
    assert listed == found
