"""Cut the real-mask training crops (ilc2021, ilc2021_small) from a clone of their source repository.

Usage:
    git clone https://github.com/jolignier/face-mask-dataset-ilc-2021 ilc
    git -C ilc checkout 1178de4
    python dataset/make_extra_crops.py --source ilc --output extra_training
    python train_mask_detector.py --dataset dataset extra_training/ilc2021 extra_training/ilc2021_small ...

dataset/extra_crops.csv names every crop: its folder and file, its label, the source photo (path inside
the clone and its SHA-256) and the annotated box (xmin ymin xmax ymax). Each crop is that box widened by
15% of its width left and right and 15% of its height above and below, clipped to the photo, shrunk with
INTER_AREA to a longer side of at most 256 px (never enlarged) and saved as JPEG quality 90. Each output
folder also gets a manifest.csv (file, label, source_image, source_sha256, box_xyxy), which the training
reads to keep the crops of one photo in one group. Exit status: 0 done, 2 bad input.
"""

import argparse
import csv
import hashlib
import os
import sys
from pathlib import Path

import cv2
import numpy as np

LIST = Path(__file__).resolve().with_name("extra_crops.csv")
MARGIN = 0.15  # of the box's width (left, right) and height (top, bottom)
MAX_SIDE = 256  # longer side of a crop, pixels (never enlarged)
JPEG_QUALITY = 90
MANIFEST_FIELDS = ("file", "label", "source_image", "source_sha256", "box_xyxy")


def crop_box(box, width, height, margin=MARGIN):
    """The annotated box (x1, y1, x2, y2) widened by margin of its size, clipped to the photo."""
    x1, y1, x2, y2 = box
    dx, dy = int(margin * (x2 - x1)), int(margin * (y2 - y1))
    return max(0, x1 - dx), max(0, y1 - dy), min(width, x2 + dx), min(height, y2 + dy)


def cut(photo, box, max_side=MAX_SIDE):
    """The crop of a BGR photo for an annotated box, shrunk to a longer side of at most max_side."""
    x1, y1, x2, y2 = crop_box(box, photo.shape[1], photo.shape[0])
    crop = photo[y1:y2, x1:x2]
    scale = max_side / max(crop.shape[:2])
    if scale < 1:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    return crop


def write_atomic(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="clone of face-mask-dataset-ilc-2021")
    parser.add_argument("--output", type=Path, default=Path("extra_training"), help="folder to write")
    parser.add_argument("--list", type=Path, default=LIST, help="the crop list")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        with open(args.list, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as error:
        print(f"error: cannot read {args.list}: {error.strerror}", file=sys.stderr)
        return 2
    if not (args.source / "JPEGImages").is_dir():
        print(f"error: {args.source}/JPEGImages not found; clone the source repository first (see --help)",
              file=sys.stderr)
        return 2
    manifests, failed, source, photo = {}, 0, None, None
    for row in rows:
        if args.source / row["source_image"] != source:  # rows of one photo are read once in a row
            source = args.source / row["source_image"]
            data = source.read_bytes() if source.is_file() else b""
            photo = None
            if hashlib.sha256(data).hexdigest() == row["source_sha256"]:
                photo = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            else:
                print(f"warning: {source}: missing or not the expected photo (SHA-256); skipped", file=sys.stderr)
        if photo is None:
            failed += 1
            continue
        box = tuple(int(v) for v in row["box_xyxy"].split())
        ok, encoded = cv2.imencode(".jpg", cut(photo, box), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        write_atomic(args.output / row["folder"] / row["file"], encoded.tobytes())
        manifests.setdefault(row["folder"], []).append({k: row[k] for k in MANIFEST_FIELDS})
    for folder, entries in manifests.items():
        lines = [",".join(MANIFEST_FIELDS)] + [",".join(entry[k] for k in MANIFEST_FIELDS) for entry in entries]
        write_atomic(args.output / folder / "manifest.csv", ("\n".join(lines) + "\n").encode())
    print(f"wrote {len(rows) - failed} crops into {args.output}" + (f"; {failed} skipped" if failed else ""))
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
