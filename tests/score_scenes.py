#!/usr/bin/env python3
"""Score face finding and mask labelling on annotated scenes (PASCAL VOC boxes).

A benchmark run by hand (not a pytest test). It imports detect_mask_image.py,
loads the face detector and the classifier once, and runs detect_and_classify on
every scene image (images/*.png with annotations/<same name>.xml; object names
with_mask, without_mask, mask_weared_incorrect).

A ground-truth face is found when a prediction overlaps it at IoU >= 0.5 (greedy
matching, best IoU first, one prediction per face). Face size = sqrt(w * h) of the
ground-truth box. Reported: recall per class and per size bucket, recall of faces
>= 20 px (target >= 0.85) and of masked / unmasked faces >= 40 px, label accuracy on
found with_mask / without_mask faces (target >= 0.95; incorrectly worn masks are
reported apart: how they are labelled), false positives (predictions matching no
face; some may be faces the annotators missed) and time per image.

--sweep tries a grid of detector settings (detect sizes x confidence x NMS; the
other options, such as --border or --no-mirror, hold for every setting) and
prints one line per setting, best score first, score = recall(>=20 px) x label
accuracy - 0.02 x false positives per image. Net outputs and classifier results
are cached (keyed by image and input size / by the exact face crop), so each
setting costs little; its ms/image is estimated by adding back the cached work's
measured time, and the top --verify settings are rerun without the cache to check
the numbers and time them for real.

Usage:
    python tests/score_scenes.py                                  # ../shared/validation/scenes, defaults
    python tests/score_scenes.py --limit 20 --detect-size 300 600 -c 0.4 --nms 0.3
    python tests/score_scenes.py -m mask_detector.keras --output scenes.json
    python tests/score_scenes.py --sweep [--limit 40] [--verify 3] [--output sweep.json]

Exit status: 0 scored, 2 bad arguments or inputs, 1 any other failure.
"""
import argparse
import hashlib
import itertools
import json
import math
import os
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCENES = REPO.parent / "shared" / "validation" / "scenes"
GT_CLASSES = ("with_mask", "without_mask", "mask_weared_incorrect")
LABEL_OF = {"with_mask": "Mask", "without_mask": "No Mask"}  # classes whose label is scored
MATCH_IOU = 0.5
NO_OVERLAP_IOU = 0.1  # a false positive overlapping no face even this much is "spurious"
SIZE_BUCKETS = (("<20", 0, 20), ("20-40", 20, 40), ("40-80", 40, 80), (">=80", 80, math.inf))
TARGET_RECALL_20 = 0.85
TARGET_LABEL_ACCURACY = 0.95
FP_WEIGHT = 0.02  # score penalty per false positive per image
# --sweep grid. 0 = native resolution; sizes above an image's longer side upscale it
# (the scenes are mostly 400 px wide, so 800 is about 2x and 1200 about 3x).
SWEEP_SIZES = ((300,), (600,), (0,), (800,), (1200,), (300, 600), (300, 900), (400, 800),
               (600, 1200), (300, 600, 900), (300, 600, 1200))
SWEEP_CONFIDENCES = (0.3, 0.4, 0.5, 0.6)
SWEEP_NMS = (0.3, 0.4)
SWEEP_VERIFY = 3


