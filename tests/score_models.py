#!/usr/bin/env python3
"""Score classifiers on the validation sets fast: the face detector's crops are cached once.

A benchmark run by hand (not a pytest test). Which faces the image script finds does not depend on
the classifier, so this runs detect_mask_image.py's face detector (its defaults) once over Face Mask
12K and the scenes, keeps every face crop exactly as the classifier receives it, and then scores any
number of models and Mask thresholds on those crops in seconds. Its numbers are the ones
score_labelled.py (largest face per photo, no face = wrong) and score_scenes.py (IoU >= 0.5 matching)
report for the same model and settings.

Usage:
    python tests/score_models.py --build                       # detector pass, about 20 min on 2 cores
    python tests/score_models.py mask_detector.tflite other.keras --threshold 0.5 0.15
    python tests/score_models.py mask_detector.tflite --no-last-chance   # without the last-chance face

Exit status: 0 scored, 2 bad arguments or inputs.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import score_labelled  # noqa: E402  (tests/ helpers)
import score_scenes  # noqa: E402

VALIDATION = REPO.parent / "shared" / "validation"
DEFAULT_CACHE = REPO / ".cache" / "validation_crops.npz"
DEFAULT_NMS = 0.3  # detect_mask_image.py --nms default
LAST_CHANCE_OFF = 1.0  # --close-up-confidence that turns the last-chance face off


def detect_module():
    import detect_mask_image
    return detect_mask_image


def faces_of(dm, net, frame, border, mirror):
    """[(box, score, from_last_chance)] with the image script's default detector settings but border and
    mirror; faces found only by the last-chance rule are marked."""
    settings = (dm.DEFAULT_CONFIDENCE, list(dm.DEFAULT_DETECT_SIZES["res10"]), DEFAULT_NMS, border)
    faces = dm.detect_faces(frame, net, *settings, LAST_CHANCE_OFF, mirror)
    if faces or border <= 0:
        return [(box, score, False) for box, score in faces]
    faces = dm.detect_faces(frame, net, *settings, dm.DEFAULT_CLOSE_UP_CONFIDENCE, mirror)
    return [(box, score, True) for box, score in faces]


def crops_of(dm, frame, boxes, resize=None):
    """RGB uint8 224x224 crops, exactly what preprocess_faces scales to [-1, 1] (resize: dm.resize_face)."""
    import cv2

    height, width = frame.shape[:2]
    out = []
    for box in boxes:
        x1, y1, x2, y2 = dm.clip_box(box, width, height)
        out.append((resize or dm.resize_face)(cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_BGR2RGB)))
    return out


def build(cache, validation, threads, border=None, mirror=None, limit=0):
    import cv2

    dm = detect_module()
    border = dm.DEFAULT_BORDER if border is None else border
    mirror = dm.DEFAULT_MIRROR if mirror is None else mirror
    cv2.setNumThreads(threads)
    net = dm.load_face_detector()
    photos = []  # (set, path, truth) truth: label (12K) or None (scenes)
    for folder, label in score_labelled.CLASSES:
        for path in score_labelled.list_images(validation / "face_mask_12k" / folder, dm.IMAGE_EXTENSIONS, limit):
            photos.append(("12k", path, label))
    for path, _ in score_scenes.list_scenes(validation / "scenes"):
        photos.append(("scenes", path, None))
    crops, rows, meta = [], [], []
    started = time.perf_counter()
    for index, (name, path, truth) in enumerate(photos):
        frame = dm.read_image(path)
        faces = faces_of(dm, net, frame, border, mirror)
        crops += crops_of(dm, frame, [box for box, _, _ in faces])
        rows += [(index, *box, score, last) for box, score, last in faces]
        meta.append({"set": name, "path": str(path), "truth": truth, "shape": list(frame.shape[:2]),
                     "border": border, "mirror": mirror})
        if (index + 1) % 200 == 0:
            print(f"  {index + 1} of {len(photos)} photos, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    temp = cache.with_name(cache.name + ".tmp.npz")
    np.savez(temp, crops=np.array(crops, np.uint8).reshape(-1, 224, 224, 3),
             faces=np.array(rows, np.float64).reshape(-1, 7), meta=np.array(json.dumps(meta)))
    os.replace(temp, cache)
    print(f"wrote {cache}: {len(photos)} photos, {len(crops)} faces in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)


def mask_probabilities(dm, model, crops, threads):
    classifier = dm.load_classifier(dm.find_model(model), threads)
    out = []
    for start in range(0, len(crops), 32):
        batch = crops[start:start + 32].astype(np.float32) / 127.5 - 1.0
        out.append(np.asarray(classifier.predict(batch))[:, 0])
    return np.concatenate(out) if out else np.zeros(0)


def score(dm, meta, faces, mask_p, threshold, last_chance=True):
    """({Face Mask 12K metrics}, {scenes summary}) for one model's Mask probabilities."""
    per_photo = [[] for _ in meta]
    for (index, x1, y1, x2, y2, confidence, last), p in zip(faces, mask_p):
        if last and not last_chance:
            continue
        label, chance = dm.label_face([p, 1 - p], threshold)
        per_photo[int(index)].append({"box": [int(x1), int(y1), int(x2), int(y2)], "confidence": confidence,
                                      "label": label, "probability": chance})
    truth, predicted = [], []
    records, false_positives, spurious, scenes = [], 0, 0, 0
    gt_of = {}
    for info, found in zip(meta, per_photo):
        if info["set"] == "12k":
            truth.append(info["truth"])
            predicted.append(score_labelled.predicted_label(found))
        else:
            path = Path(info["path"])
            if path not in gt_of:
                gt_of[path] = score_scenes.read_annotation(path.parent.parent / "annotations" / f"{path.stem}.xml")
            image_records, fps, spur = score_scenes.evaluate_image(gt_of[path], found)
            records += image_records
            false_positives += fps
            spurious += spur
            scenes += 1
    labelled = score_labelled.metrics(score_labelled.confusion(truth, predicted))
    return labelled, score_scenes.summarize(records, false_positives, spurious, scenes, 0.0)


