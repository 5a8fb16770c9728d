"""Train the face-mask classifier: a fine-tuned MobileNetV2 that labels a face crop Mask / No Mask.

Usage:
    python train_mask_detector.py --dataset dataset
    python train_mask_detector.py --dataset dataset --epochs 1 --fine-tune-epochs 0 --weights none --limit 40 \\
        --model /tmp/smoke/mask_detector.keras           # smoke run: about 2 minutes, accuracy at chance
    python train_mask_detector.py --dataset masks_voc     # a PASCAL VOC set: annotations/*.xml + images/
    python train_mask_detector.py --evaluate photos/ scenes/ --model mask_detector.keras
    python train_mask_detector.py --calibrate photos/ scenes/ --model mask_detector.keras   # recalibrate in place
    python train_mask_detector.py --calibrate photos/ --model m.keras -- --face-detector centerface
    python train_mask_detector.py --export-only --model mask_detector.keras      # LiteRT files only
    python train_mask_detector.py --convert mask_detector.model                   # a 2020 model, once

This script learns from face images; it never finds faces. Each --dataset folder is one of:
  * class folders with_mask/ + without_mask/ of face images (the 2020 layout), taken as they are;
  * the same with a manifest.csv (file, source_image, ...), e.g. written by
    ``detect_mask_image.py -i photos --crops DIR``: the crops of one source photo form a group;
  * a PASCAL VOC set (annotations/*.xml + images/): each with_mask / without_mask box is cut out as the detect
    scripts crop a face; other names (mask_weared_incorrect, ...) are skipped and counted.
Every face is resized to 224x224 as the detect scripts resize one.

Recipe: the 2020 PyImageSearch design (MobileNetV2 ImageNet base, head AveragePooling2D(7x7) -> Flatten ->
Dense(128, relu) -> Dropout(0.5) -> Dense(2, softmax), Adam 1e-4, 20 epochs, batch 32) with these changes:
the 80/20 split keeps duplicates, mirrored copies, masked/unmasked twins and the faces of one photo on one
side; "robust" augmentation (mask recolouring, colour, blur, down-and-up scaling, JPEG quality, occlusion);
a short fine-tune of the top MobileNetV2 layers; loss weights that make both classes weigh the same.

--evaluate and --calibrate run ``detect_mask_image.py --json --no-display --model MODEL [options after --]``
on labelled folders (class folders: each photo's most confident face; VOC sets: each annotated face's
detected box at IoU >= 0.5) and score its faces. --calibrate folds into the output layer the Mask log-odds
bias that maximises the folders' mean balanced accuracy, so the model's argmax is the operating point.

Model contract: input RGB 224x224 through keras.applications.mobilenet_v2.preprocess_input
(x / 127.5 - 1); output softmax [P(mask), P(no mask)]; the label is its argmax.

Outputs, all beside --model: the model (Keras 3 ``.keras``), LiteRT files (<stem>.tflite, the first --tflite
variant, and <stem>_<variant>.tflite), plot.png, metrics.json and reports/; none replaced without
--overwrite, each written to a temporary name first. Bad input: one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import cv2
import numpy as np

# --- constants ---------------------------------------------------------------------------------------
CLASS_DIRS = ("with_mask", "without_mask")  # folder and VOC class names; index = model output index
LABELS = ("Mask", "No Mask")
IMAGE_SIZE = (224, 224)  # MobileNetV2 ImageNet input
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Near-duplicate grouping thresholds, set by looking at pairs of the 1,376-image 2020 set (tests/RESULTS.md).
GROUP_PIXEL_CORRELATION = 0.93  # 16x16 grey thumbnails of the upper 40% of the face (mask-free part)
GROUP_FEATURE_COSINE = 0.85  # ImageNet MobileNetV2 features of the same region, mirrored too
# The 2020 recipe's ImageDataGenerator augmentation and head (PyImageSearch, train_mask_detector.py).
ROTATION_DEGREES = 20
ZOOM = 0.15  # fraction
SHIFT = 0.2  # fraction of the width and height
SHEAR = 0.15
DENSE_UNITS = 128
TEST_SIZE = 0.2  # held out, as in 2020: the split keeps 1 in round(1 / this) groups aside, stratified
DROPOUT = 0.5
FINE_TUNE_LAYERS = 19  # top MobileNetV2 layers unfrozen for the fine-tune, BatchNorm not counted (keras-io)
MANIFEST = "manifest.csv"  # file,label,source_image,...: one row per face crop (crops of a photo share a group)
TFLITE_VARIANTS = ("float16", "float32", "int8")  # the first is also <stem>.tflite: int8 moves low Mask
# probabilities by up to 0.30, float16 by < 0.001 (tests/RESULTS.md)
REPRESENTATIVE_SAMPLES = 200  # int8 export: images the converter calibrates its ranges on
DETECT_SCRIPT = "detect_mask_image.py"  # finds and labels the faces --evaluate and --calibrate score
MATCH_IOU = 0.5  # an annotated face is found by a detected box of at least this IoU (PASCAL VOC's rule)
PROBABILITY_FLOOR = 1e-7  # Mask probabilities are clipped to [this, 1 - this] before their log-odds
OPEN_PLATEAU = 1.0  # log-odds: a best plateau beyond the last face (a useless model) counts as this wide
CALIBRATION_MEMBER = "mask_calibration.json"  # added to the .keras zip: the total bias folded in (Keras ignores it)
MODES = ("evaluate", "export_only", "convert", "calibrate")  # at most one; --calibrate with --dataset trains


class UsageError(Exception):
    """Bad input from the user: reported as one `error:` line and exit code 2."""


# --- arguments ---------------------------------------------------------------------------------------
def number(cast, low, low_open=False):
    """An argparse type: `cast` of the text, at least `low` (above it with low_open)."""
    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if cast is int else ' number'}: {text!r}") from None
        if not (low < value if low_open else low <= value):  # NaN fails too
            raise argparse.ArgumentTypeError(f"must lie in {'(' if low_open else '['}{low}, inf], got {value}")
        return value

    return parse


def parse_args(argv=None) -> argparse.Namespace:
    """The options; anything after a lone `--` goes to detect_mask_image.py (--evaluate, --calibrate)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    detect_options = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(
        description="Train the MobileNetV2 face-mask classifier on face images (or evaluate, calibrate, export "
                    "it). Options after a lone -- go to detect_mask_image.py (--evaluate, --calibrate).")
    p.add_argument("-d", "--dataset", nargs="+", metavar="DIR",
                   help="folders of faces: with_mask/ + without_mask/ (with a manifest.csv: crops grouped by "
                        "source photo), or a VOC set (annotations/ + images/) (default: dataset)")
    p.add_argument("-m", "--model", default="mask_detector.keras",
                   help="model to write (or read, without --dataset); the other outputs go beside it "
                        "(default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="let training replace the model and outputs beside it")
    p.add_argument("--tflite", nargs="*", choices=TFLITE_VARIANTS, default=list(TFLITE_VARIANTS), metavar="VARIANT",
                   help=f"LiteRT files to write, any of {', '.join(TFLITE_VARIANTS)} (none: no LiteRT file); the first "
                        "is also <stem>.tflite, which the detect scripts load (default: all three)")
    p.add_argument("--evaluate", nargs="+", metavar="DIR",
                   help="score --model on labelled photos (class folders or VOC sets) as detect_mask_image.py does")
    p.add_argument("--calibrate", nargs="+", metavar="DIR",
                   help="labelled photos like those the detector will see: fold into the model the Mask bias "
                        "that maximises their mean balanced accuracy (after training, or into --model in place)")
    p.add_argument("--export-only", action="store_true", help="write the LiteRT files of --model (no training)")
    p.add_argument("--convert", metavar="PATH",
                   help="convert a legacy 2020 .model/.h5 once: writes <stem>.keras and <stem>.tflite")
    p.add_argument("--epochs", type=number(int, 1), default=20, metavar="N",
                   help="epochs of the head phase (default: 20, as in 2020)")
    p.add_argument("--batch-size", type=number(int, 1), default=32, metavar="N",
                   help="images per step (default: 32, as in 2020)")
    p.add_argument("--learning-rate", type=number(float, 0, low_open=True), default=1e-4,
                   metavar="LR", help="Adam learning rate of the head phase (default: %(default)s, as in 2020)")
    p.add_argument("--augment", choices=("classic", "robust"), default="robust",
                   help="classic: the 2020 flips, rotation, zoom, shift and shear; robust: also mask "
                        "recolouring, colour, blur, down-up scaling, JPEG quality, occlusion (default: %(default)s)")
    p.add_argument("--fine-tune-epochs", type=number(int, 0), metavar="N",
                   help=f"epochs with the top {FINE_TUNE_LAYERS} MobileNetV2 layers unfrozen, 0 for none "
                        "(default: --epochs // 4)")
    p.add_argument("--fine-tune-learning-rate", type=number(float, 0, low_open=True), default=1e-5,
                   metavar="LR", help="Adam learning rate of the fine-tune phase (default: %(default)s)")
    p.add_argument("--weights", choices=("imagenet", "none"), default="imagenet",
                   help="MobileNetV2 start weights; none for quick test runs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, metavar="N",
                   help="seeds Python, NumPy, TensorFlow and the split (default: %(default)s)")
    p.add_argument("--deterministic", action="store_true",
                   help="the same weights from every run with a given --seed (slower: fewer threads)")
    p.add_argument("--limit", type=number(int, 0), default=0, metavar="N",
                   help="use at most N images per class of each folder (a VOC set: N photos); 0 = all")
    p.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's logs")
    args = p.parse_args(argv)
    chosen = [f"--{m.replace('_', '-')}" for m in MODES if getattr(args, m)]
    if len(chosen) > 1:
        p.error(f"{' and '.join(chosen)} are separate modes; give one")
    if detect_options and not (args.evaluate or args.calibrate):
        p.error(f"options after -- ({' '.join(detect_options)}) go to {DETECT_SCRIPT}: only with --evaluate or "
                "--calibrate")
    args.detect_options = detect_options
    if args.fine_tune_epochs is None:
        args.fine_tune_epochs = args.epochs // 4
    args.recalibrate = bool(args.calibrate) and args.dataset is None  # no --dataset: recalibrate --model
    args.dataset = args.dataset or ["dataset"]
    return args


# --- small pure helpers ------------------------------------------------------------------------------
def read_image(path: Path) -> np.ndarray | None:
    """An image file (any name, grey, 16-bit or alpha; EXIF orientation applied) as 8-bit BGR, or None."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return image if image is not None and image.size else None


def clip_box(box, width: int, height: int):
    """Clip (x1, y1, x2, y2) to the frame; None when nothing of it is left (or it is not 4 finite numbers)."""
    try:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    except (TypeError, ValueError, OverflowError):
        return None
    clipped = (max(0, x1), max(0, y1), min(width, x2), min(height, y2))
    if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
        return None
    return clipped


def crop_face(image_bgr: np.ndarray, box=None) -> np.ndarray:
    """A face box of a photo (None: the whole image) as the classifier sees it, as the detect scripts cut and
    resize one: RGB uint8 224x224, INTER_AREA to shrink, INTER_CUBIC to enlarge."""
    crop = image_bgr if box is None else image_bgr[box[1]:box[3], box[0]:box[2]]
    shrinking = crop.shape[1] >= IMAGE_SIZE[0] and crop.shape[0] >= IMAGE_SIZE[1]
    crop = cv2.resize(crop, IMAGE_SIZE, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def preprocess(batch_rgb: np.ndarray) -> np.ndarray:
    """keras.applications.mobilenet_v2.preprocess_input without TensorFlow: [0, 255] -> [-1, 1]."""
    return batch_rgb.astype(np.float32) / 127.5 - 1.0


def group_labels(pairs, count: int) -> np.ndarray:
    """Connected components of `count` items joined by `pairs` -> a group id per item (in order of first item)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, int).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    return connected_components(graph, directed=False)[1]