def detect_module():
    """detect_mask_image imported as a module from the repository root."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import detect_mask_image
    return detect_mask_image


# ---- ground truth and matching ---------------------------------------------

def read_annotation(path):
    """[(class name, (x1, y1, x2, y2))] of a PASCAL VOC XML file."""
    objects = []
    for obj in ET.parse(path).getroot().iter("object"):
        box = obj.find("bndbox")
        coords = tuple(float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((obj.find("name").text.strip(), coords))
    return objects


def natural_key(path):
    """Sort key putting scene2 before scene10."""
    stem = Path(path).stem
    digits = "".join(ch for ch in stem if ch.isdigit())
    return (stem.rstrip("0123456789"), int(digits) if digits else -1, stem)


def list_scenes(folder, limit=0):
    """[(image path, ground truth)] for images/*.png that have annotations/<stem>.xml."""
    folder = Path(folder)
    images = sorted((folder / "images").glob("*.png"), key=natural_key)
    scenes = [(image, read_annotation(folder / "annotations" / f"{image.stem}.xml"))
              for image in images if (folder / "annotations" / f"{image.stem}.xml").is_file()]
    return scenes[:limit] if limit > 0 else scenes


def iou(a, b):
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(gt_boxes, pred_boxes, threshold=MATCH_IOU):
    """Greedy one-to-one matching, best IoU first: {gt index: prediction index}."""
    pairs = sorted(((iou(g, p), gi, pi) for gi, g in enumerate(gt_boxes)
                    for pi, p in enumerate(pred_boxes)), reverse=True)
    matched, used = {}, set()
    for value, gi, pi in pairs:
        if value < threshold:
            break
        if gi not in matched and pi not in used:
            matched[gi] = pi
            used.add(pi)
    return matched


def face_size(box):
    """sqrt(width * height) of a box, in pixels."""
    return math.sqrt(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def size_bucket(size):
    return next(name for name, low, high in SIZE_BUCKETS if low <= size < high)


def evaluate_image(gt, faces):
    """Per-face records and false-positive counts of one image.

    gt: [(class, box)]; faces: detect_and_classify's result.
    Returns ([{"class", "size", "found", "label"}], false positives, spurious false positives).
    """
    matched = match([box for _, box in gt], [f["box"] for f in faces])
    records = [{"class": cls, "size": face_size(box), "found": i in matched,
                "label": faces[matched[i]]["label"] if i in matched else None}
               for i, (cls, box) in enumerate(gt)]
    used = set(matched.values())
    unmatched = [f for i, f in enumerate(faces) if i not in used]
    spurious = sum(1 for f in unmatched if all(iou(f["box"], box) < NO_OVERLAP_IOU for _, box in gt))
    return records, len(unmatched), spurious


def ratio(records, condition=lambda r: True):
    """(found, total, recall) of the records meeting condition."""
    chosen = [r for r in records if condition(r)]
    found = sum(r["found"] for r in chosen)
    return found, len(chosen), (found / len(chosen) if chosen else float("nan"))


def summarize(records, false_positives, spurious, images, seconds):
    """Metrics of a run: recall by class / size, label accuracy, false positives, timing."""
    labelled = [r for r in records if r["found"] and r["class"] in LABEL_OF]
    correct = sum(r["label"] == LABEL_OF[r["class"]] for r in labelled)
    per_class_accuracy = {}
    for cls, label in LABEL_OF.items():
        mine = [r for r in labelled if r["class"] == cls]
        ok = sum(r["label"] == label for r in mine)
        per_class_accuracy[cls] = {"correct": ok, "found": len(mine),
                                   "accuracy": ok / len(mine) if mine else float("nan")}
    incorrect = [r for r in records if r["found"] and r["class"] == "mask_weared_incorrect"]
    return {
        "images": images,
        "faces": len(records),
        "recall": ratio(records)[2],
        "recall_by_class": {cls: dict(zip(("found", "total", "recall"),
                                          ratio(records, lambda r, c=cls: r["class"] == c)))
                            for cls in GT_CLASSES},
        "recall_by_size": {name: dict(zip(("found", "total", "recall"),
                                          ratio(records, lambda r, lo=lo, hi=hi: lo <= r["size"] < hi)))
                           for name, lo, hi in SIZE_BUCKETS},
        "recall_ge20": ratio(records, lambda r: r["size"] >= 20)[2],
        "recall_ge40_masked": ratio(records, lambda r: r["size"] >= 40 and r["class"] == "with_mask")[2],
        "recall_ge40_unmasked": ratio(records, lambda r: r["size"] >= 40 and r["class"] == "without_mask")[2],
        "label_accuracy": correct / len(labelled) if labelled else float("nan"),
        "label_correct": correct,
        "label_scored": len(labelled),
        "label_accuracy_by_class": per_class_accuracy,
        "label_accuracy_by_size": {
            name: {"correct": sum(r["label"] == LABEL_OF[r["class"]] for r in mine), "found": len(mine),
                   "accuracy": (sum(r["label"] == LABEL_OF[r["class"]] for r in mine) / len(mine)
                                if mine else float("nan"))}
            for name, lo, hi in SIZE_BUCKETS for mine in [[r for r in labelled if lo <= r["size"] < hi]]},
        "incorrectly_worn_labelled": {label: sum(r["label"] == label for r in incorrect)
                                      for label in LABEL_OF.values()},
        "false_positives": false_positives,
        "false_positives_per_image": false_positives / images if images else float("nan"),
        "spurious_false_positives": spurious,
        "ms_per_image": 1000.0 * seconds / images if images else float("nan"),
    }


def score(summary):
    """Sweep ranking: recall(>=20 px) x label accuracy - FP_WEIGHT x false positives per image."""
    values = (summary["recall_ge20"], summary["label_accuracy"], summary["false_positives_per_image"])
    if any(math.isnan(v) for v in values):
        return -math.inf
    return values[0] * values[1] - FP_WEIGHT * values[2]


def meets_targets(summary):
    return summary["recall_ge20"] >= TARGET_RECALL_20 and summary["label_accuracy"] >= TARGET_LABEL_ACCURACY


def format_summary(s):
    """Multi-line text report of summarize()'s result."""
    lines = [f"images: {s['images']}   faces: {s['faces']}   recall (IoU >= {MATCH_IOU}): {s['recall']:.4f}",
             f"recall of faces >= 20 px: {s['recall_ge20']:.4f} (target >= {TARGET_RECALL_20})   "
             f">= 40 px masked: {s['recall_ge40_masked']:.4f}   unmasked: {s['recall_ge40_unmasked']:.4f}",
             "recall by class:   " + "   ".join(f"{c}: {v['recall']:.4f} ({v['found']}/{v['total']})"
                                               for c, v in s["recall_by_class"].items()),
             "recall by size:    " + "   ".join(f"{b}: {v['recall']:.4f} ({v['found']}/{v['total']})"
                                               for b, v in s["recall_by_size"].items()),
             f"label accuracy on found with/without-mask faces: {s['label_accuracy']:.4f} "
             f"({s['label_correct']}/{s['label_scored']}; target >= {TARGET_LABEL_ACCURACY})   "
             + "   ".join(f"{c}: {v['accuracy']:.4f} ({v['correct']}/{v['found']})"
                          for c, v in s["label_accuracy_by_class"].items()),
             "label accuracy by size: " + "   ".join(f"{b}: {v['accuracy']:.4f} ({v['correct']}/{v['found']})"
                                                     for b, v in s["label_accuracy_by_size"].items()),
             "found mask_weared_incorrect faces labelled: "
             + ", ".join(f"{label} {n}" for label, n in s["incorrectly_worn_labelled"].items()),
             f"false positives: {s['false_positives']} ({s['false_positives_per_image']:.3f} per image; "
             f"{s['spurious_false_positives']} overlap no face at IoU >= {NO_OVERLAP_IOU})",
             f"time: {s['ms_per_image']:.1f} ms per image (detect_and_classify only)"]
    return "\n".join(lines)


def setting_name(sizes, confidence, nms):
    return f"sizes={'+'.join(map(str, sizes)):<12} conf={confidence:.2f} nms={nms:.2f}"


SWEEP_HEADER = (f"{'setting':<40}{'R>=20':>7}{'R40 m':>7}{'R40 nm':>7}{'label':>7}"
                f"{'FP/img':>8}{'ms/img':>8}{'score':>8}  targets")


def sweep_line(name, s):
    return (f"{name:<40}{s['recall_ge20']:>7.3f}{s['recall_ge40_masked']:>7.3f}"
            f"{s['recall_ge40_unmasked']:>7.3f}{s['label_accuracy']:>7.3f}"
            f"{s['false_positives_per_image']:>8.3f}{s['ms_per_image']:>8.1f}{score(s):>8.4f}  "
            f"{'met' if meets_targets(s) else '-'}")


def json_safe(value):
    """value with NaN / inf floats replaced by None (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# ---- running the detector ----------------------------------------------------

class CachingNet:
    """Wraps a cv2.dnn Net: forward() results cached by (current image, input blob's shape and SHA-1).

    A cached output is exactly what the net would return for that blob. (The shape alone is not
    enough: the border pass feeds a framed copy of a square photo at the same shape.) Set .image
    before each image.
    `saved` accumulates the measured time of the forwards a cache hit skipped.
    """

    def __init__(self, net):
        self.net, self.image, self.cache, self.saved = net, None, {}, 0.0
        self.key = None

    def setInput(self, blob, *args, **kwargs):  # noqa: N802 - cv2.dnn.Net's name
        self.key = (self.image, tuple(blob.shape), hashlib.sha1(blob.tobytes()).hexdigest())
        if self.key not in self.cache:
            self.net.setInput(blob, *args, **kwargs)

    def forward(self, *args, **kwargs):
        if self.key in self.cache:
            output, seconds = self.cache[self.key]
            self.saved += seconds
            return output
        start = time.perf_counter()
        output = self.net.forward(*args, **kwargs)
        self.cache[self.key] = (output, time.perf_counter() - start)
        return output


class CachingClassifier:
    """Wraps a classifier: predict() rows cached by a hash of the exact face crop.

    `saved` accumulates the measured time of the rows a cache hit skipped, less
    the time spent hashing (so that wall time + saved estimates an uncached run).
    """

    def __init__(self, classifier):
        self.classifier, self.cache, self.saved = classifier, {}, 0.0

    def predict(self, batch):
        import numpy as np
        start = time.perf_counter()
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in batch]
        self.saved -= time.perf_counter() - start  # the cache's own cost is not the classifier's
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            start = time.perf_counter()
            probs = self.classifier.predict(batch[missing])
            each = (time.perf_counter() - start) / len(missing)
            for i, row in zip(missing, probs):
                self.cache[keys[i]] = (np.array(row, np.float32), each)
        computed = set(missing)
        self.saved += sum(self.cache[k][1] for i, k in enumerate(keys) if i not in computed)
        return np.stack([self.cache[k][0] for k in keys]) if keys else np.zeros((0, 2), np.float32)


def run_setting(dm, frames, gts, net, classifier, sizes, confidence, nms, border, mask_threshold,
                close_up_confidence=None, mirror=None, fallback=None, detector="res10"):
    """detect_and_classify every frame with one setting; summarize() plus per-image predictions.

    close_up_confidence and mirror: None = the image script's defaults."""
    if close_up_confidence is None:
        close_up_confidence = dm.DEFAULT_CLOSE_UP_CONFIDENCE
    if mirror is None:
        mirror = dm.DEFAULT_MIRROR
    records, fps, spurious, seconds, predictions = [], 0, 0, 0.0, []
    for index, (frame, gt) in enumerate(zip(frames, gts)):
        if isinstance(net, CachingNet):
            net.image = index
        start = time.perf_counter()
        faces = dm.detect_and_classify(frame, net, classifier, confidence, sizes, nms, border, mask_threshold,
                                       close_up_confidence, mirror, fallback, detector)
        seconds += time.perf_counter() - start
        image_records, image_fps, image_spurious = evaluate_image(gt, faces)
        records += image_records
        fps += image_fps
        spurious += image_spurious
        predictions.append(faces)
    return summarize(records, fps, spurious, len(frames), seconds), predictions


def sweep_grid(sizes=SWEEP_SIZES, confidences=SWEEP_CONFIDENCES, nms_values=SWEEP_NMS):
    return [(tuple(s), c, n) for s, c, n in itertools.product(sizes, confidences, nms_values)]


def run_sweep(dm, frames, gts, net, classifier, verify, options):
    """Score every grid setting with cached net/classifier results; rerun the top `verify` uncached.

    options: run_setting's border, mask_threshold, close_up_confidence and mirror, the same for every setting."""
    cached_net, cached_classifier = CachingNet(net), CachingClassifier(classifier)
    # The lowest confidence first: its forwards fill the cache for the rest.
    grid = sorted(sweep_grid(), key=lambda s: (s[1], s[0], s[2]))
    results = []
    for number, (sizes, confidence, nms) in enumerate(grid, 1):
        saved_before = cached_net.saved + cached_classifier.saved
        summary, _ = run_setting(dm, frames, gts, cached_net, cached_classifier, sizes, confidence, nms, **options)
        saved = cached_net.saved + cached_classifier.saved - saved_before
        summary["ms_per_image"] += 1000.0 * saved / len(frames)  # add back the skipped work
        results.append({"sizes": list(sizes), "confidence": confidence, "nms": nms,
                        "score": score(summary), "meets_targets": meets_targets(summary),
                        "summary": summary})
        print(f"  [{number}/{len(grid)}] {setting_name(sizes, confidence, nms)}", file=sys.stderr, flush=True)
    results.sort(key=lambda r: r["score"], reverse=True)
    for result in results[:verify]:
        real, _ = run_setting(dm, frames, gts, net, classifier, result["sizes"], result["confidence"],
                              result["nms"], **options)
        same = all(json_safe(real[k]) == json_safe(result["summary"][k]) for k in  # NaN-safe
                   ("recall_ge20", "label_accuracy", "false_positives", "recall_by_size"))
        result["verified"] = {"same_metrics": same, "ms_per_image": real["ms_per_image"]}
    return results


def format_sweep(results, verify):
    lines = [SWEEP_HEADER]
    lines += [sweep_line(setting_name(r["sizes"], r["confidence"], r["nms"]), r["summary"]) for r in results]
    lines.append("")
    lines.append(f"ms/img above: estimated (cached work's measured time added back). "
                 f"Top {verify} rerun without cache:")
    for r in results[:verify]:
        v = r.get("verified")
        if v:
            lines.append(f"  {setting_name(r['sizes'], r['confidence'], r['nms'])}: {v['ms_per_image']:.1f} "
                         f"ms/img, metrics {'identical' if v['same_metrics'] else 'DIFFER'} to the cached run")
    met = [r for r in results if r["meets_targets"]]
    if met:
        fastest = min(met, key=lambda r: r["summary"]["ms_per_image"])
        best = setting_name(met[0]["sizes"], met[0]["confidence"], met[0]["nms"])
        quick = setting_name(fastest["sizes"], fastest["confidence"], fastest["nms"])
        lines.append(f"best setting meeting both targets: {best}; fastest meeting them: {quick} "
                     f"({fastest['summary']['ms_per_image']:.1f} ms/img)")
    else:
        lines.append(f"no setting meets both targets (recall >= 20 px >= {TARGET_RECALL_20}, "
                     f"label accuracy >= {TARGET_LABEL_ACCURACY})")
    return "\n".join(lines)


# ---- command line ---------------------------------------------------------------

def parse_args(argv=None):
    dm = detect_module()
    parser = argparse.ArgumentParser(
        description="Score detect_mask_image's face finding and mask labels on annotated scenes.")
    parser.add_argument("scenes", nargs="?", type=Path, default=DEFAULT_SCENES,
                        help="folder with images/*.png and annotations/*.xml (default: %(default)s)")
    parser.add_argument("--limit", type=dm.count(0), default=0, metavar="N",
                        help="use only the first N images (default: all)")
    parser.add_argument("--sweep", action="store_true", help="try the grid of detector settings")
    parser.add_argument("--verify", type=dm.count(0), default=SWEEP_VERIFY, metavar="K",
                        help="with --sweep: rerun the best K settings without the cache (default: %(default)s)")
    parser.add_argument("-o", "--output", type=Path, metavar="JSON", help="also write the results here")
    # The detect script's own options and defaults: -f, -m, -c, --detect-size, --nms, --threads
    # (--no-display is accepted and has no effect here).
    dm.add_model_arguments(parser)
    return dm.with_detector_defaults(parser.parse_args(argv), dm.DEFAULT_DETECT_SIZES)


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    dm = detect_module()
    import cv2

    def body():
        scenes = list_scenes(args.scenes, args.limit)
        if not scenes:
            raise dm.UsageError(f"{args.scenes}: no images/*.png with annotations/<name>.xml")
        cv2.setNumThreads(args.threads)
        net = dm.load_face_detector(args.face, args.face_detector)
        fallback = dm.load_face_detector(args.face) if args.face_detector == "centerface" else None
        model = dm.find_model(args.model)
        classifier = dm.load_classifier(model, args.threads)
        frames = [dm.read_image(path) for path, _ in scenes]
        gts = [gt for _, gt in scenes]
        dm.detect_and_classify(frames[0], net, classifier, 0.5, list(args.detect_size), args.nms)  # warm-up
        print(f"model: {model}   scenes: {len(frames)} from {args.scenes}", file=sys.stderr)
        options = dict(border=args.border, mask_threshold=args.mask_threshold,
                       close_up_confidence=args.close_up_confidence, mirror=args.mirror, fallback=fallback,
                       detector=args.face_detector)
        if args.sweep:
            results = run_sweep(dm, frames, gts, net, classifier, args.verify, options)
            print(format_sweep(results, args.verify))
            payload = {"model": str(model), "scenes": str(args.scenes), "face_detector": args.face_detector,
                       "sweep": results}
        else:
            summary, predictions = run_setting(dm, frames, gts, net, classifier, list(args.detect_size),
                                               args.confidence, args.nms, **options)
            print(setting_name(args.detect_size, args.confidence, args.nms))
            print(format_summary(summary))
            payload = {"model": str(model), "scenes": str(args.scenes), "sizes": list(args.detect_size),
                       "confidence": args.confidence, "nms": args.nms, "face_detector": args.face_detector,
                       **{k: v for k, v in options.items() if k != "fallback"}, "summary": summary,
                       "images": [{"image": str(path), "faces": [dm.face_json(f) for f in faces]}
                                  for (path, _), faces in zip(scenes, predictions)]}
        if args.output:
            args.output.write_text(json.dumps(json_safe(payload), indent=1) + "\n")
            print(f"wrote {args.output}", file=sys.stderr)
        return 0

    return dm.run_guarded(body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