def roc_auc_12k(meta, faces, mask_p):
    """ROC AUC of the Mask probability of the largest face of each 12K photo where one was found."""
    from sklearn.metrics import roc_auc_score

    best = {}
    for (index, x1, y1, x2, y2, _, last), p in zip(faces, mask_p):
        area = (x2 - x1) * (y2 - y1)
        if meta[int(index)]["set"] == "12k" and not last and area > best.get(int(index), (-1, 0))[0]:
            best[int(index)] = (area, p)
    y = [meta[i]["truth"] == "Mask" for i in best]
    return float(roc_auc_score(y, [p for _, p in best.values()]))


def line(model, threshold, labelled, scenes, auc):
    confusion = labelled["confusion"]
    mask, bare = scenes["label_accuracy_by_class"]["with_mask"], scenes["label_accuracy_by_class"]["without_mask"]
    return (f"{model:<34} t={threshold:<5} 12K bal {labelled['balanced_accuracy']:.4f} "
            f"(M {confusion['Mask']['Mask']}/{confusion['Mask']['No Mask']}/{confusion['Mask']['no face']}; "
            f"N {confusion['No Mask']['Mask']}/{confusion['No Mask']['No Mask']}/{confusion['No Mask']['no face']}) "
            f"AUC {auc:.4f} | scenes labels {scenes['label_accuracy']:.4f} "
            f"({scenes['label_correct']}/{scenes['label_scored']}; masked {mask['accuracy']:.3f}, "
            f"bare {bare['accuracy']:.3f}) found>=20 {scenes['recall_ge20']:.3f} FP/img "
            f"{scenes['false_positives_per_image']:.2f}")


def recrop_with_area(dm, faces, meta):
    """The cached face boxes cropped again, resized with INTER_AREA at every size (the rule before cubic
    enlargement of small faces)."""
    import cv2

    def area(face):
        return cv2.resize(face, (224, 224), interpolation=cv2.INTER_AREA)

    out = []
    for index in np.unique(faces[:, 0]).astype(int):
        rows = faces[faces[:, 0] == index]
        out += crops_of(dm, dm.read_image(meta[index]["path"]), [tuple(r[1:5]) for r in rows], area)
    return np.array(out, np.uint8).reshape(-1, 224, 224, 3)


def same_photos(crops, faces, meta, other_meta):
    """The cache restricted to the photos other_meta names (photo indices renumbered)."""
    wanted = {info["path"] for info in other_meta}
    keep = [i for i, info in enumerate(meta) if info["path"] in wanted]
    new_index = {old: new for new, old in enumerate(keep)}
    rows = [r for r, face in enumerate(faces) if int(face[0]) in new_index]
    faces = faces[rows].copy()
    faces[:, 0] = [new_index[int(i)] for i in faces[:, 0]]
    return crops[rows], faces, [meta[i] for i in keep]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=".tflite or .keras classifiers to score")
    parser.add_argument("--build", action="store_true", help="run the face detector and write the cache")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="crop cache (default: %(default)s)")
    parser.add_argument("--validation", type=Path, default=VALIDATION, help="default: %(default)s")
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.5], help="Mask thresholds")
    parser.add_argument("--no-last-chance", action="store_true", help="drop the last-chance close-up faces")
    parser.add_argument("--border", type=float, help="with --build: the detector's --border (default: the image "
                                                      "script's)")
    parser.add_argument("--mirror", type=int, choices=(0, 1), help="with --build: 0 = --no-mirror")
    parser.add_argument("--limit", type=int, default=0, help="with --build: the first N photos of each 12K class")
    parser.add_argument("--area", action="store_true",
                        help="crop the cached boxes again with INTER_AREA at every size instead of cubic enlargement")
    parser.add_argument("--same-photos-as", type=Path, metavar="CACHE",
                        help="score only the photos that this other cache holds (to compare detector settings)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, help="also write every result as JSON here")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    dm = detect_module()
    if args.build:
        build(args.cache, args.validation, args.threads, args.border,
              None if args.mirror is None else bool(args.mirror), args.limit)
    if not args.models:
        return 0
    if not args.cache.is_file():
        print(f"error: {args.cache} not found; run with --build first", file=sys.stderr)
        return 2
    data = np.load(args.cache)
    crops, faces, meta = data["crops"], data["faces"], json.loads(str(data["meta"]))
    if args.same_photos_as:
        crops, faces, meta = same_photos(crops, faces, meta, json.loads(str(np.load(args.same_photos_as)["meta"])))
    if args.area:
        crops = recrop_with_area(dm, faces, meta)
    results = []
    for model in args.models:
        mask_p = mask_probabilities(dm, model, crops, args.threads)
        auc = roc_auc_12k(meta, faces, mask_p)
        for threshold in args.threshold:
            labelled, scenes = score(dm, meta, faces, mask_p, threshold, not args.no_last_chance)
            print(line(model, threshold, labelled, scenes, auc), flush=True)
            results.append({"model": model, "threshold": threshold, "last_chance": not args.no_last_chance,
                            "face_mask_12k": labelled, "scenes": scenes, "auc_12k_found": auc})
    if args.output:
        args.output.write_text(json.dumps(score_scenes.json_safe(results), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
