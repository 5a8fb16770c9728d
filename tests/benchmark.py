#!/usr/bin/env python3
"""Speed benchmark: the 2020 reference loop against this project's video pipeline.

A plain script, not a test module (pytest collects only test_*.py). Usage:

    python tests/benchmark.py                  # the models at the repository root
    python tests/benchmark.py --keras-model /tmp/smoke/mask_detector.keras \\
        --tflite-model /tmp/smoke/mask_detector.tflite --json bench.json
    python tests/benchmark.py --frames 100 --repeat 1          # a quick look

Everything is measured in ONE run, on the same generated video (--frames frames of
--width x --height, 1-3 real faces moving over a background; the faces are res10
crops of matplotlib's grace_hopper.jpg, skimage's astronaut and examples/*.jpg):

(a) the reference loop as the 2020 PyImageSearch detect_mask_video.py writes it:
    read -> imutils.resize(width=400) -> res10 on cv2.resize(frame, (300, 300)) ->
    per face crop/cvtColor/resize/img_to_array/preprocess_input -> Keras
    model.predict(faces, batch_size=32) -> draw;
(b) the project's video pipeline: detect_mask_video.py's own functions called the way
    its frame loop calls them, with its default options and --tflite-model (the model
    it loads by default), plus drawing (as when showing or saving);
(c) the classifier alone on ONE face: Keras predict, Keras direct call, Keras
    predict_on_batch, and LiteRT float32 / float16 / int8 (the variants next to
    --tflite-model, named <stem>_<variant>.tflite as train_mask_detector.py writes
    them), with agreement against Keras on all faces of the video;
(d) detect_mask_image.py as a subprocess, process start to exit, on one photo with
    --no-display --json, with the Keras model and with the LiteRT model.
(e) tracking: the pipeline with its tracker at --detect-every 3 against 1 (FPS ratio, chunks in
    turn), and a simulated live camera faster than the loop (30 FPS, a 4-frame driver queue): the age
    of the frame shown, made -> drawn, for 2020-style reads against the LatestFrame reader thread
    (in turn, ABBA); --tracking-only runs just this part.
(f) face detectors: the pipeline's detect_and_classify per frame with CenterFace at the frame's own size
    (--face-detector centerface, its default) and with res10 at --detect-size 640 and at its default 300,
    chunks in turn (the order rotates); --detectors-only runs just this part.
(g) --memory only: peak RSS (a fresh process each) of detect_mask_image.py on 80 photos of 80 sizes
    (validation scenes resized to 320-1031 px wide) against 10 of them, both face detectors; of the video
    script's frame loop fed 80 frame sizes against 10; a 4032x3024 photo, process start to exit.
(h) --long-run MIN only: detect_mask_video.py --json on a live 640x480 MJPEG stream from a local HTTP
    server for MIN minutes, its RSS each minute (the end against minute 2).
(i) at a door: detect_mask_video.py itself (subprocesses, the summary's mean FPS) on the test video plain,
    with --serve and one MJPEG viewer reading the stream, and with --on-person 'sleep 5'; the three in
    turn (the order rotates), --repeat rounds; FPS = all frames / all seconds of a kind. --door-only runs
    just this part.

Each video loop, and each classifier family, runs in its own subprocess so that the peak
memory (RSS high-water mark, getrusage in the child) of one does not mix with another.
The two video loops run side by side: both processes are started and warmed up on the
first frame (Keras traces its predict function on its first call), then they take turns,
CHUNK_FRAMES frames each (ABBA order), until each has gone --repeat times over the video,
so that both see the same load on a shared machine; FPS = frames / summed per-frame time.
Classifier times are medians (p50) of many calls. Absolute times follow the machine's
load (printed); compare the ratios of one run. Exit status: 0 all targets met, 1 a
target missed or a measurement failed, 2 bad arguments (e.g. a model file missing).
"""
import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_FRAMES = 300
DEFAULT_WIDTH, DEFAULT_HEIGHT = 640, 480
DEFAULT_REPEAT = 3
DEFAULT_KERAS_MODEL = REPO / "mask_detector.keras"
DEFAULT_TFLITE_MODEL = REPO / "mask_detector.tflite"  # detect_mask_video.py's default model
PHOTO = REPO / "examples" / "grace_hopper.jpg"  # the photo for detect_mask_image.py
VIDEO_FPS = 30.0
TFLITE_VARIANTS = ("float32", "float16", "int8")
MAX_SLOTS = 3  # faces at most per frame, each moving in its own third of the frame
TILE_FRACTION = 0.4  # face tile side / shorter frame side
TILE_MARGIN = 0.35  # context added around a detected face box on each side, in box sizes
FACE_SWAP_FRAMES = 60  # each slot shows another face this often
CLASSIFIER_CALLS = {"keras_predict": 20, "keras_call": 15, "keras_on_batch": 30, "tflite": 100}
WARMUP_CALLS = 3
CHILD_TIMEOUT_S = 900
RESULT_MARK = "BENCH_RESULT "
READY_MARK, CHUNK_MARK = "BENCH_READY", "BENCH_CHUNK "
CHUNK_FRAMES = 10  # frames each video loop runs before the other takes its turn
# The 2020 tutorial's constants.
REF_WIDTH, REF_SSD_SIZE, REF_MEAN, REF_CONFIDENCE = 400, 300, (104.0, 177.0, 123.0), 0.5
TARGETS = {"fps_ratio": 4.0, "classifier_ms": 5.0, "image_tflite_s": 2.0, "detect_every_ratio": 2.0,
           "long_run_growth_mib": 50, "memory_growth_mib": 150, "memory_peak_mib": 1536,
           "phone_centerface": (800, 5.0), "phone_res10": (800, 4.0),
           "door_ratio": 0.95}
DETECT_EVERY = 3  # --detect-every timed against 1
CAMERA_FPS = 30.0  # the simulated live camera: faster than the pipeline on this machine
CAMERA_BUFFER = 4  # frames a camera driver queues for a reader that falls behind (V4L2's usual count)
LIVE_FRAMES = 60  # frames processed by each live loop per turn
STAGES = ("decode", "detect", "classify", "draw")
SCENES = REPO.parent / "shared" / "validation" / "scenes"  # --memory's photos: these resized
MEMORY_PHOTOS, MEMORY_FEW = 80, 10  # --memory: photos (and frame sizes) of distinct sizes, and the baseline's
PHONE_SIZE = (4032, 3024)  # a 12 MP phone photo
LONG_RUN_SAMPLE_S = 60  # the long run samples the video script's RSS this often (a "minute")


# ---- pure functions ----------------------------------------------------------------------------

def bounce(position, span):
    """Triangle wave: position folded into [0, span] (a point bouncing between two walls)."""
    if span <= 0:
        return 0
    period = 2 * span
    p = position % period
    return int(p if p <= span else period - p)