def upper_thumbnail(image_rgb: np.ndarray, mirror: bool = False) -> np.ndarray:
    """Zero-mean unit-norm 16x16 grey thumbnail of the upper 40% of a face (the part a mask never covers)."""
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    top = grey[: max(1, int(grey.shape[0] * 0.4))]
    if mirror:
        top = top[:, ::-1]
    vector = cv2.resize(top, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    vector -= vector.mean()
    return vector / (np.linalg.norm(vector) + 1e-6)


def similar_pairs(vectors: np.ndarray, mirrored: np.ndarray, threshold: float):
    """Index pairs (i < j) whose vectors (or one mirrored) have a cosine similarity above threshold."""
    from sklearn.metrics.pairwise import cosine_similarity

    similarity = np.maximum(cosine_similarity(vectors), cosine_similarity(vectors, mirrored))
    return list(zip(*np.nonzero(np.triu(similarity > threshold, 1))))


def split_groups(labels: np.ndarray, groups: np.ndarray, test_size: float, seed: int):
    """Stratified split that keeps every group on one side: (train indices, test indices)."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = max(2, int(round(1.0 / test_size)))
    if len(np.unique(groups)) < folds:
        raise UsageError(f"only {len(np.unique(groups))} distinct photo groups: too few to split; add images")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return next(splitter.split(np.zeros(len(labels)), labels, groups))


def mask_region(crop_rgb: np.ndarray) -> np.ndarray:
    """Pixels of a pasted surgical mask in a face crop (light, low-saturation or blue, lower 70%): a rough map
    for recolouring masks during augmentation."""
    hsv = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2HSV).astype(int)
    hue, sat, val = hsv[:, :, 0], hsv[:, :, 1], hsv[:, :, 2]
    light = (sat < 50) & (val > 170)
    blue = (hue > 85) & (hue < 115) & (val > 120) & (sat < 140)
    region = (light | blue).astype(np.uint8)
    region[: int(region.shape[0] * 0.3)] = 0
    return cv2.morphologyEx(region, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))


@contextlib.contextmanager
def replacing(path: Path):
    """Yield a temporary name beside `path` (same suffix: Keras and matplotlib read it); when the block ends
    without an error, rename it to `path`, else delete it. Nothing is ever half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield temp
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


@contextlib.contextmanager
def quiet_native_stderr():
    """Native stderr to /dev/null while TensorFlow loads or LiteRT starts (their C++ log lines), unless --debug
    (main sets TF_CPP_MIN_LOG_LEVEL to 3 without it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3":
            os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def write_bytes(path: Path, data: bytes) -> None:
    with replacing(path) as temp:
        temp.write_bytes(data)


def output_paths(model_path: Path, variants) -> dict:
    """Every file a training run writes, all beside the model: {name: path}."""
    folder = model_path.parent
    paths = {"model": model_path, "plot": folder / "plot.png", "metrics": folder / "metrics.json",
             "reports": folder / "reports"}
    if variants:
        paths["tflite"] = model_path.with_suffix(".tflite")
    paths.update({f"tflite_{v}": model_path.with_name(f"{model_path.stem}_{v}.tflite") for v in variants})
    return paths


def check_outputs(paths: dict, overwrite: bool) -> None:
    """Before any work: the outputs' folder (they share one) writable and, without --overwrite, none there."""
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise UsageError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass --overwrite "
                         "to replace them, or write elsewhere with --model (the other outputs go beside it)")
    for name, path in paths.items():
        if name == "reports" and path.exists() and not path.is_dir():
            raise UsageError(f"{path} is a file; training writes its reports into a folder of that name")
        if name != "reports" and path.is_dir():
            raise UsageError(f"{path} is a folder; give a file name")
    folder = path.parent  # every output lies in this one folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise UsageError(f"cannot write in {folder}: {error.strerror or error}; choose another --model") from None


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, per-class precision / recall / F1 / support and the confusion matrix."""
    from sklearn.metrics import balanced_accuracy_score, classification_report, confusion_matrix

    report = classification_report(y_true, y_pred, labels=[0, 1], target_names=LABELS, output_dict=True,
                                   zero_division=0)
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "per_class": {label: report[label] for label in LABELS},  # precision, recall, f1-score, support
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),  # rows true, columns predicted
    }


# --- data --------------------------------------------------------------------------------------------
def image_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_voc(folder: Path, other_names=None) -> dict:
    """{image path: [(box, label index)]} of the with_mask / without_mask objects of folder/annotations/*.xml;
    other object names (e.g. mask_weared_incorrect) are counted in the Counter other_names. Photos without
    such a face are left out."""
    import xml.etree.ElementTree as ET

    photos = {}
    for xml in sorted((folder / "annotations").glob("*.xml")):
        try:
            root = ET.parse(xml).getroot()
            faces = []
            for item in root.iter("object"):
                name = item.findtext("name")
                if name in CLASS_DIRS:
                    box = tuple(float(item.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                    faces.append((box, CLASS_DIRS.index(name)))
                elif other_names is not None:
                    other_names[name] += 1
        except (ET.ParseError, AttributeError, TypeError, ValueError) as error:
            raise UsageError(f"{xml}: not a VOC annotation with numeric bndbox corners ({error})") from None
        image = folder / "images" / (root.findtext("filename") or f"{xml.stem}.png")
        if faces and image.is_file():
            photos[image] = faces
        elif faces:
            print(f"warning: skipping {xml}: its image {image} not found", file=sys.stderr)
    return photos


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


def load_class_folders(folder: Path, limit: int, data: dict) -> None:
    """Add the face images of folder/with_mask and folder/without_mask to `data` as classifier crops, each
    with its source photo from the folder's manifest.csv (None without one)."""
    if not folder.is_dir():
        raise UsageError(f"dataset folder {folder} not found; it needs with_mask/ and without_mask/ inside "
                         "(or annotations/ + images/ of a VOC set)")
    manifest = read_manifest(folder)
    start = len(data["faces"])
    for label, name in enumerate(CLASS_DIRS):
        if not (folder / name).is_dir():
            raise UsageError(f"{folder / name} not found: the dataset needs both {CLASS_DIRS[0]}/ and {CLASS_DIRS[1]}/")
        kept = 0
        for path in sorted(p for p in (folder / name).iterdir() if p.is_file()):
            if limit and kept >= limit:
                break
            image = read_image(path) if path.suffix.lower() in IMAGE_EXTENSIONS else None
            if image is None:
                data["skipped"].append(str(path))
                print(f"warning: skipping {path}: not a readable image", file=sys.stderr)
                continue
            source = manifest.get(path.resolve())
            data["faces"].append((crop_face(image), label, str(path), None if source is None else f"{folder}:{source}"))
            kept += 1
        if kept == 0:
            raise UsageError(f"{folder / name} holds no readable images; both classes need some")
    data["kinds"].append("face crops with a manifest" if manifest else "face images")
    # One face per photo (face images, or crops of one face each): look for masked/unmasked twins by features.
    sources = [face[3] for face in data["faces"][start:]]
    data["twins"] += [not manifest or len(set(sources)) == len(sources)] * len(sources)


def load_voc(folder: Path, limit: int, data: dict) -> None:
    """Add the with_mask / without_mask faces of a VOC set to `data` as classifier crops, each annotated box
    cut as the detect scripts cut a face box; other object names skipped and counted on stderr."""
    from collections import Counter

    other_names = Counter()
    start = len(data["faces"])
    for path, faces in list(read_voc(folder, other_names).items())[:limit or None]:
        image = read_image(path)
        if image is None:
            data["skipped"].append(str(path))
            print(f"warning: skipping {path}: not a readable image", file=sys.stderr)
            continue
        for box, label in faces:
            box = clip_box(box, image.shape[1], image.shape[0])
            if box is None:
                other_names["(box outside the photo)"] += 1
            else:
                data["faces"].append((crop_face(image, box), label, f"{path} {list(box)}", str(path)))
    if other_names:
        counts = ", ".join(f"{count} {name}" for name, count in sorted(other_names.items()))
        print(f"warning: {folder}: skipped {counts} (only {' and '.join(CLASS_DIRS)} faces train)", file=sys.stderr)
    if len(data["faces"]) == start:
        raise UsageError(f"{folder}: its annotations/*.xml name no {CLASS_DIRS[0]} or {CLASS_DIRS[1]} face "
                         "with a readable image in images/")
    data["kinds"].append("VOC set")
    data["twins"] += [False] * (len(data["faces"]) - start)


def load_datasets(folders, limit: int = 0) -> dict:
    """Every --dataset folder's faces: crops (RGB uint8 224x224), labels, paths, skipped files, each face's
    folder (index into folders) and source photo (None: a photo of its own), and each folder's kind."""
    data = {"faces": [], "skipped": [], "twins": [], "folder": [], "kinds": [], "folders": [str(f) for f in folders]}
    for index, folder in enumerate(folders):
        start = len(data["faces"])
        if (folder / "annotations").is_dir():
            load_voc(folder, limit, data)
        else:
            load_class_folders(folder, limit, data)
        data["folder"] += [index] * (len(data["faces"]) - start)
    faces = data.pop("faces")  # (crop, label, path, source photo)
    data["crops"] = np.array([face[0] for face in faces], np.uint8).reshape(-1, *IMAGE_SIZE, 3)
    data["labels"] = np.array([face[1] for face in faces], int)
    data["paths"] = [face[2] for face in faces]
    data["sources"] = [face[3] for face in faces]
    data["folder"] = np.array(data["folder"], int)
    return data


def find_groups(crops, feature_model=None, sources=None, twins=None) -> np.ndarray:
    """Group exact duplicates, mirrored copies and masked/unmasked twins of the same face (their upper part,
    which a mask never covers: pixels, and MobileNetV2 features of the faces where twins[i] is True, when a
    feature model is given) and the faces of one source photo (sources[i], None for a photo of its own)."""
    first = {}  # exact duplicates, then the faces of one source photo: each joined to the first of its kind
    pairs = [(first.setdefault(hashlib.sha1(crop.tobytes()).digest(), i), i) for i, crop in enumerate(crops)]
    pairs += [(first.setdefault(source, i), i) for i, source in enumerate(sources or []) if source is not None]
    thumbs = np.array([upper_thumbnail(crop) for crop in crops])
    mirrored = np.array([upper_thumbnail(crop, mirror=True) for crop in crops])
    pairs += similar_pairs(thumbs, mirrored, GROUP_PIXEL_CORRELATION)
    chosen = np.flatnonzero(np.ones(len(crops), bool) if twins is None else twins)
    if feature_model is not None and len(chosen):
        top = IMAGE_SIZE[1] * 45 // 100  # the upper 45% of each face, enlarged back as crop_face enlarges
        tops = np.array([cv2.resize(crops[i][:top], IMAGE_SIZE, interpolation=cv2.INTER_CUBIC) for i in chosen])
        features = feature_model.predict(preprocess(tops), batch_size=64, verbose=0)
        features_m = feature_model.predict(preprocess(tops[:, :, ::-1]), batch_size=64, verbose=0)
        pairs += [(chosen[i], chosen[j]) for i, j in similar_pairs(features, features_m, GROUP_FEATURE_COSINE)]
    return group_labels(pairs, len(crops))


# --- model -------------------------------------------------------------------------------------------
def build_model(weights=None, alpha: float = 1.0, dense_units: int = DENSE_UNITS):
    """The 2020 classifier, its base frozen: (model, base). Only legacy models have another alpha or head width."""
    import keras

    inputs = keras.Input(shape=(*IMAGE_SIZE, 3))
    base = keras.applications.MobileNetV2(weights=weights, include_top=False, alpha=alpha, input_tensor=inputs)
    head = keras.layers.AveragePooling2D(pool_size=(7, 7))(base.output)
    head = keras.layers.Flatten()(head)
    head = keras.layers.Dense(dense_units, activation="relu")(head)
    head = keras.layers.Dropout(DROPOUT)(head)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax")(head)
    model = keras.Model(inputs, outputs, name="mask_detector")
    for layer in base.layers:
        layer.trainable = False
    return model, base


def training_data(crops, labels, args):
    """tf.data pipeline of the training side: augmented RGB crops -> preprocess_input, one-hot labels and
    per-image loss weights that give both classes the same total (scikit-learn's "balanced" rule)."""
    import keras
    import tensorflow as tf
    from sklearn.utils.class_weight import compute_sample_weight

    regions = np.array([mask_region(c) if y == 0 else np.zeros(IMAGE_SIZE, np.uint8) for c, y in zip(crops, labels)])
    onehot = np.eye(2, dtype=np.float32)[labels]
    weights = compute_sample_weight("balanced", labels).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((crops, regions, onehot, weights))
    robust = args.augment == "robust"
    seed = args.seed
    layers = [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(ROTATION_DEGREES / 360.0, fill_mode="nearest", seed=seed),
        keras.layers.RandomZoom(ZOOM, fill_mode="nearest", seed=seed),
        keras.layers.RandomTranslation(SHIFT, SHIFT, fill_mode="nearest", seed=seed),
        keras.layers.RandomShear(x_factor=SHEAR, y_factor=SHEAR, fill_mode="nearest", seed=seed),
    ]
    if robust:
        layers += [
            keras.layers.RandomBrightness(0.25, value_range=(0, 255), seed=seed),
            keras.layers.RandomContrast(0.3, value_range=(0, 255), seed=seed),
            keras.layers.RandomSaturation((0.3, 0.7), value_range=(0, 255), seed=seed),
            keras.layers.RandomGrayscale(0.1, seed=seed),
        ]
    geometric = keras.Sequential(layers, name="augment")

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

    data = data.shuffle(len(crops), seed=seed, reshuffle_each_iteration=True)
    data = data.map(photometric, num_parallel_calls=tf.data.AUTOTUNE).batch(args.batch_size)

    def batch_augment(images, labels_, weights_):
        images = geometric(images, training=True)
        if robust:
            blur = tf.image.resize(tf.image.resize(images, [112, 112], antialias=True), IMAGE_SIZE)
            images = tf.where(tf.random.uniform([]) < 0.2, blur, images)
        return tf.clip_by_value(images, 0.0, 255.0) / 127.5 - 1.0, labels_, weights_

    return data.map(batch_augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# --- outputs -----------------------------------------------------------------------------------------
def pyplot():
    """matplotlib.pyplot drawing into files only (the Agg backend: no window, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> None:
    """Write a matplotlib figure to path (replacing) and close it."""
    figure.tight_layout()
    try:
        with replacing(path) as temp:
            figure.savefig(temp, dpi=100)
    finally:
        pyplot().close(figure)


def save_plot(history: dict, path: Path, fine_tune_start: int | None) -> None:
    plt = pyplot()
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


def save_model(model, path: Path, calibration: dict | None = None) -> None:
    """model.save() (replacing); `calibration` goes into the zip as CALIBRATION_MEMBER."""
    import zipfile

    with replacing(path) as temp:
        model.save(temp)
        if calibration is not None:
            with zipfile.ZipFile(temp, "a") as archive:
                archive.writestr(CALIBRATION_MEMBER, json.dumps(calibration))


def save_confusion(metrics: dict, y_true, y_pred, path: Path) -> None:
    """scikit-learn's confusion-matrix display of the predictions, titled with the accuracy."""
    from sklearn.metrics import ConfusionMatrixDisplay

    pyplot()

    display = ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=[0, 1], display_labels=LABELS,
                                                      cmap="Blues", colorbar=False)
    display.ax_.set_title(f"accuracy {metrics['accuracy']:.4f}")
    save_figure(display.figure_, path)


def save_mistakes(crops, predicted, probabilities, wrong, path: Path) -> None:
    """A gallery of up to 48 misclassified faces (RGB crops), each titled with its label and probability."""
    rows = max(1, math.ceil(len(wrong[:48]) / 8))
    figure, axes = pyplot().subplots(rows, 8, figsize=(12, 1.7 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, wrong[:48]):
        axis.imshow(crops[index])
        axis.set_title(f"{LABELS[predicted[index]]} {probabilities[index, predicted[index]]:.2f}", fontsize=8)
    if not len(wrong):
        axes[0, 0].set_title("no mistakes")
    save_figure(figure, path)


def tflite_bytes(model, variant: str, representative: np.ndarray) -> bytes:
    """Convert the Keras model to LiteRT (via SavedModel, the route LiteRT recommends): float32, float16
    weights, or full-integer int8 with its ranges taken from the representative RGB crops."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as folder:
        model.export(folder, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        if variant == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif variant == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([preprocess(image[None])] for image in representative)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        with quiet_native_stderr():  # the converter prints its settings from C++
            return converter.convert()


def write_metrics(path: Path, metrics: dict, started: float) -> None:
    """metrics.json: `metrics` with the command line and the seconds since `started`."""
    metrics["command"] = "python " + " ".join([Path(sys.argv[0]).name] + sys.argv[1:])
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_bytes(path, (json.dumps(metrics, indent=2) + "\n").encode())


def representative_sample(count: int, seed: int) -> np.ndarray:
    """Indices of up to REPRESENTATIVE_SAMPLES of `count` images, drawn at random: int8 export's ranges."""
    return np.random.default_rng(seed).permutation(count)[:REPRESENTATIVE_SAMPLES]


def export_tflite(model, model_path: Path, variants, representative) -> dict:
    """Write <stem>_<variant>.tflite for each variant, the first also as <stem>.tflite."""
    results = {}
    paths = output_paths(model_path, variants)
    for variant in variants:
        data = tflite_bytes(model, variant, representative)
        for path in [paths[f"tflite_{variant}"]] + ([paths["tflite"]] if variant == variants[0] else []):
            write_bytes(path, data)
            print(f"[INFO] wrote {path} ({len(data) / 1e6:.1f} MB)")
        results[variant] = {"path": str(paths[f"tflite_{variant}"]), "bytes": len(data)}
    return results


def existing_model(path: Path) -> Path:
    if not path.is_file():
        raise UsageError(f"model {path} not found; train one with: python train_mask_detector.py")
    return path


def load_keras_model(path: Path):
    existing_model(path)
    import keras

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


# --- --evaluate and --calibrate: the image script's faces ------------------------------------------
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


def balanced_accuracies(log_odds: np.ndarray, labels: np.ndarray, biases) -> np.ndarray:
    """Balanced accuracy of the rule "Mask iff log-odds + bias >= 0" at each bias (label 0 = Mask)."""
    masked = np.sort(log_odds[labels == 0])
    bare = np.sort(log_odds[labels == 1])
    cut = -np.asarray(biases, float)
    mask_recall = 1.0 - np.searchsorted(masked, cut, side="left") / len(masked)
    bare_recall = np.searchsorted(bare, cut, side="left") / len(bare)
    return (mask_recall + bare_recall) / 2


def choose_bias(sets):
    """The Mask log-odds bias that maximises the mean over `sets` [(log-odds, labels)] of each set's balanced
    accuracy: the middle of the widest best plateau (ties: the one nearer 0), so that the choice does not hang
    on one face; shifting every log-odds by c shifts it by -c. Returns (bias, (plateau low, high), best mean)."""
    edges = np.unique(np.concatenate([-s for s, _ in sets]))
    edges = np.concatenate([[edges[0] - OPEN_PLATEAU], edges, [edges[-1] + OPEN_PLATEAU]])
    middles = (edges[:-1] + edges[1:]) / 2  # the score is constant between two edges
    score = np.mean([balanced_accuracies(s, y, middles) for s, y in sets], axis=0)
    best = np.flatnonzero(score >= score.max() - 1e-12)
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)  # consecutive best intervals: one plateau
    low, high = max(((edges[r[0]], edges[r[-1] + 1]) for r in runs),
                    key=lambda span: (span[1] - span[0], -abs(span[0] + span[1])))
    return float((low + high) / 2), (float(low), float(high)), float(score.max())



def box_iou(a, b) -> float:
    overlap = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def match_boxes(truth, detected) -> list:
    """For each annotated box the index of its detected box (IoU >= MATCH_IOU), or None: one-to-one, best IoU
    first."""
    pairs = sorted(((box_iou(t, d), i, j) for i, t in enumerate(truth) for j, d in enumerate(detected)), reverse=True)
    match = [None] * len(truth)
    used = set()
    for overlap, i, j in pairs:
        if overlap >= MATCH_IOU and match[i] is None and j not in used:
            match[i] = j
            used.add(j)
    return match


def labelled_folder(folder: Path, option: str, limit: int = 0) -> dict:
    """The labelled photos of an --evaluate / --calibrate folder, checked before any work: {"layout": "voc" or
    "photos", "photos": [(path, truth)]}, truth a photo's label or a VOC photo's [(box, label)]."""
    where = f"{option} {folder}"
    if not folder.is_dir():
        raise UsageError(f"{where}: folder not found")
    if (folder / "annotations").is_dir():
        photos = list(read_voc(folder).items())[:limit or None]
        classes = {label for _, faces in photos for _, label in faces}
        if len(classes) < 2:
            found = f"{CLASS_DIRS[classes.pop()]} faces only" if classes else "no with_mask / without_mask face"
            raise UsageError(f"{where}: annotations/*.xml name {found} with an image in images/; both are needed")
        return {"layout": "voc", "photos": photos}
    if not any(folder.iterdir()):
        raise UsageError(f"{where}: the folder is empty; it needs {CLASS_DIRS[0]}/ and {CLASS_DIRS[1]}/ of photos "
                         "(or annotations/ + images/ of a VOC set)")
    for name in CLASS_DIRS:
        if not (folder / name).is_dir() or not image_files(folder / name):
            raise UsageError(f"{where}: no photos in {name}/; both {CLASS_DIRS[0]}/ and {CLASS_DIRS[1]}/ need some "
                             "(or give a VOC set: annotations/ + images/)")
    photos = [(path, label) for label in (0, 1) for path in image_files(folder / CLASS_DIRS[label])[:limit or None]]
    return {"layout": "photos", "photos": photos}


def scored_faces(folder: dict, detections: dict) -> dict:
    """The labelled faces of one folder (labelled_folder) the image script found (its detections): each
    photo's most confident face, or each annotated face's detected box at IoU >= MATCH_IOU. {"labels",
    "mask_probability", "predicted" (its label), "faces" [(photo, box)], "missed" per class}."""
    found = {"labels": [], "mask_probability": [], "predicted": [], "faces": [], "missed": [0, 0]}
    for path, truth in folder["photos"]:
        faces = detections.get(str(path), [])
        if folder["layout"] == "voc":
            match = match_boxes([box for box, _ in truth], [face["box"] for face in faces])
            pairs = [(faces[j] if j is not None else None, label) for (_, label), j in zip(truth, match)]
        else:
            pairs = [(faces[0] if faces else None, truth)]
        for face, label in pairs:
            if face is None:
                found["missed"][label] += 1
                continue
            found["labels"].append(label)
            found["mask_probability"].append(face["mask_probability"])
            found["predicted"].append(LABELS.index(face["label"]))
            found["faces"].append((str(path), face["box"]))
    return {key: np.array(value) if key in ("labels", "mask_probability", "predicted") else value
            for key, value in found.items()}


def mask_log_odds(probability: np.ndarray) -> np.ndarray:
    """log(P / (1 - P)) of Mask probabilities, clipped to [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]."""
    probability = np.clip(np.asarray(probability, np.float64), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return np.log(probability) - np.log1p(-probability)


def folder_faces(folders: dict, model_path: Path, options, option: str) -> dict:
    """{folder: scored_faces} of every labelled folder: `detect_mask_image.py --json` (beside this script:
    labelled_folders checked it is there) run once with this model and its `options` over all their photos."""
    photos = [str(path) for folder in folders.values() for path, _ in folder["photos"]]
    script = Path(__file__).resolve().with_name(DETECT_SCRIPT)
    command = [sys.executable, str(script), "--json", "--no-display", "--model", str(model_path), *options, "-i"]
    done = subprocess.run(command + photos, capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise UsageError(f"{DETECT_SCRIPT}: {reason.split('error: ', 1)[-1]}")  # its "error:" or argparse's
    results = (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    detections = {result["image"]: result["faces"] for result in results}  # photo: its faces, best first
    sets = {}
    for name, folder in folders.items():
        sets[name] = scored_faces(folder, detections)
        faces = sets[name]
        if option == "--calibrate" and len(set(faces["labels"].tolist())) < 2:
            raise UsageError(f"{option} {name}: {DETECT_SCRIPT} found "
                             + (f"{CLASS_DIRS[faces['labels'][0]]} faces only" if len(faces["labels"]) else "no face")
                             + f" in its {len(folder['photos'])} photos; a balanced accuracy needs both classes")
        print(f"[INFO] {name}: {DETECT_SCRIPT} found {len(faces['labels'])} labelled faces, missed "
              f"{sum(faces['missed'])}", file=sys.stderr)
    return sets


def calibrate(model, sets: dict, previous_bias: float = 0.0) -> dict:
    """Choose the Mask bias on the faces the image script found with this model (sets: {folder: scored_faces})
    by choose_bias, and fold it into the model; the metrics.json "calibration" entry."""
    odds = {name: mask_log_odds(faces["mask_probability"]) for name, faces in sets.items()}
    bias, plateau, _ = choose_bias([(odds[name], faces["labels"]) for name, faces in sets.items()])
    fold_mask_bias(model, bias)
    per_folder = {}
    for name, faces in sets.items():
        before, after = balanced_accuracies(odds[name], faces["labels"], [0.0, bias])
        per_folder[name] = {
            "faces": int(len(faces["labels"])), "faces_per_class": np.bincount(faces["labels"], minlength=2).tolist(),
            "without_detection": int(sum(faces["missed"])),
            "balanced_accuracy_before": float(before), "balanced_accuracy_after": float(after)}
    mean = {when: float(np.mean([f[f"balanced_accuracy_{when}"] for f in per_folder.values()]))
            for when in ("before", "after")}
    total = previous_bias + bias
    print(f"[INFO] calibration: Mask bias {bias:+.3f} (plateau {plateau[0]:+.3f} to {plateau[1]:+.3f}), total "
          f"{total:+.3f}; mean balanced accuracy {mean['before']:.4f} -> {mean['after']:.4f}")
    return {"bias": bias, "plateau": list(plateau), "threshold_equivalent": float(1 / (1 + np.exp(bias))),
            "previous_bias": previous_bias, "total_bias": total, "mean_balanced_accuracy_before": mean["before"],
            "mean_balanced_accuracy_after": mean["after"], "per_folder": per_folder}


def folded_bias(path: Path) -> float:
    """The total Mask bias --calibrate folded into a .keras file (0 for a file never calibrated)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return float(json.loads(archive.read(CALIBRATION_MEMBER))["mask_bias"])
    except (OSError, zipfile.BadZipFile, KeyError, TypeError, ValueError):  # KeyError: no such member
        return 0.0


# --- modes -------------------------------------------------------------------------------------------
def labelled_folders(folders, option: str, limit: int) -> dict:
    """{folder: labelled_folder} of --evaluate / --calibrate, checked before any work (the image script too)."""
    script = Path(__file__).resolve().with_name(DETECT_SCRIPT)
    if folders and not script.is_file():
        raise UsageError(f"{script} not found: {option} scores the faces it finds; put it beside this script")
    return {str(folder): labelled_folder(Path(folder), option, limit) for folder in folders or []}


def evaluate(args) -> int:
    """--evaluate: score --model on labelled folders with the faces and labels of the image script."""
    model_path = existing_model(Path(args.model))
    folders = labelled_folders(args.evaluate, "--evaluate", args.limit)
    report_dir = output_paths(model_path, [])["reports"]
    check_outputs({"reports": report_dir}, overwrite=True)
    sets = folder_faces(folders, model_path, args.detect_options, "--evaluate")
    for name, faces in sets.items():
        truth = faces["labels"]
        metrics = classification_metrics(truth, faces["predicted"])
        metrics.update({"folder": name, "model": str(model_path), "detect_options": args.detect_options,
                        "faces": int(len(truth)), "without_detection": int(sum(faces["missed"])),
                        "without_detection_per_class": faces["missed"]})
        wrong = np.flatnonzero(truth != faces["predicted"])
        metrics["mistakes"] = [{"photo": faces["faces"][i][0], "box": faces["faces"][i][1], "true": LABELS[truth[i]],
                                "mask_probability": float(faces["mask_probability"][i])} for i in wrong]
        stem = f"evaluate_{Path(name).name or 'folder'}"
        save_confusion(metrics, truth, faces["predicted"], report_dir / f"{stem}_confusion.png")
        write_bytes(report_dir / f"{stem}.json", json.dumps(metrics, indent=2).encode())
        print(json.dumps({key: value for key, value in metrics.items() if key != "mistakes"}))
    return 0


def export_only(args) -> int:
    """--export-only: the LiteRT files of --model (int8's ranges from --dataset's faces)."""
    model_path = Path(args.model)
    model = load_keras_model(model_path)
    representative = np.zeros((0, *IMAGE_SIZE, 3), np.uint8)
    if "int8" in args.tflite:  # its ranges come from --dataset's faces
        crops = load_datasets([Path(d) for d in args.dataset], args.limit)["crops"]
        representative = crops[representative_sample(len(crops), args.seed)]
    export_tflite(model, model_path, args.tflite, representative)
    return 0


def recalibrate(args) -> int:
    """--calibrate without --dataset: fold a (further) Mask bias into --model, rewrite it and its LiteRT files."""
    started = time.perf_counter()
    model_path = Path(args.model)
    if model_path.suffix != ".keras":
        raise UsageError(f"--model {model_path}: --calibrate rewrites a Keras '.keras' model (its LiteRT files follow)")
    folders = labelled_folders(args.calibrate, "--calibrate", args.limit)
    paths = output_paths(model_path, args.tflite)
    check_outputs(paths, overwrite=True)  # rewriting --model and its LiteRT files is what this mode is for
    model = load_keras_model(model_path)
    sets = folder_faces(folders, model_path, args.detect_options, "--calibrate")
    info = calibrate(model, sets, folded_bias(model_path))
    save_model(model, model_path, {"mask_bias": info["total_bias"]})
    faces = [face for found in sets.values() for face in found["faces"]] if "int8" in args.tflite else []
    chosen = [faces[i] for i in representative_sample(len(faces), args.seed)]
    crops = [crop_face(read_image(Path(path)), box) for path, box in chosen]  # the script's boxes lie in the photo
    representative = np.array(crops, np.uint8).reshape(-1, *IMAGE_SIZE, 3)
    tflite = export_tflite(model, model_path, args.tflite, representative)
    metrics = {"model": str(model_path), "calibration": info, "tflite": tflite}
    write_metrics(paths["metrics"], metrics, started)
    print(f"[INFO] rewrote {model_path} (total Mask bias {info['total_bias']:+.3f}) and {len(tflite)} LiteRT files; "
          f"wrote {paths['metrics']} in {metrics['wall_seconds']:.0f} s")
    return 0


def train(args) -> int:
    started = time.perf_counter()
    model_path = Path(args.model)
    if model_path.suffix != ".keras":
        raise UsageError(f"--model {model_path}: Keras 3 saves to a '.keras' file; use e.g. mask_detector.keras")
    calibration_folders = labelled_folders(args.calibrate, "--calibrate", args.limit)  # before the long training
    paths = output_paths(model_path, args.tflite)
    check_outputs(paths, args.overwrite)

    print("[INFO] loading faces...")
    dataset = load_datasets([Path(d) for d in args.dataset], args.limit)
    crops = dataset["crops"]
    labels = dataset["labels"]
    for index, folder in enumerate(dataset["folders"]):
        mine = labels[dataset["folder"] == index]
        print(f"[INFO] {folder}: {len(mine)} faces ({np.sum(mine == 0)} with mask, {np.sum(mine == 1)} without), "
              f"{dataset['kinds'][index]}")
    print(f"[INFO] {len(labels)} faces ({np.sum(labels == 0)} with mask, {np.sum(labels == 1)} without); "
          f"{len(dataset['skipped'])} unreadable files skipped")
    if len(labels) < 4 or len(set(labels.tolist())) < 2:
        raise UsageError(f"only {len(labels)} readable faces of {len(set(labels.tolist()))} class(es) in "
                         f"{' '.join(args.dataset)}: too few to split into train and test")

    import keras

    keras.utils.set_random_seed(args.seed)  # Python, NumPy and TensorFlow
    if args.deterministic:  # else the parallel augmentation pipeline and multithreaded kernels make runs differ
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    feature_model = None
    if args.weights == "imagenet":
        feature_model = keras.applications.MobileNetV2(include_top=False, input_shape=(*IMAGE_SIZE, 3), pooling="avg")
    groups = find_groups(crops, feature_model, dataset["sources"], dataset["twins"])
    train_index, test_index = split_groups(labels, groups, TEST_SIZE, args.seed)
    print(f"[INFO] {len(np.unique(groups))} groups (duplicates, mirrored copies, masked/unmasked twins and the faces "
          f"of one photo); split {len(train_index)} train / {len(test_index)} held out, no group on both sides")
    held_out = preprocess(crops[test_index])
    validation = (held_out, np.eye(2, dtype=np.float32)[labels[test_index]])
    train_data = training_data(crops[train_index], labels[train_index], args)

    model, base = build_model(None if args.weights == "none" else "imagenet")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    print(f"[INFO] training head for {args.epochs} epochs...")
    history = model.fit(train_data, validation_data=validation, validation_batch_size=args.batch_size,
                        epochs=args.epochs, verbose=2).history
    fine_tune_start = None
    if args.fine_tune_epochs:
        unfrozen = [layer for layer in base.layers if not isinstance(layer, keras.layers.BatchNormalization)]
        for layer in unfrozen[-FINE_TUNE_LAYERS:]:
            layer.trainable = True
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=args.fine_tune_learning_rate),
                      loss="categorical_crossentropy", metrics=["accuracy"])
        print(f"[INFO] fine-tuning the top {FINE_TUNE_LAYERS} MobileNetV2 layers for {args.fine_tune_epochs} epochs...")
        more = model.fit(train_data, validation_data=validation, validation_batch_size=args.batch_size,
                         epochs=args.fine_tune_epochs, verbose=2).history
        fine_tune_start = len(history["loss"])
        for key, values in more.items():
            history[key].extend(values)
    trained = model
    model = build_model()[0]  # the same weights, uncompiled: saved without optimizer state (60% smaller)
    model.set_weights(trained.get_weights())
    calibration = None
    if calibration_folders:
        with tempfile.TemporaryDirectory() as folder:  # the image script scores the model as trained
            save_model(model, Path(folder) / model_path.name)
            sets = folder_faces(calibration_folders, Path(folder) / model_path.name, args.detect_options, "--calibrate")
        calibration = calibrate(model, sets)

    probabilities = model.predict(held_out, batch_size=args.batch_size, verbose=0)
    predicted = probabilities.argmax(axis=1)
    truth = labels[test_index]
    metrics = classification_metrics(truth, predicted)
    in_folder = dataset["folder"][test_index]
    metrics["per_folder"] = {folder: classification_metrics(truth[in_folder == k], predicted[in_folder == k])
                             for k, folder in enumerate(dataset["folders"]) if np.any(in_folder == k)}
    wrong = np.flatnonzero(truth != predicted)
    metrics["mistakes"] = [{"path": dataset["paths"][test_index[i]], "true": LABELS[truth[i]],
                            "mask_probability": float(probabilities[i, 0])} for i in wrong]

    print(f"[INFO] saving model to {model_path}...")
    save_model(model, model_path, {"mask_bias": calibration["total_bias"]} if calibration else None)
    save_plot(history, paths["plot"], fine_tune_start)
    save_confusion(metrics, truth, predicted, paths["reports"] / "held_out_confusion.png")
    save_mistakes(crops[test_index], predicted, probabilities, wrong, paths["reports"] / "held_out_mistakes.png")
    representative = crops[train_index][representative_sample(len(train_index), args.seed)]
    tflite = export_tflite(model, model_path, args.tflite, representative)
    metrics.update({
        "split": {"train": int(len(train_index)), "held_out": int(len(test_index))},
        "groups": int(len(np.unique(groups))),
        "faces": int(len(labels)), "skipped_files": len(dataset["skipped"]),
        "folders": dict(zip(dataset["folders"], dataset["kinds"])),
        "seed": args.seed, "recipe": {k: v for k, v in vars(args).items() if k != "debug"},
        "tflite": tflite, "calibration": calibration,
    })
    write_metrics(paths["metrics"], metrics, started)
    print(f"[INFO] held-out accuracy {metrics['accuracy']:.4f} (balanced {metrics['balanced_accuracy']:.4f}); "
          f"wrote {model_path}, {paths['plot']}, {paths['metrics']} and {paths['reports']}/ "
          f"in {metrics['wall_seconds']:.0f} s")
    if args.weights == "none":
        print("[INFO] --weights none starts from random weights: a short run's accuracy is expected to be near "
              "chance (0.5); such a run checks the pipeline, not the model")
    return 0


# --- legacy 2020 models (--convert) ------------------------------------------------------------------
LEGACY_SUFFIXES = (".h5", ".hdf5", ".model")  # HDF5 files saved by tf.keras 2.x (the 2020 tutorial's .model)
# Output width of MobileNetV2's block_16_project for each alpha (to rebuild a legacy model's base).
ALPHA_BY_CHANNELS = {112: 0.35, 160: 0.5, 240: 0.75, 320: 1.0, 416: 1.3, 448: 1.4}


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
    dense = [arrays[0].shape for _, _, arrays in saved if arrays[0].ndim == 2]
    project = [arrays[0].shape[-1] for name, _, arrays in saved if name == "block_16_project"]
    model, _ = build_model(None, ALPHA_BY_CHANNELS.get(project[0] if project else 320, 1.0),
                           dense[0][1] if len(dense) == 2 else DENSE_UNITS)
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
    keras_path = source.with_suffix(".keras")
    tflite_path = source.with_suffix(".tflite")
    if source.suffix.lower() not in LEGACY_SUFFIXES:
        raise UsageError(f"--convert {source}: expected a legacy {'/'.join(LEGACY_SUFFIXES)} file")
    if not source.is_file():
        raise UsageError(f"--convert {source}: no such file; pass the legacy .model/.h5 classifier")
    check_outputs({"model": keras_path, "tflite": tflite_path}, args.overwrite)
    model = load_legacy_model(source)
    probe = model.predict_on_batch(np.zeros((1, *IMAGE_SIZE, 3), np.float32))
    if not np.allclose(np.sum(probe), 1.0, atol=1e-3):
        raise UsageError(f"{source}: output {np.round(probe, 4).tolist()} for a blank face is not a softmax")
    save_model(model, keras_path)
    write_bytes(tflite_path, tflite_bytes(model, "float16", np.zeros((0, *IMAGE_SIZE, 3), np.uint8)))
    print(f"[INFO] wrote {keras_path} and {tflite_path} (float16); the detect scripts load either")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.debug:  # no CUDA, oneDNN or absl lines on a CPU machine, no Keras notes on its own layers
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        warnings.filterwarnings("ignore", category=UserWarning)
    try:
        if not args.evaluate:  # every other mode runs TensorFlow: load it quietly, once
            with quiet_native_stderr():
                import keras  # noqa: F401
        modes = {"evaluate": evaluate, "export_only": export_only, "convert": convert_legacy,
                 "recalibrate": recalibrate}
        for mode, run in modes.items():
            if getattr(args, mode):
                return run(args)
        return train(args)
    except KeyboardInterrupt:
        print("error: interrupted; no output was half-written", file=sys.stderr)
        return 130
    except Exception as error:  # bad input (UsageError) or unexpected: one line unless --debug
        if args.debug:
            traceback.print_exc()
        if isinstance(error, UsageError):
            print(f"error: {error}", file=sys.stderr)
            return 2
        text = (str(error).strip().splitlines() or [""])[-1]  # one line, as the detect scripts do
        print(f"error: {type(error).__name__}: {text} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
