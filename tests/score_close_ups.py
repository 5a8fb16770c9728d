#!/usr/bin/env python3
"""Measure detect_mask_image's last chance for close-ups (--close-up-confidence) against false faces.

A benchmark run by hand (not a pytest test). When even the border look finds no face at the detector's
confidence, the image script takes that look's one most confident face spanning CLOSE_UP_MIN_FACE of the
photo's shorter side from --close-up-confidence on. This script tries a grid of (that confidence, that
span) on two sets of photos where the detector otherwise finds nothing:

- the photos of a labelled folder (with_mask/, without_mask/) with no face found: how many get a face,
  and how many of those are labelled right;
- face-free photos: scikit-image's sample images without a face, noise and flat colours, and random
  crops of the scene photos (seeded) that keep 10 px away from every annotated face: how many get a
  "face". (The annotations miss a few faces, so a handful of crops hold a real one; the default detector
  already finds a face in those, and they are left out of the count.)

Usage:
    python tests/score_close_ups.py                       # ../shared/validation/{face_mask_12k,scenes}
    python tests/score_close_ups.py LABELLED_DIR --scenes SCENES_DIR [--limit N]

Exit status: 0 scored, 2 bad arguments or inputs, 1 any other failure.
"""
import argparse
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import score_scenes  # noqa: E402  (tests/ is not a package)
from score_labelled import CLASSES, largest_face, list_images  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LABELLED = REPO.parent / "shared" / "validation" / "face_mask_12k"
# (last-chance confidence, minimum span as a fraction of the shorter side); 1.0 = off
GRID = ((1.0, 0.3), (0.4, 0.3), (0.3, 0.3), (0.3, 0.5), (0.25, 0.5), (0.2, 0.3), (0.2, 0.0))
SAMPLE_IMAGES = ("brick", "coffee", "coins", "horse", "hubble_deep_field", "immunohistochemistry", "moon",
                 "page", "rocket", "text", "grass", "gravel", "checkerboard", "clock", "colorwheel", "logo",
                 "retina", "cell", "chelsea", "cat")  # scikit-image samples without a human face
CROPS_PER_SCENE = 2
CROP_MARGIN = 10  # pixels kept between a crop and every annotated face
CLASSIFIER_SIDE = 224  # crops are resized to the size of the Face Mask 12K photos


def to_uint8(image, np):
    """scikit-image samples come as bool, float or uint8."""
    if image.dtype == bool or image.dtype.kind == "f":
        return (image * 255).astype(np.uint8)
    return image


def face_free_photos(scenes_dir, seed, cv2, np):
    """BGR photos with no face in them (see the module docstring)."""
    import skimage.data

    photos = []
    for name in SAMPLE_IMAGES:
        image = to_uint8(getattr(skimage.data, name)(), np)
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)
        photos += [image, cv2.resize(image, (CLASSIFIER_SIDE, CLASSIFIER_SIDE), interpolation=cv2.INTER_AREA)]
    rng = np.random.default_rng(seed)
    for _ in range(10):
        photos.append(rng.integers(0, 256, (CLASSIFIER_SIDE, CLASSIFIER_SIDE, 3), np.uint8))
        photos.append(np.full((CLASSIFIER_SIDE, CLASSIFIER_SIDE, 3), rng.integers(0, 256, 3), np.uint8))
    pick = random.Random(seed)
    for path, gt in score_scenes.list_scenes(scenes_dir):
        image = cv2.imread(str(path))
        if image is None:
            continue
        height, width = image.shape[:2]
        boxes = [box for _, box in gt]
        kept = 0
        for _ in range(200):
            side = pick.randint(48, max(49, min(height, width) // 2))
            x, y = pick.randint(0, max(0, width - side)), pick.randint(0, max(0, height - side))
            if all(x + side < x1 - CROP_MARGIN or x > x2 + CROP_MARGIN or y + side < y1 - CROP_MARGIN
                   or y > y2 + CROP_MARGIN for x1, y1, x2, y2 in boxes):
                photos.append(cv2.resize(image[y:y + side, x:x + side], (CLASSIFIER_SIDE, CLASSIFIER_SIDE),
                                         interpolation=cv2.INTER_CUBIC))
                kept += 1
                if kept == CROPS_PER_SCENE:
                    break
    return photos


def labelled_photos(folder, limit, dm):
    """[(path, true label)] of with_mask/ and without_mask/, sorted, at most limit of each (0 = all)."""
    photos = []
    for sub, label in CLASSES:
        if not (folder / sub).is_dir():
            raise dm.UsageError(f"{folder / sub}: no such folder (expected with_mask/ and without_mask/)")
        photos += [(path, label) for path in list_images(folder / sub, dm.IMAGE_EXTENSIONS, limit)]
    return photos


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Score the last-chance close-up against false faces.")
    parser.add_argument("labelled", nargs="?", type=Path, default=DEFAULT_LABELLED,
                        help="folder with with_mask/ and without_mask/ (default: %(default)s)")
    parser.add_argument("--scenes", type=Path, default=score_scenes.DEFAULT_SCENES,
                        help="annotated scenes to cut face-free crops from (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=0, metavar="N",
                        help="use only the first N photos of each class (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scene crops (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    dm = score_scenes.detect_module()
    import cv2
    import numpy as np

    def body():
        net = score_scenes.CachingNet(dm.load_face_detector())
        classifier = dm.load_classifier(dm.find_model(None))
        options = dict(confidence=dm.DEFAULT_CONFIDENCE, sizes=list(dm.DEFAULT_DETECT_SIZES["res10"]), nms=0.3,
                       border=dm.DEFAULT_BORDER, mirror=dm.DEFAULT_MIRROR)

        def faces_of(key, image, close_up_confidence):
            net.image = key
            return dm.detect_and_classify(image, net, classifier, close_up_confidence=close_up_confidence,
                                          **options)

        labelled = [(dm.to_bgr8(dm.read_image(path)), label)
                    for path, label in labelled_photos(args.labelled, args.limit, dm)]
        no_face = [(i, image, label) for i, (image, label) in enumerate(labelled)
                   if not faces_of(("labelled", i), image, 1.0)]
        free = face_free_photos(args.scenes, args.seed, cv2, np)
        still_free = [(i, image) for i, image in enumerate(free) if not faces_of(("free", i), image, 1.0)]
        print(f"{len(labelled)} labelled photos, no face found in {len(no_face)}; {len(free)} face-free photos, "
              f"a face found in {len(free) - len(still_free)} without the last chance")
        print(f"{'confidence':>10} {'span':>5}   labelled no-face photos: found (right)   face-free: new faces")
        default_span = dm.CLOSE_UP_MIN_FACE
        try:
            for confidence, span in GRID:
                dm.CLOSE_UP_MIN_FACE = span
                found = right = 0
                for i, image, label in no_face:
                    faces = faces_of(("labelled", i), image, confidence)
                    found += bool(faces)
                    right += bool(faces) and largest_face(faces)["label"] == label
                new = sum(bool(faces_of(("free", i), image, confidence)) for i, image in still_free)
                name = "off" if confidence >= 1.0 else f"{confidence:.2f}"
                print(f"{name:>10} {span:>5.2f}   {found:>4} of {len(no_face)} ({right}){'':>22}"
                      f"{new:>4} of {len(still_free)}", flush=True)
        finally:
            dm.CLOSE_UP_MIN_FACE = default_span
        return 0

    return dm.run_guarded(body, debug=False)


if __name__ == "__main__":
    sys.exit(main())