def visible_slots(frame_index):
    """Slots holding a face in this frame: slot 0 always, 1 and 2 on and off (1-3 faces)."""
    slots = [0]
    if (frame_index // 40) % 3 != 2:
        slots.append(1)
    if (frame_index // 50) % 2 == 1:
        slots.append(2)
    return slots


def slot_position(slot, frame_index, width, height, tile):
    """Top-left corner of slot's tile in this frame; each slot moves inside its own column."""
    column = width // MAX_SLOTS
    x0 = slot * column
    room_x, room_y = max(0, column - tile), max(0, height - tile)
    x = x0 + bounce(frame_index * (1 + slot) + 7 * slot, room_x)
    y = bounce(frame_index * (3 + slot) + 53 * slot, room_y)
    return x, y


def square_around(box, width, height, margin=TILE_MARGIN):
    """A square (x1, y1, x2, y2) centred on box, margin box sizes wider on each side, clipped."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = min(side, width, height)
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + int(side), top + int(side)


def summarize(seconds):
    """Milliseconds mean / p50 / p90 / min of a list of durations in seconds."""
    if not seconds:
        return {"mean": None, "p50": None, "p90": None, "min": None, "n": 0}
    ms = np.asarray(seconds, np.float64) * 1000.0
    return {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
            "p90": float(np.percentile(ms, 90)), "min": float(ms.min()), "n": int(ms.size)}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def agreement(reference, other):
    """(labels equal, count, max |difference| of probabilities) of two (N, 2) arrays."""
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    if reference.shape != other.shape or reference.size == 0:
        return {"same_labels": 0, "faces": 0, "max_abs_diff": None}
    same = int(np.sum(reference.argmax(axis=1) == other.argmax(axis=1)))
    return {"same_labels": same, "faces": int(len(reference)),
            "max_abs_diff": float(np.max(np.abs(reference - other)))}


def target_status(results):
    """{target: (value, limit, met)} from a results dict (None value: not measured)."""
    fps = results.get("video", {})
    ratio = fps.get("ratio")
    clf = results.get("classifier", {}).get("default_ms")
    image = results.get("image_script", {}).get("tflite", {}).get("median_s")
    every = results.get("tracking", {}).get("ratio")
    detectors = results.get("detectors", {})
    centerface = detectors["centerface"]["fps"] / detectors["res10 640"]["fps"] if detectors else None
    door = results.get("door", {}).get("ratio", {})
    serve, on_person = door.get("serve"), door.get("on_person")
    return {
        "--serve + viewer FPS >= 0.95x": (serve, TARGETS["door_ratio"], serve is not None and
                                          serve >= TARGETS["door_ratio"]),
        "--on-person sleep FPS >= 0.95x": (on_person, TARGETS["door_ratio"], on_person is not None and
                                           on_person >= TARGETS["door_ratio"]),
        "centerface FPS >= res10 640": (centerface, 1.0, centerface is not None and centerface >= 1.0),
        "--detect-every 3 FPS >= 2x 1": (every, TARGETS["detect_every_ratio"],
                                          every is not None and every >= TARGETS["detect_every_ratio"]),
        "video FPS ratio >= 4x": (ratio, TARGETS["fps_ratio"], ratio is not None and ratio >= TARGETS["fps_ratio"]),
        "classifier 1 face <= 5 ms": (clf, TARGETS["classifier_ms"], clf is not None and clf <= TARGETS["classifier_ms"]),
        "image script LiteRT <= 2 s": (image, TARGETS["image_tflite_s"],
                                       image is not None and image <= TARGETS["image_tflite_s"]),
    }


def fmt(value, digits=1, unit=""):
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def stage_cells(stage):
    return f"{fmt(stage['mean'])}/{fmt(stage['p50'])}/{fmt(stage['p90'])}"


def format_table(results):
    """The compact report printed at the end (a list of lines)."""
    meta, video = results["meta"], results["video"]
    pipeline = video["pipeline"]
    lines = [f"benchmark: {meta['frames']} frames {meta['width']}x{meta['height']}, faces/frame "
             f"{meta['faces_per_frame']}, repeat {meta['repeat']}, {meta['cpus']} CPUs, "
             f"load avg {meta['load_before']:.1f} -> {meta['load_after']:.1f}",
             f"models: keras {meta['keras_model']}, tflite {meta['tflite_model']}",
             f"pipeline: detect_mask_video.py defaults (--detect-size {' '.join(map(str, pipeline['options']['detect_size']))}, "
             f"--threads {pipeline['options']['threads']}), TensorFlow imported: "
             f"{'yes' if pipeline['tensorflow_imported'] else 'no'}",
             "",
             f"{'video loop':<24}{'FPS':>6}  {'ms mean/p50/p90:':<17}"
             f"{'decode':<15}{'detect':<18}{'classify':<19}{'draw':<13}{'faces':>5}{'peak RSS':>10}"]
    for key, name in (("reference", "reference 2020 (Keras)"), ("pipeline", "detect_mask_video")):
        run = video[key]
        stages = run["stages"]
        lines.append(f"{name:<24}{fmt(run['fps']):>6}  {'':<17}{stage_cells(stages['decode']):<15}"
                     f"{stage_cells(stages['detect']):<18}{stage_cells(stages['classify']):<19}"
                     f"{stage_cells(stages['draw']):<13}{fmt(run['faces_per_frame'], 2):>5}"
                     f"{fmt(run['peak_rss_mib'], 0, ' MiB'):>10}")
    lines.append(f"{'ratio pipeline/reference':<24}{fmt(video['ratio'], 2, 'x'):>6}  "
                 f"(FPS of each pass: reference {', '.join(fmt(v) for v in video['reference']['fps_runs'])}; "
                 f"pipeline {', '.join(fmt(v) for v in video['pipeline']['fps_runs'])})")
    clf = results["classifier"]
    lines += ["", f"{'classifier alone, ONE face':<34}{'ms/call p50':>12}{'p90':>8}{'min':>8}   agreement with Keras "
                  f"on {meta['face_tiles']} faces (same label, max |dp|)"]
    for row in clf["rows"]:
        agree = row.get("agreement")
        text = "-" if agree is None else (f"{agree['same_labels']}/{agree['faces']}, "
                                          f"{fmt(agree['max_abs_diff'], 4)}")
        lines.append(f"{row['name']:<34}{fmt(row['p50'], 2):>12}{fmt(row['p90'], 2):>8}{fmt(row['min'], 2):>8}   {text}")
    lines.append(f"{'(crop + preprocess of 1 face)':<34}{fmt(clf['preprocess_ms'], 2):>12}")
    lines.append(f"peak RSS: Keras process {fmt(clf['keras_peak_rss_mib'], 0, ' MiB')}, LiteRT process "
                 f"{fmt(clf['tflite_peak_rss_mib'], 0, ' MiB')} (TensorFlow imported: "
                 f"{'yes' if clf['tflite_imports_tensorflow'] else 'no'}); import tensorflow took "
                 f"{fmt(clf['tf_import_s'], 2, ' s')}")
    lines += ["", f"{'detect_mask_image.py, 1 photo':<34}{'median s':>9}   runs (s); faces found"]
    for key in ("keras", "tflite"):
        run = results["image_script"][key]
        found = ", ".join(f"{f['label']} {f['probability']:.2f}" for f in run["output"]["faces"]) or "none"
        lines.append(f"{'  -m ' + Path(run['model']).name:<34}{fmt(run['median_s'], 2):>9}   "
                     f"{', '.join(fmt(v, 2) for v in run['runs_s'])}; {found}")
    lines += tracking_lines(results["tracking"]) + detector_lines(results["detectors"]) + door_lines(results["door"])
    lines += ["", "targets:"]
    for name, (value, limit, met) in target_status(results).items():
        lines.append(f"  {name:<30} {fmt(value, 2):>8}  {'MET' if met else 'NOT MET'}")
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="benchmark.py", description="Time the 2020 reference loop against detect_mask_video.py "
        "(and the classifier variants and detect_mask_image.py) in one run.")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames of the test video "
                        "(default: %(default)s)")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH, help="video width (default: %(default)s)")
    parser.add_argument("--height", type=int, default=DEFAULT_HEIGHT, help="video height (default: %(default)s)")
    parser.add_argument("--keras-model", type=Path, default=DEFAULT_KERAS_MODEL,
                        help="the .keras classifier (default: %(default)s)")
    parser.add_argument("--tflite-model", type=Path, default=DEFAULT_TFLITE_MODEL,
                        help="the .tflite classifier the pipeline uses (default: %(default)s, the file "
                             "detect_mask_video.py loads by default); <stem>_float32/_float16/_int8.tflite "
                             "beside it are timed too")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help="passes over the video, rounds of classifier calls and runs of "
                             "detect_mask_image.py (default: %(default)s)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write all results here as JSON")
    parser.add_argument("--tracking-only", action="store_true", help="only (e): --detect-every and live latency")
    parser.add_argument("--detectors-only", action="store_true", help="only (f): CenterFace against res10")
    parser.add_argument("--memory", action="store_true", help="only (g): peak memory on 80 photos of 80 sizes "
                        "against 10 (both detectors), the video loop on changing frame sizes, a 4032x3024 photo")
    parser.add_argument("--long-run", type=int, metavar="MIN", help="only (h): the video script on a live 640x480 "
                        "MJPEG stream (a local server looping over --frames frames) for MIN minutes, its RSS each "
                        "minute; target: the end within 50 MiB of minute 2")
    parser.add_argument("--long-run-options", nargs=argparse.REMAINDER, default=[], metavar="...",
                        help="with --long-run: more options for detect_mask_video.py (last on the line)")
    parser.add_argument("--door-only", action="store_true", help="only (i): --serve and --on-person against plain")
    # Internal: one measurement in a child process.
    parser.add_argument("--child", choices=("reference", "pipeline", "keras", "tflite", "video_sizes"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--detector", default="res10", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, default=MEMORY_PHOTOS, help=argparse.SUPPRESS)
    parser.add_argument("--sizes-rounds", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--faces", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--variant", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.frames < 1 or args.width < 64 or args.height < 64 or args.repeat < 1:
        parser.error("--frames and --repeat must be >= 1, --width/--height >= 64")
    return args


# ---- test video --------------------------------------------------------------------------------

def source_photos():
    """BGR photos with faces: matplotlib's Grace Hopper, skimage's astronaut, examples/*.jpg."""
    import matplotlib.cbook
    import skimage.data
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photos = [cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)]
    photos.append(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    photos += [cv2.imread(str(p)) for p in sorted((REPO / "examples").glob("*.jpg"))]
    return [p for p in photos if p is not None]


def face_tiles_and_batch():
    """Square face tiles (context around each res10 face) and the preprocessed faces (N, 224, 224, 3)."""
    import detect_mask_video as dmv
    net = dmv.load_face_detector()
    tiles, batches = [], []
    for photo in source_photos():
        height, width = photo.shape[:2]
        faces = dmv.drop_contained(dmv.find_faces(photo, net, 0.5, [300, 600], 0.4))
        for box, _ in faces:
            x1, y1, x2, y2 = square_around(box, width, height)
            tiles.append(photo[y1:y2, x1:x2].copy())
        batch, _ = dmv.preprocess_faces(photo, [box for box, _ in faces])
        batches.append(batch)
    return tiles, np.concatenate(batches)


def background(width, height, seed=0):
    """A fixed, mildly textured background: a gradient, a few panels and noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    image = 70 + 90 * y * np.array([0.6, 0.8, 1.0]) + 40 * x * np.array([1.0, 0.7, 0.4])
    image = np.broadcast_to(image, (height, width, 3)).copy()
    for _ in range(6):
        x1, y1 = rng.integers(0, width), rng.integers(0, height)
        x2, y2 = x1 + rng.integers(30, width // 3), y1 + rng.integers(30, height // 3)
        image[y1:y2, x1:x2] = rng.integers(40, 220, 3)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def video_frames(tiles, frames, width, height):
    """The test video's frames: (frame, number of faces pasted in it)."""
    side = max(32, int(min(width, height) * TILE_FRACTION))
    side = min(side, width // MAX_SLOTS)
    tiles = [cv2.resize(t, (side, side), interpolation=cv2.INTER_AREA) for t in tiles]
    base = background(width, height)
    for t in range(frames):
        frame = base.copy()
        slots = visible_slots(t)
        for slot in slots:
            tile = tiles[(slot + MAX_SLOTS * (t // FACE_SWAP_FRAMES)) % len(tiles)]
            x, y = slot_position(slot, t, width, height, side)
            frame[y:y + side, x:x + side] = tile
        yield frame, len(slots)


def make_video(path, tiles, frames, width, height):
    """Write the test video (mp4v); returns the number of faces pasted in each frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write mp4v video")
    counts = []
    for frame, count in video_frames(tiles, frames, width, height):
        writer.write(frame)
        counts.append(count)
    writer.release()
    return counts


# ---- children: one measurement each ------------------------------------------------------------

def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def child_reference(args):
    """(a) The 2020 PyImageSearch loop, verbatim in structure (no window)."""
    import imutils
    from tensorflow.keras.applications.mobilenet_v2 import preprocess_input
    from tensorflow.keras.models import load_model
    from tensorflow.keras.preprocessing.image import img_to_array

    import detect_mask_video as dmv
    prototxt, weights = dmv.find_face_detector()
    faceNet = cv2.dnn.readNet(str(prototxt), str(weights))  # noqa: N806 - the 2020 names
    maskNet = load_model(str(args.keras_model))  # noqa: N806

    def detect_and_predict_mask(frame, timings):
        start = time.perf_counter()
        (h, w) = frame.shape[:2]
        blob = cv2.dnn.blobFromImage(cv2.resize(frame, (REF_SSD_SIZE, REF_SSD_SIZE)), 1.0,
                                     (REF_SSD_SIZE, REF_SSD_SIZE), REF_MEAN)
        faceNet.setInput(blob)
        detections = faceNet.forward()
        detected = time.perf_counter()
        faces, locs, preds = [], [], []
        for i in range(0, detections.shape[2]):
            confidence = detections[0, 0, i, 2]
            if confidence > REF_CONFIDENCE:
                box = detections[0, 0, i, 3:7] * np.array([w, h, w, h])
                (startX, startY, endX, endY) = box.astype("int")  # noqa: N806
                (startX, startY) = (max(0, startX), max(0, startY))  # noqa: N806
                (endX, endY) = (min(w - 1, endX), min(h - 1, endY))  # noqa: N806
                face = frame[startY:endY, startX:endX]
                if face.size == 0:  # the 2020 code crashed here; skip instead
                    continue
                face = cv2.cvtColor(face, cv2.COLOR_BGR2RGB)
                face = cv2.resize(face, (224, 224))
                face = img_to_array(face)
                face = preprocess_input(face)
                faces.append(face)
                locs.append((startX, startY, endX, endY))
        if len(faces) > 0:
            faces = np.array(faces, dtype="float32")
            # verbose=0: the 2020 Keras printed no progress bar here; Keras 3 would.
            preds = maskNet.predict(faces, batch_size=32, verbose=0)
        timings["detect_extra"] = detected - start
        timings["classify"] = time.perf_counter() - detected
        return (locs, preds)

    def step(capture, timings):
        start = time.perf_counter()
        ok, frame = capture.read()
        if not ok:
            return None
        decoded = time.perf_counter()
        frame = imutils.resize(frame, width=REF_WIDTH)
        resized = time.perf_counter()
        (locs, preds) = detect_and_predict_mask(frame, timings)
        drawn_start = time.perf_counter()
        for (box, pred) in zip(locs, preds):
            (startX, startY, endX, endY) = box  # noqa: N806
            (mask, withoutMask) = pred  # noqa: N806
            label = "Mask" if mask > withoutMask else "No Mask"
            color = (0, 255, 0) if label == "Mask" else (0, 0, 255)
            label = "{}: {:.2f}%".format(label, max(mask, withoutMask) * 100)
            cv2.putText(frame, label, (startX, startY - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 2)
            cv2.rectangle(frame, (startX, startY), (endX, endY), color, 2)
        end = time.perf_counter()
        timings.update(decode=decoded - start, detect=resized - decoded + timings.pop("detect_extra"),
                       draw=end - drawn_start, faces=len(locs), total=end - start)
        return timings

    serve_video(args, step, lambda: {"tensorflow_imported": "tensorflow" in sys.modules})


def child_pipeline(args):
    """(b) detect_mask_video.py's own functions, called as its frame loop calls them."""
    import detect_mask_video as dmv
    options = dmv.parse_args(["-i", str(args.video), "--no-display", "-m", str(args.tflite_model)])
    detect_seconds = []
    original_detect = dmv.find_faces

    def timed_find_faces(*a, **k):  # detect_and_classify looks find_faces up at call time
        start = time.perf_counter()
        try:
            return original_detect(*a, **k)
        finally:
            detect_seconds.append(time.perf_counter() - start)

    dmv.find_faces = timed_find_faces
    cv2.setNumThreads(options.threads)  # as run() does
    net = dmv.load_face_detector(options.face)
    classifier = dmv.load_classifier(dmv.find_model(options.model), options.threads)
    frame_index = [0]  # the frame number goes on across chunks
    tracker = dmv.Tracker(0.5)

    def step(capture, timings):
        start = time.perf_counter()
        ok, frame = capture.read()
        if not ok or frame is None:
            return None
        decoded = time.perf_counter()
        faces = dmv.detect_and_classify(frame, net, classifier, options.confidence, options.detect_size,
                                        options.nms, options.mask_threshold)
        classified = time.perf_counter()
        rate = 1.0 / max(classified - start, 1e-6)
        faces = tracker.update(faces, frame_index[0], 0.0)[0]  # as the loop does (--detect-every 1)
        frame_index[0] += 1
        dmv.draw(frame, faces, rate)
        end = time.perf_counter()
        detect = detect_seconds.pop()
        timings.update(decode=decoded - start, detect=detect, classify=classified - decoded - detect,
                       draw=end - classified, faces=len(faces), total=end - start)
        return timings

    serve_video(args, step, lambda: {
        "tensorflow_imported": "tensorflow" in sys.modules,
        "options": {"detect_size": options.detect_size, "threads": options.threads,
                    "confidence": options.confidence,
                    "model": str(dmv.find_model(options.model))}})


def serve_video(args, step, info):
    """The video child's side of the protocol: warm up, then run chunks of frames on request.

    stdin "chunk N": time step() on the next N frames (the video restarts, untimed, after its
    last frame) and answer one CHUNK_MARK line with their timings; "finish" (or end of input):
    answer RESULT_MARK with info() and the peak RSS, and return.
    """
    video = str(args.video)
    capture = cv2.VideoCapture(video)
    step(capture, {})  # warm-up (Keras traces predict on its first call)
    capture.release()
    capture, in_pass = cv2.VideoCapture(video), 0
    print(READY_MARK, flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] != "chunk":
            break
        timings = []
        for _ in range(int(words[1])):
            if in_pass == args.frames:
                capture.release()
                capture, in_pass = cv2.VideoCapture(video), 0
            frame = step(capture, {})
            if frame is None:
                raise RuntimeError(f"{video}: ended after {in_pass} of {args.frames} frames")
            timings.append(frame)
            in_pass += 1
        print(CHUNK_MARK + json.dumps(timings), flush=True)
    capture.release()
    print(RESULT_MARK + json.dumps({**info(), "peak_rss_mib": peak_rss_mib()}), flush=True)


def timed_calls(function, calls, repeat):
    for _ in range(WARMUP_CALLS):
        function()
    seconds = []
    for _ in range(repeat * calls):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return summarize(seconds)


def child_keras(args):
    """(c) Keras on one face: predict (as 2020), a direct call, predict_on_batch; all faces' output."""
    start = time.perf_counter()
    import tensorflow  # noqa: F401
    tf_import_s = time.perf_counter() - start
    import keras
    model = keras.saving.load_model(args.keras_model, compile=False)
    faces = np.load(args.faces)
    one = faces[:1]
    rows = [
        ("Keras model.predict", timed_calls(lambda: model.predict(one, batch_size=32, verbose=0),
                                            CLASSIFIER_CALLS["keras_predict"], args.repeat)),
        ("Keras model(x) direct call", timed_calls(lambda: np.asarray(model(one, training=False)),
                                                   CLASSIFIER_CALLS["keras_call"], args.repeat)),
        ("Keras predict_on_batch", timed_calls(lambda: model.predict_on_batch(one),
                                               CLASSIFIER_CALLS["keras_on_batch"], args.repeat)),
    ]
    probs = np.asarray(model.predict_on_batch(faces), np.float32)
    return {"rows": [{"name": name, **stats} for name, stats in rows], "probs": probs.tolist(),
            "tf_import_s": tf_import_s, "peak_rss_mib": peak_rss_mib()}


def child_tflite(args):
    """(c) LiteRT variants on one face through the project's TFLiteClassifier (threads as default)."""
    import detect_mask_video as dmv
    threads = dmv.parse_args([]).threads
    faces = np.load(args.faces)
    one = faces[:1]
    rows = []
    for item in args.variant:
        name, path = item.split("::", 1)
        classifier = dmv.TFLiteClassifier(Path(path), threads)
        stats = timed_calls(lambda: classifier.predict(one), CLASSIFIER_CALLS["tflite"], args.repeat)
        probs = np.concatenate([classifier.predict(face[None]) for face in faces])
        rows.append({"name": name, "path": path, **stats, "probs": probs.tolist()})
    # The crop + preprocessing of one face, as the pipeline does it per frame.
    photo = cv2.imread(str(PHOTO))
    box = dmv.find_faces(photo, dmv.load_face_detector(), 0.5, [300], 0.4)[0][0]
    preprocess = timed_calls(lambda: dmv.preprocess_faces(photo, [box]), CLASSIFIER_CALLS["tflite"], args.repeat)
    return {"rows": rows, "preprocess": preprocess, "tensorflow_imported": "tensorflow" in sys.modules,
            "threads": threads, "peak_rss_mib": peak_rss_mib()}


CHILDREN = {"reference": child_reference, "pipeline": child_pipeline, "keras": child_keras,
            "tflite": child_tflite, "video_sizes": lambda args: child_video_sizes(args)}
VIDEO_KINDS = ("reference", "pipeline")


class VideoChild:
    """A video loop in its own process, driven chunk by chunk (see serve_video)."""

    def __init__(self, kind, args, video, log_path):
        self.kind, self.log_path = kind, log_path
        command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--video", str(video),
                   "--frames", str(args.frames), "--keras-model", str(args.keras_model),
                   "--tflite-model", str(args.tflite_model)]
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True, bufsize=1, env=child_env())

    def answer(self, mark):
        """The payload of the next stdout line starting with mark (other lines are skipped)."""
        for line in self.process.stdout:
            if line.startswith(mark):
                return line[len(mark):]
        self.process.wait()
        self.log.close()
        tail = "\n".join(Path(self.log_path).read_text().strip().splitlines()[-15:])
        raise RuntimeError(f"child {self.kind} failed (exit {self.process.returncode}):\n{tail}")

    def chunk(self, frames):
        self.process.stdin.write(f"chunk {frames}\n")
        self.process.stdin.flush()
        return json.loads(self.answer(CHUNK_MARK))

    def finish(self):
        self.process.stdin.write("finish\n")
        self.process.stdin.flush()
        result = json.loads(self.answer(RESULT_MARK))
        self.process.wait()
        self.log.close()
        return result

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def video_results(frames, per_pass):
    """FPS (all frames, and of each pass over the video), per-stage ms and faces of one loop."""
    seconds = sum(t["total"] for t in frames)
    passes = [frames[i:i + per_pass] for i in range(0, len(frames), per_pass)]
    return {"frames": len(frames), "seconds": seconds, "fps": len(frames) / seconds,
            "fps_runs": [len(p) / sum(t["total"] for t in p) for p in passes],
            "stages": {s: summarize([t[s] for t in frames]) for s in STAGES},
            "faces_per_frame": float(np.mean([t["faces"] for t in frames]))}


def measure_video(args, video, workdir, log):
    """Both loops over the same video, alternating chunks of CHUNK_FRAMES (ABBA), --repeat passes."""
    children = {kind: VideoChild(kind, args, video, workdir / f"{kind}.log") for kind in VIDEO_KINDS}
    try:
        for child in children.values():
            child.answer(READY_MARK)
        frames = {kind: [] for kind in VIDEO_KINDS}
        total, round_ = args.frames * args.repeat, 0
        while len(frames["reference"]) < total:
            count = min(CHUNK_FRAMES, args.frames - len(frames["reference"]) % args.frames)
            for kind in (VIDEO_KINDS if round_ % 2 == 0 else VIDEO_KINDS[::-1]):
                frames[kind] += children[kind].chunk(count)
            round_ += 1
            done = len(frames["reference"])
            if done % args.frames == 0:
                log(f"  pass {done // args.frames}/{args.repeat}: " + ", ".join(
                    f"{k} {video_results(v[-args.frames:], args.frames)['fps']:.1f} FPS" for k, v in frames.items()))
        results = {kind: {**video_results(frames[kind], args.frames), **children[kind].finish()}
                   for kind in VIDEO_KINDS}
    finally:
        for child in children.values():
            child.kill()
    ref_fps, pipe_fps = results["reference"]["fps"], results["pipeline"]["fps"]
    results["ratio"] = pipe_fps / ref_fps if ref_fps else None
    return results


def child_env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")


def run_child(kind, args, *extra):
    """Run one measurement in a fresh Python; returns its result dict."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
               "--keras-model", str(args.keras_model), "--tflite-model", str(args.tflite_model),
               "--repeat", str(args.repeat), *extra]
    done = subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=CHILD_TIMEOUT_S)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"child {kind} failed (exit {done.returncode}):\n{tail}")


def time_image_script(model):
    """Seconds from starting detect_mask_image.py to its exit, and its JSON output."""
    command = [sys.executable, str(REPO / "detect_mask_image.py"), "-i", str(PHOTO), "--no-display",
               "--json", "-m", str(model)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def variant_paths(tflite_model, keras_model):
    """{variant: path} of the LiteRT variants that exist beside the default .tflite model."""
    found = {}
    for stem in dict.fromkeys((keras_model.stem, tflite_model.stem)):
        for variant in TFLITE_VARIANTS:
            path = tflite_model.with_name(f"{stem}_{variant}.tflite")
            if variant not in found and path.is_file():
                found[variant] = path
    return found


def sha1_file(path):
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


class SimulatedCamera:
    """A live camera: a thread makes a frame every 1/fps s into a driver queue of CAMERA_BUFFER frames (the
    newest dropped when full, as V4L2 does); read() blocks for the oldest queued frame, as cv2's does.
    capture_time[id(frame)] = when it was made."""

    def __init__(self, frames, fps):
        import queue
        import threading
        self.frames, self.period, self.queue = frames, 1.0 / fps, queue.Queue(CAMERA_BUFFER)
        self.capture_time, self.running = {}, True
        threading.Thread(target=self.produce, daemon=True).start()

    def produce(self):
        n, due = 0, time.perf_counter()
        while self.running:
            due += self.period
            time.sleep(max(0.0, due - time.perf_counter()))
            frame = self.frames[n % len(self.frames)].copy()
            if not self.queue.full():
                self.capture_time[id(frame)] = time.perf_counter()
                self.queue.put(frame)
            n += 1

    def read(self):
        return True, self.queue.get()

    def get(self, prop):
        return 0.0


def live_latency(dmv, frames, net, classifier, options, threaded, count):
    """Age (s) of the frame shown by each step (made -> drawn), and each step's time, for a loop that reads
    SimulatedCamera directly (2020 style) or through detect_mask_video.LatestFrame."""
    camera = SimulatedCamera(frames, CAMERA_FPS)
    source = dmv.LatestFrame(camera, 30) if threaded else camera
    ages, steps = [], []
    try:
        for _ in range(count):
            ok, frame = source.read()
            start = time.perf_counter()
            dmv.detect_and_classify(frame, net, classifier, options.confidence, options.detect_size, options.nms,
                                    options.mask_threshold)
            end = time.perf_counter()
            ages.append(end - camera.capture_time.pop(id(frame)))
            steps.append(end - start)
    finally:
        camera.running = False
        if threaded:
            source.stop()
    return ages, steps


def measure_tracking(args, video, log):
    """(e) --detect-every DETECT_EVERY against 1 (detector + classifier + tracker per frame, chunks in turn),
    and the live latency of a camera faster than the loop: plain reads against LatestFrame, in turn."""
    import detect_mask_video as dmv
    options = dmv.parse_args(["--no-display", "-m", str(args.tflite_model)])
    cv2.setNumThreads(options.threads)
    net = dmv.load_face_detector(options.face)
    classifier = dmv.load_classifier(dmv.find_model(options.model), options.threads)
    frames = read_frames(video, args.frames)
    log(f"tracking: --detect-every {DETECT_EVERY} and 1 side by side, {CHUNK_FRAMES * 3}-frame chunks in turn ...")
    seconds, done = {1: 0.0, DETECT_EVERY: 0.0}, {1: 0, DETECT_EVERY: 0}
    trackers = {every: dmv.Tracker(0.5) for every in seconds}
    for turn in range(0, -(-len(frames) // (CHUNK_FRAMES * 3))):
        for every in ((1, DETECT_EVERY) if turn % 2 == 0 else (DETECT_EVERY, 1)):  # ABBA
            for _ in range(min(CHUNK_FRAMES * 3, len(frames) - done[every])):
                n, start = done[every], time.perf_counter()
                found = None if n % every else dmv.detect_and_classify(
                    frames[n], net, classifier, options.confidence, options.detect_size, options.nms,
                    options.mask_threshold)
                trackers[every].update(found, n, 0.0)
                seconds[every] += time.perf_counter() - start
                done[every] += 1
    fps = {every: done[every] / seconds[every] for every in seconds}
    log(f"tracking: live camera at {CAMERA_FPS:.0f} FPS, plain reads and LatestFrame in turn ...")
    live = {"plain": ([], []), "latest": ([], [])}
    for turn in ("plain", "latest", "latest", "plain"):
        ages, steps = live_latency(dmv, frames, net, classifier, options, turn == "latest", LIVE_FRAMES)
        live[turn][0].extend(ages[CAMERA_BUFFER:])  # once the plain loop's queue has filled
        live[turn][1].extend(steps[CAMERA_BUFFER:])
    period = 1 / CAMERA_FPS
    return {"fps": {str(k): v for k, v in fps.items()}, "detect_every": DETECT_EVERY,
            "ratio": fps[DETECT_EVERY] / fps[1], "camera_fps": CAMERA_FPS,
            "live": {turn: {"age_ms_mean": 1000 * np.mean(a), "age_ms_max": 1000 * max(a),
                            "step_ms_mean": 1000 * np.mean(st), "step_ms_max": 1000 * max(st),
                            "over_limit": int(sum(age > step + period for age, step in zip(a, st)))}
                     for turn, (a, st) in live.items()}}


def read_frames(video, count):
    """The first `count` frames of a video file, decoded."""
    capture, frames = cv2.VideoCapture(str(video)), []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


DETECTOR_RUNS = {"centerface": ["--face-detector", "centerface"], "res10 640": ["--detect-size", "640"],
                 "res10 300": [], "res10-masks 300": ["--face-detector", "res10-masks"]}  # (f): each run's options


def measure_detectors(args, video, log):
    """(f) FPS of detect_and_classify per frame for each DETECTOR_RUNS entry, chunks in turn (rotating order)."""
    import detect_mask_video as dmv
    runs = {}
    for name, extra in DETECTOR_RUNS.items():
        options = dmv.parse_args(["--no-display", "-m", str(args.tflite_model), *extra])
        runs[name] = (options, dmv.load_face_detector(options.face, options.face_detector))
    cv2.setNumThreads(runs["res10 300"][0].threads)
    classifier = dmv.load_classifier(dmv.find_model(str(args.tflite_model)), runs["res10 300"][0].threads)
    frames = read_frames(video, args.frames)
    log(f"detectors: {', '.join(runs)} side by side, {CHUNK_FRAMES}-frame chunks in turn ...")
    seconds, faces = {name: 0.0 for name in runs}, {name: 0 for name in runs}
    names = list(runs)
    for turn, first in enumerate(range(0, len(frames), CHUNK_FRAMES)):
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            options, net = runs[name]
            for frame in frames[first:first + CHUNK_FRAMES]:
                start = time.perf_counter()
                found = dmv.detect_and_classify(frame, net, classifier, options.confidence, options.detect_size,
                                                options.nms, options.mask_threshold)
                seconds[name] += time.perf_counter() - start
                faces[name] += len(found)
    return {name: {"fps": len(frames) / seconds[name], "faces_per_frame": faces[name] / len(frames),
                   "detect_size": runs[name][0].detect_size, "confidence": runs[name][0].confidence}
            for name in runs}


def detector_lines(detectors):
    """The (f) rows of the report."""
    lines = ["", "face detectors, detect_and_classify per frame (same frames, chunks in turn):"]
    lines += [f"  {name:<15} {fmt(d['fps'])} FPS  faces/frame {d['faces_per_frame']:.2f}  (--detect-size "
              f"{' '.join(map(str, d['detect_size']))}, -c {d['confidence']})" for name, d in detectors.items()]
    ratio = detectors["centerface"]["fps"] / detectors["res10 640"]["fps"]
    fine_tuned = detectors["res10-masks 300"]["fps"] / detectors["res10 300"]["fps"]
    return lines + [f"  ratio centerface / res10 640: {fmt(ratio, 2, 'x')}",
                    f"  ratio res10-masks 300 / res10 300 (fine-tuned / OpenCV's weights): {fmt(fine_tuned, 2, 'x')}"]


def tracking_lines(tracking):
    """The (e) rows of the report."""
    fps, every = tracking["fps"], tracking["detect_every"]
    lines = ["", f"--detect-every {every}: {fmt(fps[str(every)])} FPS, --detect-every 1: {fmt(fps['1'])} FPS, "
             f"ratio {fmt(tracking['ratio'], 2, 'x')} (detector + classifier + tracker)",
             f"live camera {tracking['camera_fps']:.0f} FPS, age of the frame shown (made -> drawn) and step, ms:"]
    for turn, name in (("plain", "2020-style reads"), ("latest", "LatestFrame thread")):
        live = tracking["live"][turn]
        lines.append(f"  {name:<20} age mean {fmt(live['age_ms_mean'])} max {fmt(live['age_ms_max'])}; step mean "
                     f"{fmt(live['step_ms_mean'])} max {fmt(live['step_ms_max'])}; frames older than step + "
                     f"1 camera frame: {live['over_limit']}")
    return lines


# ---- (g) memory: many photo sizes, a phone photo, a long live run -----------------------------------

class MjpegStream:
    """A local HTTP MJPEG stream (multipart/x-mixed-replace, as IP cameras serve), looping over JPEG frames at
    VIDEO_FPS in real time, one client at a time; the video script reads it as a live source."""

    def __init__(self, jpegs):
        import http.server
        import threading
        self.jpegs = jpegs

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler):  # noqa: N805 - the handler's own self
                handler.send_response(200)
                handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                handler.end_headers()
                start, sent = time.perf_counter(), 0
                try:
                    while True:
                        jpeg = self.jpegs[sent % len(self.jpegs)]
                        handler.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                            % len(jpeg) + jpeg + b"\r\n")
                        sent += 1
                        time.sleep(max(0.0, start + sent / VIDEO_FPS - time.perf_counter()))
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(handler, *args):  # noqa: N805
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def rss_mib(pid):
    """Resident memory of a process now (VmRSS), MiB; None once it has ended."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def measure_long_run(args, log):
    """detect_mask_video.py --json on a live 640x480 MJPEG stream for --long-run minutes; its RSS each minute."""
    tiles, _ = face_tiles_and_batch()
    jpegs = [cv2.imencode(".jpg", frame)[1].tobytes()
             for frame, _ in video_frames(tiles, args.frames, DEFAULT_WIDTH, DEFAULT_HEIGHT)]
    stream = MjpegStream(jpegs)
    command = [sys.executable, str(REPO / "detect_mask_video.py"), "-i", stream.url, "--no-display", "--json",
               "-m", str(args.tflite_model), *args.long_run_options]
    log(f"long run: {' '.join(command[1:])} for {args.long_run} min (RSS sampled every minute) ...")
    # SIGINT as a user's Ctrl-C (a shell's background job would pass it on ignored).
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=child_env(),
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    start, samples = time.perf_counter(), []
    try:
        for minute in range(1, args.long_run + 1):
            time.sleep(max(0.0, start + LONG_RUN_SAMPLE_S * minute - time.perf_counter()))
            samples.append(rss_mib(child.pid))
            log(f"  minute {minute}: RSS {samples[-1]} MiB")
            if samples[-1] is None:
                break
    finally:
        child.send_signal(signal.SIGINT)
        try:
            _, stderr = child.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            _, stderr = child.communicate()
        stream.close()
    summary = next((line for line in stderr.splitlines() if line.startswith("summary:")), stderr.strip()[-300:])
    if None in samples or len(samples) < 2:
        raise RuntimeError(f"long run: the video script ended early (exit {child.returncode}): {summary}")
    return {"command": " ".join(command[1:]), "minutes": args.long_run, "rss_mib": samples,
            "growth_mib": samples[-1] - samples[1], "summary": summary}


def memory_photos(folder, picked, widths, source=SCENES):
    """The validation scenes numbered in picked, scene n resized to widths[n] px wide (JPEG, in folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = sorted((source / "images").glob("*.png"))
    for n, path in ((n, images[n]) for n in picked):
        image = cv2.imread(str(path))
        width = widths[n]
        cv2.imwrite(str(folder / f"{n:03d}_{width}.jpg"),
                    cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])),
                               interpolation=cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_CUBIC))
    return folder


def peak_and_seconds(command):
    """(peak RSS MiB, seconds) of command, process start to exit, in a fresh wrapper process (whose
    RUSAGE_CHILDREN high-water mark is this command's alone)."""
    wrapper = ("import resource, subprocess, sys, time; start = time.perf_counter(); "
               "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode; "
               "seconds = time.perf_counter() - start; "
               "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0, seconds)")
    done = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, cwd=REPO,
                          env=child_env(), timeout=CHILD_TIMEOUT_S)
    code, peak, seconds = done.stdout.split()
    if code != "0":
        raise RuntimeError(f"{' '.join(command)}: exit {code}")
    return float(peak), float(seconds)


def child_video_sizes(args):
    """(g) detect_mask_video.py's frame loop (process()) fed frames whose size changes every few frames (OpenCV's
    FFmpeg capture scales a stream to its first size, so a file cannot do this): --sizes sizes in turn."""
    import detect_mask_video as dmv
    options = dmv.parse_args(["--no-display", "--json", "--face-detector", args.detector, "-m",
                              str(args.tflite_model)])
    tiles, _ = face_tiles_and_batch()
    frames = [frame for frame, _ in video_frames(tiles, 20, DEFAULT_WIDTH, DEFAULT_HEIGHT)]

    class SizeChangingCapture:
        """Frames of the test video, each size for 2 frames, the sizes in turn (widths 320 px to about 1031 px,
        4:3, evenly spaced: 10 sizes span the 80's range)."""
        def __init__(self):
            self.count = 0

        def read(self):
            if self.count == 2 * args.sizes * args.sizes_rounds:
                return False, None
            width = 320 + (self.count // 2) % args.sizes * (9 * (MEMORY_PHOTOS - 1) // (args.sizes - 1))  # to 1031
            self.count += 1
            return True, cv2.resize(frames[self.count % len(frames)], (width, width * 3 // 4))

        def get(self, prop):
            return VIDEO_FPS

    net = dmv.load_face_detector(name=args.detector)
    classifier = dmv.load_classifier(dmv.find_model(str(args.tflite_model)))
    with open(os.devnull, "w") as devnull:
        saved, sys.stdout = sys.stdout, devnull
        start = time.perf_counter()
        dmv.process(options, SizeChangingCapture(), False, net, classifier)
        seconds = time.perf_counter() - start
        sys.stdout = saved
    return {"peak_rss_mib": peak_rss_mib(), "seconds": seconds}


def measure_memory(args, workdir, log):
    """(g): peak RSS of a fresh process on 80 photos of 80 sizes against 10 of them, per detector; the video loop on
    80 frame sizes against 10; a 4032x3024 photo (process start to exit, --repeat runs)."""
    widths = [320 + 9 * n for n in range(MEMORY_PHOTOS)]  # 320 to 1031 px wide
    many = memory_photos(workdir / "many", range(MEMORY_PHOTOS), widths)
    # The baseline spans the same sizes (the smallest to the largest): growth is what more photos add.
    few = memory_photos(workdir / "few", np.linspace(0, MEMORY_PHOTOS - 1, MEMORY_FEW).round().astype(int), widths)
    phone = workdir / "phone.jpg"
    image = cv2.imread(str(sorted((SCENES / "images").glob("*.png"))[0]))
    cv2.imwrite(str(phone), cv2.resize(image, PHONE_SIZE, interpolation=cv2.INTER_CUBIC))
    script = [sys.executable, str(REPO / "detect_mask_image.py"), "--no-display", "--json", "-m",
              str(args.tflite_model)]
    results = {"photos": {}, "video": {}, "phone": {}}
    for detector in ("centerface", "res10"):
        row = results["photos"][detector] = {}
        for name, folder in (("few", few), ("many", many)):
            log(f"memory: {detector} on {len(list(folder.iterdir()))} photos ...")
            row[name] = peak_and_seconds([*script, "--face-detector", detector, "-i", str(folder)])
            log(f"  peak {row[name][0]:.0f} MiB, {row[name][1]:.1f} s")
        row = results["video"][detector] = {}
        for name, sizes in (("few", MEMORY_FEW), ("many", MEMORY_PHOTOS)):
            log(f"memory: the video loop, {detector}, {sizes} frame sizes ...")
            row[name] = run_child("video_sizes", args, "--detector", detector, "--sizes", str(sizes))
            log(f"  peak {row[name]['peak_rss_mib']:.0f} MiB, {row[name]['seconds']:.1f} s")
        runs = []
        for _ in range(args.repeat):
            log(f"memory: {detector} on a {PHONE_SIZE[0]}x{PHONE_SIZE[1]} photo ...")
            runs.append(peak_and_seconds([*script, "--face-detector", detector, "-i", str(phone)]))
            log(f"  peak {runs[-1][0]:.0f} MiB, {runs[-1][1]:.2f} s")
        results["phone"][detector] = {"peak_rss_mib": max(p for p, _ in runs), "runs_s": [s for _, s in runs],
                                      "median_s": median([s for _, s in runs])}
    return results


def memory_lines(results):
    lines = ["peak RSS (MiB), fresh process each: 10 photos/sizes -> 80 (growth; target <= 150, peak <= 1536)"]
    met = True
    for detector, row in results["photos"].items():
        (few, few_s), (many, many_s) = row["few"], row["many"]
        ok = many - few <= TARGETS["memory_growth_mib"] and many <= TARGETS["memory_peak_mib"]
        met &= ok
        lines.append(f"  detect_mask_image.py --face-detector {detector}: {few:.0f} ({few_s:.1f} s) -> {many:.0f} "
                     f"({many_s:.1f} s), growth {many - few:+.0f} ({'met' if ok else 'NOT met'})")
    for detector, row in results["video"].items():
        few, many = row["few"]["peak_rss_mib"], row["many"]["peak_rss_mib"]
        ok = many - few <= TARGETS["memory_growth_mib"] and many <= TARGETS["memory_peak_mib"]
        met &= ok
        lines.append(f"  detect_mask_video.py loop, {detector}, frame size changing: {few:.0f} -> {many:.0f}, growth "
                     f"{many - few:+.0f} ({'met' if ok else 'NOT met'})")
    for detector, row in results["phone"].items():
        peak_target, seconds_target = TARGETS["phone_" + detector]
        ok = row["peak_rss_mib"] <= peak_target and row["median_s"] <= seconds_target
        met &= ok
        lines.append(f"  {PHONE_SIZE[0]}x{PHONE_SIZE[1]} photo, {detector} defaults: peak {row['peak_rss_mib']:.0f} "
                     f"MiB, {row['median_s']:.2f} s median of {' '.join(f'{s:.2f}' for s in row['runs_s'])} "
                     f"(target <= {peak_target} MiB, <= {seconds_target} s: {'met' if ok else 'NOT met'})")
    return lines, met


def long_run_lines(result):
    samples = result["rss_mib"]
    met = result["growth_mib"] <= TARGETS["long_run_growth_mib"]
    return [f"long run: {result['command']}",
            f"  RSS each minute (MiB): {' '.join(f'{v:.0f}' for v in samples)}",
            f"  minute 2: {samples[1]:.1f} MiB, end (minute {len(samples)}): {samples[-1]:.1f} MiB, growth "
            f"{result['growth_mib']:+.1f} MiB (target <= {TARGETS['long_run_growth_mib']} MiB: "
            f"{'met' if met else 'NOT met'})", f"  {result['summary']}"]
DOOR_RUNS = {"plain": [], "serve": ["--serve", "0"], "on_person": ["--on-person", "sleep 5"]}  # (i)


def read_stream(url, received):
    """An MJPEG viewer: count each JPEG part of the stream at url into received[0] until the stream ends."""
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=CHILD_TIMEOUT_S) as stream:
        while stream.readline():  # the boundary line
            headers = dict(line.decode().strip().split(": ", 1) for line in iter(stream.readline, b"\r\n"))
            stream.read(int(headers["Content-Length"]))
            stream.readline()
            received[0] += 1


def door_run(args, video, extra):
    """(frames, mean FPS from the summary, frames a --serve viewer received, verdicts) of one detect_mask_video.py
    run; verdicts: people with a Mask / No Mask verdict (with --on-person, the commands started)."""
    command = [sys.executable, str(REPO / "detect_mask_video.py"), "-i", str(video), "-m", str(args.tflite_model),
               "--no-display", *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=child_env())
    received, viewer = [0], None
    if "--serve" in extra:
        url = next(line.split()[-1] for line in process.stderr if line.startswith("live view: "))
        viewer = threading.Thread(target=read_stream, args=(url + "stream.mjpg", received), daemon=True)
        viewer.start()
    err = process.communicate(timeout=CHILD_TIMEOUT_S)[1]
    if viewer:
        viewer.join(30)
    found = re.search(r"summary: (\d+) frames, .* mean ([\d.]+) FPS, .*: (\d+) with mask, (\d+) without mask", err)
    if process.returncode != 0 or not found:
        raise RuntimeError(f"detect_mask_video.py {' '.join(extra)} failed (exit {process.returncode}): {err[-800:]}")
    frames, fps, with_mask, without = found.groups()
    return int(frames), float(fps), received[0], int(with_mask) + int(without)


def measure_door(args, video, log):
    """(i) detect_mask_video.py plain, with --serve + one viewer, with --on-person 'sleep 5': in turn."""
    names, totals = list(DOOR_RUNS), {name: [0, 0.0, 0, 0] for name in DOOR_RUNS}
    runs = {name: [] for name in DOOR_RUNS}
    for turn in range(args.repeat):
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            log(f"door: round {turn + 1}/{args.repeat}, {name} ...")
            frames, fps, received, verdicts = door_run(args, video, DOOR_RUNS[name])
            totals[name][0] += frames
            totals[name][1] += frames / fps
            totals[name][2] += received
            totals[name][3] += verdicts
            runs[name].append(fps)
    fps = {name: frames / seconds for name, (frames, seconds, _, _) in totals.items()}
    return {"fps": fps, "ratio": {name: fps[name] / fps["plain"] for name in ("serve", "on_person")},
            "viewer_frames": totals["serve"][2], "serve_frames": totals["serve"][0],
            "commands": totals["on_person"][3], "fps_runs": runs}


def door_lines(door):
    """The (i) rows of the report."""
    fps, ratio = door["fps"], door["ratio"]
    return ["", f"at a door, detect_mask_video.py (summary mean FPS, runs in turn): plain {fmt(fps['plain'])}, "
            f"--serve + 1 viewer {fmt(fps['serve'])} (ratio {fmt(ratio['serve'], 3)}; the viewer received "
            f"{door['viewer_frames']} of {door['serve_frames']} frames), --on-person 'sleep 5' "
            f"{fmt(fps['on_person'])} (ratio {fmt(ratio['on_person'], 3)}; {door['commands']} commands started)",
            "  FPS of each run: " + "; ".join(f"{name} {', '.join(fmt(x) for x in runs)}"
                                             for name, runs in door["fps_runs"].items())]


def measure(args, workdir, log):
    """Everything, in one run; returns the results dict."""
    load_before = os.getloadavg()[0]
    log("making the test video ...")
    tiles, faces = face_tiles_and_batch()
    video, faces_path = workdir / "bench.mp4", workdir / "faces.npy"
    counts = make_video(video, tiles, args.frames, args.width, args.height)
    np.save(faces_path, faces)

    if args.tracking_only:
        return {"tracking": measure_tracking(args, video, log)}
    if args.detectors_only:
        return {"detectors": measure_detectors(args, video, log)}
    if args.door_only:
        return {"door": measure_door(args, video, log)}
    log(f"video: reference and pipeline side by side, {CHUNK_FRAMES}-frame chunks in turn ...")
    video_side_by_side = measure_video(args, video, workdir, log)

    log("classifier alone: Keras ...")
    keras_result = run_child("keras", args, "--faces", str(faces_path))
    variants = variant_paths(args.tflite_model, args.keras_model)
    default_sha = sha1_file(args.tflite_model)
    same_as = next((v for v, p in variants.items() if sha1_file(p) == default_sha), None)
    named = [f"LiteRT {v}{' (= default)' if v == same_as else ''}::{p}" for v, p in variants.items()]
    if same_as is None:
        named.append(f"LiteRT default {args.tflite_model.name}::{args.tflite_model}")
    log("classifier alone: LiteRT ...")
    tflite_result = run_child("tflite", args, "--faces", str(faces_path),
                              *[a for item in named for a in ("--variant", item)])
    keras_probs = keras_result["probs"]
    rows = [{k: v for k, v in row.items() if k != "probs"} for row in keras_result["rows"]]
    default_ms = None
    for row in tflite_result["rows"]:
        rows.append({**{k: v for k, v in row.items() if k != "probs"},
                     "agreement": agreement(keras_probs, row["probs"])})
        if Path(row["path"]) == args.tflite_model or "(= default)" in row["name"]:
            default_ms = row["p50"]
    classifier = {"rows": rows, "default_ms": default_ms,
                  "preprocess_ms": tflite_result["preprocess"]["p50"],
                  "keras_peak_rss_mib": keras_result["peak_rss_mib"],
                  "tflite_peak_rss_mib": tflite_result["peak_rss_mib"],
                  "tf_import_s": keras_result["tf_import_s"],
                  "tflite_imports_tensorflow": tflite_result["tensorflow_imported"],
                  "tflite_threads": tflite_result["threads"]}

    image = {"keras": {"model": str(args.keras_model), "runs_s": []},
             "tflite": {"model": str(args.tflite_model), "runs_s": []}}
    for r in range(args.repeat):
        for key in (("keras", "tflite") if r % 2 == 0 else ("tflite", "keras")):
            log(f"detect_mask_image.py run {r + 1}/{args.repeat}: {key} ...")
            seconds, output = time_image_script(image[key]["model"])
            image[key]["runs_s"].append(seconds)
            image[key]["output"] = output
    for entry in image.values():
        entry["median_s"] = median(entry["runs_s"])

    return {"meta": {"frames": args.frames, "width": args.width, "height": args.height,
                     "repeat": args.repeat, "faces_per_frame": f"{min(counts)}-{max(counts)} "
                     f"(mean {np.mean(counts):.2f})", "face_tiles": len(tiles),
                     "cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()[0],
                     "keras_model": str(args.keras_model), "tflite_model": str(args.tflite_model),
                     "python": platform.python_version(), "opencv": cv2.__version__,
                     "command": " ".join([Path(sys.executable).name, *sys.argv])},
            "video": video_side_by_side, "classifier": classifier, "image_script": image,
            "tracking": measure_tracking(args, video, log), "detectors": measure_detectors(args, video, log),
            "door": measure_door(args, video, log)}


def main(argv=None):
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (status 2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.child:
        result = CHILDREN[args.child](args)  # the video children answer by themselves
        if result is not None:
            print(RESULT_MARK + json.dumps(result), flush=True)
        return 0
    for path in (args.keras_model, args.tflite_model):
        if not path.is_file():
            print(f"error: {path}: no such model; train one with train_mask_detector.py or pass "
                  "--keras-model / --tflite-model (e.g. the ones in /tmp/smoke)", file=sys.stderr)
            return 2
    args.keras_model, args.tflite_model = args.keras_model.resolve(), args.tflite_model.resolve()

    def log(text):
        print(text, file=sys.stderr, flush=True)

    if args.memory:
        try:
            with tempfile.TemporaryDirectory(prefix="mask-bench-") as workdir:
                results = measure_memory(args, Path(workdir), log)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        lines, met = memory_lines(results)
        print("\n".join(lines))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return 0 if met else 1
    if args.long_run:
        try:
            result = measure_long_run(args, log)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print("\n".join(long_run_lines(result)))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return 0 if result["growth_mib"] <= TARGETS["long_run_growth_mib"] else 1
    try:
        with tempfile.TemporaryDirectory(prefix="mask-bench-") as workdir:
            results = measure(args, Path(workdir), log)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    lines = (tracking_lines(results["tracking"]) if args.tracking_only else detector_lines(results["detectors"])
             if args.detectors_only else door_lines(results["door"]) if args.door_only else format_table(results))
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.tracking_only:
        return 0 if results["tracking"]["ratio"] >= TARGETS["detect_every_ratio"] else 1
    if args.detectors_only:
        detectors = results["detectors"]
        return 0 if detectors["centerface"]["fps"] >= detectors["res10 640"]["fps"] else 1
    if args.door_only:
        return 0 if min(results["door"]["ratio"].values()) >= TARGETS["door_ratio"] else 1
    return 0 if all(met for _, _, met in target_status(results).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
