"""Shared helpers for tests/test_detect_*.py (not a test module).

Synthetic inputs, a numpy-only stub classifier, the real res10 face detector,
and (slow, cached per process) a small 2020-architecture classifier saved as
.keras, .tflite and Keras-3 .h5.
"""
import atexit
import contextlib
import functools
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import detect_mask_image as image_script  # noqa: E402
import detect_mask_video as video_script  # noqa: E402

SCRIPTS = (image_script, video_script)


def shared_path(*parts):
    """Path under ../shared, or skip the test naming what is missing."""
    import pytest
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data missing: {path} (see ../shared/README.md)")
    return path


@functools.lru_cache(maxsize=None)
def _grace_hopper():
    import matplotlib.cbook
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        data = np.frombuffer(f.read(), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


@functools.lru_cache(maxsize=None)
def _astronaut():
    import skimage.data
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


def grace_hopper():
    """A 600x512 BGR photo with one clear face."""
    return _grace_hopper().copy()


def astronaut():
    """A 512x512 BGR photo with one clear face."""
    return _astronaut().copy()


def write_image(path, image):
    """cv2.imencode + write_bytes, so that any file name works."""
    ok, data = cv2.imencode(Path(path).suffix, image)
    assert ok
    Path(path).write_bytes(data.tobytes())
    return Path(path)


def write_video(path, frames, fps=10.0):
    """An MJPG .avi (or mp4v .mp4) built from BGR frames of equal size."""
    path = Path(path)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def video_frames(n=6, size=(320, 320)):
    """Frames alternating the two sample photos."""
    photos = [cv2.resize(astronaut(), size), cv2.resize(grace_hopper(), size)]
    return [photos[i % 2] for i in range(n)]


class StubClassifier:
    """numpy-only stand-in: P(mask) from the batch's mean; records each call's size."""

    def __init__(self):
        self.calls = []

    def predict(self, batch):
        self.calls.append(len(batch))
        p_mask = np.clip((batch.mean(axis=(1, 2, 3)) + 1.0) / 2.0, 0.0, 1.0)
        return np.stack([p_mask, 1.0 - p_mask], axis=1).astype(np.float32)


@functools.lru_cache(maxsize=None)
def face_net():
    return image_script.load_face_detector()


@functools.lru_cache(maxsize=None)
def centerface():
    """The committed face_detector/centerface.onnx, loaded once."""
    return image_script.load_face_detector(name="centerface")


def use_stub_classifier(monkeypatch, tmp_path):
    """Make both scripts' load_classifier return a StubClassifier; returns a -m path."""
    stub = StubClassifier()
    for script in SCRIPTS:
        monkeypatch.setattr(script, "load_classifier", lambda path, threads=2: stub)
    model = tmp_path / "stub.tflite"
    model.write_bytes(b"")
    return model, stub


def error_lines(text):
    return [line for line in text.splitlines() if line.startswith("error:")]


_model_dir = None


@functools.lru_cache(maxsize=None)
def small_models():
    """Build a 2020-architecture classifier (MobileNetV2 alpha 0.35) once per process.

    Returns {"keras": Path, "tflite": Path, "h5": Path}. Uses the ImageNet weights
    cached in ~/.keras/models when present (weights=None gives near-constant
    outputs that would make the agreement tests vacuous).
    """
    global _model_dir
    import keras
    import tensorflow as tf

    _model_dir = Path(tempfile.mkdtemp(prefix="mask-models-"))
    atexit.register(shutil.rmtree, _model_dir, True)
    keras.utils.set_random_seed(0)
    cached = Path.home() / ".keras/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    base = keras.applications.MobileNetV2(weights="imagenet" if cached.exists() else None,
                                          include_top=False, alpha=0.35, input_shape=(224, 224, 3))
    x = keras.layers.AveragePooling2D(pool_size=(7, 7))(base.output)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(base.input, x)
    paths = {"keras": _model_dir / "small.keras", "tflite": _model_dir / "small.tflite",
             "h5": _model_dir / "small.h5"}
    with warnings.catch_warnings():  # Keras's own saving code trips NumPy 2's __array__ copy warning
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save(paths["keras"])
        model.save(paths["h5"])
    with contextlib.redirect_stdout(sys.stderr):  # the converter prints "Saved artifact at ..." to stdout
        paths["tflite"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return paths


def face_batch():
    """A (2, 224, 224, 3) preprocessed batch of the two sample faces."""
    net = face_net()
    crops = []
    for photo in (grace_hopper(), astronaut()):
        faces = image_script.detect_faces(photo, net, 0.5, [300], 0.4)
        batch, _ = image_script.preprocess_faces(photo, [faces[0][0]])
        crops.append(batch[0])
    return np.stack(crops)


@functools.lru_cache(maxsize=None)
def small_int8_tflite():
    """small_models()'s classifier as full-integer int8 LiteRT (int8 in and out), as training ships it."""
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(small_models()["keras"], compile=False)
    samples = np.concatenate([face_batch(), np.random.default_rng(0).uniform(-1, 1, (6, 224, 224, 3))])

    def representative():
        for sample in samples.astype(np.float32):
            yield [sample[None]]
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path = _model_dir / "small_int8.tflite"
    with warnings.catch_warnings():  # "Statistics for quantized inputs were expected": harmless here
        warnings.simplefilter("ignore", UserWarning)
        path.write_bytes(converter.convert())
    return path
