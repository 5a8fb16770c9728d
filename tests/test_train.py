"""Tests of train_mask_detector.py: pure helpers, argument and input errors, a tiny real training run,
and (slow, with ../shared) the committed model on the held-out side of the grouped split."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

import train_mask_detector as train

REPO = Path(__file__).resolve().parents[1]


# --- pure helpers -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "box, expected",
    [
        ((10, 20, 50, 60), (10, 20, 50, 60)),
        ((-5, -5, 30, 30), (0, 0, 30, 30)),
        ((90, 90, 150, 150), (90, 90, 100, 100)),
        ((120, 120, 150, 150), None),  # wholly outside
        ((40, 40, 40, 60), None),  # empty
        ((50, 50, 10, 10), None),  # inverted
    ],
)
def test_clip_box(box, expected):
    assert train.clip_box(box, 100, 100) == expected


def test_preprocess_matches_hand_computed_values():
    batch = np.array([[[[0, 127.5, 255]]]], dtype=np.float32)
    np.testing.assert_allclose(train.preprocess(batch), [[[[-1.0, 0.0, 1.0]]]])


def test_to_bgr8_handles_grey_rgba_16bit_and_float():
    assert train.to_bgr8(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert train.to_bgr8(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
    sixteen = train.to_bgr8(np.full((5, 6, 3), 65535, np.uint16))
    assert sixteen.dtype == np.uint8 and sixteen.max() == 255
    assert train.to_bgr8(np.ones((2, 2), np.float32)).max() == 255


def test_group_labels_joins_chains_only():
    ids = train.group_labels([(0, 1), (1, 2), (4, 5)], 6)
    assert ids[0] == ids[1] == ids[2]
    assert ids[4] == ids[5]
    assert len({ids[0], ids[3], ids[4]}) == 3


def test_upper_thumbnail_sees_mirrored_copies_and_ignores_the_lower_face():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (100, 80, 3), dtype=np.uint8)
    masked = photo.copy()
    masked[60:] = 230  # a "mask" over the lower face
    mirrored = photo[:, ::-1].copy()
    vector = train.upper_thumbnail(photo)
    assert float(vector @ train.upper_thumbnail(masked)) > 0.99
    assert float(vector @ train.upper_thumbnail(mirrored, mirror=True)) > 0.99
    assert float(vector @ train.upper_thumbnail(rng.integers(0, 255, (100, 80, 3), dtype=np.uint8))) < 0.5


def test_split_keeps_every_group_on_one_side_and_stratifies():
    labels = np.array([0, 1] * 50)
    groups = np.arange(100) // 4  # 25 groups of 4
    train_index, test_index = train.split_groups(labels, groups, 0.2, seed=1)
    assert not set(groups[train_index]) & set(groups[test_index])
    assert len(test_index) == 20
    assert set(labels[test_index]) == {0, 1}


def test_split_with_too_few_groups_is_a_usage_error():
    with pytest.raises(train.UsageError, match="too few"):
        train.split_groups(np.array([0, 1, 0, 1]), np.array([0, 0, 0, 0]), 0.2, seed=1)


def test_mask_region_finds_a_light_blue_mask_on_the_lower_face():
    crop = np.full((224, 224, 3), (150, 110, 90), np.uint8)  # skin-ish RGB
    crop[120:200, 40:180] = (170, 210, 235)  # light blue
    region = train.mask_region(crop)
    assert region[150:190, 60:160].mean() > 0.95
    assert region[:60].sum() == 0


class TwoLookNet:
    """A stand-in for res10: `first` rows (score, x1, y1, x2, y2 in 0-1) for the photo as given, `framed`
    rows for every later input (the photo inside its black border)."""

    def __init__(self, first, framed):
        self.looks = [first, framed]
        self.inputs = []

    def setInput(self, blob):  # noqa: N802 - OpenCV's name
        self.inputs.append(blob.shape[2:])

    def forward(self):
        rows = self.looks[min(len(self.inputs), 2) - 1]
        return np.array([[[[0, 1, *row] for row in rows] or [[0] * 7]]], np.float32)


def test_a_corner_box_on_a_close_up_gives_way_to_the_whole_face():
    photo = np.full((100, 100, 3), 90, np.uint8)
    # The corner box (45, 40)-(100, 100) touches the edge; border 0.25 frames the photo at (25, 25) in a
    # 150x150 input, where the whole face (27, 27)-(123, 123) is (2, 2)-(98, 98) in the photo.
    corner, whole = (0.999, 0.45, 0.40, 1.0, 1.0), (0.95, 27 / 150, 27 / 150, 123 / 150, 123 / 150)
    net = TwoLookNet([corner], [whole])
    assert train.most_confident_face(net, photo, 0.5, border=0.25) == (2, 2, 98, 98)
    assert net.inputs == [(300, 300), (300, 300)]
    # border 0 (the default): the first look only, corner box and all
    net = TwoLookNet([corner], [whole])
    assert train.most_confident_face(net, photo, 0.5) == (45, 40, 100, 100)
    assert len(net.inputs) == 1


def test_the_border_look_runs_when_nothing_is_found_and_not_for_a_face_inside_the_photo():
    photo = np.full((100, 100, 3), 90, np.uint8)
    whole = (0.9, 30 / 150, 30 / 150, 120 / 150, 120 / 150)  # (5, 5)-(95, 95) in the photo at border 0.25
    assert train.most_confident_face(TwoLookNet([], [whole]), photo, 0.5, border=0.25) == (5, 5, 95, 95)
    assert train.most_confident_face(TwoLookNet([], [whole]), photo, 0.5) is None
    inside = TwoLookNet([(0.9, 0.3, 0.3, 0.6, 0.6)], [whole])
    assert train.most_confident_face(inside, photo, 0.5, border=0.25) == (30, 30, 60, 60)
    assert len(inside.inputs) == 1
    # a face found first keeps the border look to close-ups (spanning 0.3 of the shorter side)
    small = (0.99, 60 / 150, 60 / 150, 80 / 150, 80 / 150)
    first = TwoLookNet([(0.8, 0.0, 0.3, 0.4, 0.7)], [small])
    assert train.most_confident_face(first, photo, 0.5, border=0.25) == (0, 30, 40, 70)
    assert len(first.inputs) == 2  # the face touches the edge, so the border look ran


def test_face_border_flag_is_off_by_default_and_shares_the_detect_scripts_values():
    import detect_mask_image

    assert train.parse_args([]).face_border == train.DEFAULT_FACE_BORDER == 0.0  # the committed recipe
    assert train.parse_args(["--face-border", "0.3"]).face_border == detect_mask_image.DEFAULT_BORDER
    assert train.EDGE_MARGIN == detect_mask_image.EDGE_MARGIN
    assert (train.CLOSE_UP_MIN_FACE, train.CONTAINED_FRACTION) == (detect_mask_image.CLOSE_UP_MIN_FACE,
                                                                  detect_mask_image.CONTAINED_FRACTION)


def test_read_image_applies_the_exif_orientation(tmp_path):
    """A phone photo stored landscape with EXIF orientation 6 (rotate 90 degrees) reads portrait, as the
    detect scripts read it (IMREAD_UNCHANGED would give it sideways)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to view
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "phone.jpg", exif=exif)
    assert train.read_image(tmp_path / "phone.jpg").shape == (40, 20, 3)


def test_inside_fraction():
    assert train.inside_fraction((10, 10, 20, 20), (0, 0, 100, 100)) == 1.0
    assert train.inside_fraction((0, 0, 10, 10), (5, 0, 100, 100)) == 0.5
    assert train.inside_fraction((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


@pytest.mark.parametrize("photo_name", ["grace_hopper", "astronaut"])
@pytest.mark.parametrize("margin", [-0.05, 0.0, 0.05])
def test_training_crops_a_real_close_up_as_the_image_script_does(photo_name, margin):
    """A photo cut to its face: res10 alone boxes one corner of the face; training with --face-border 0.3,
    like the image script, looks again inside a black border and crops the whole face."""
    import detect_helpers
    import detect_mask_image
    from score_scenes import iou

    photo = getattr(detect_helpers, photo_name)()
    net = detect_helpers.face_net()
    (x1, y1, x2, y2), _ = detect_mask_image.detect_faces(photo, net, 0.5, [300], 0.3)[0]
    dx, dy = round(margin * (x2 - x1)), round(margin * (y2 - y1))
    close_up = photo[max(0, y1 - dy):y2 + dy, max(0, x1 - dx):x2 + dx]
    height, width = close_up.shape[:2]
    corner = train.most_confident_face(net, close_up, 0.5)  # the default, border 0
    assert (corner[2] - corner[0]) * (corner[3] - corner[1]) < 0.5 * width * height
    box = train.most_confident_face(net, close_up, 0.5, border=0.3)
    assert (box[2] - box[0]) * (box[3] - box[1]) > 0.75 * width * height
    (script_box, _), = detect_mask_image.detect_faces(close_up, net, 0.5, [300], 0.3, border=0.3,
                                                      close_up_confidence=1.0)
    assert iou(box, script_box) > 0.9


# --- command line: bad input -----------------------------------------------------------------------
def write_image(path: Path, seed: int, size=(64, 64)) -> None:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    cv2.circle(image, (size[1] // 2, size[0] // 2), size[0] // 3, (int(seed * 37) % 255, 90, 200), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


@pytest.fixture
def tiny_dataset(tmp_path):
    """12 + 12 distinct synthetic photos, plus files the loader must skip."""
    root = tmp_path / "data set"
    for label in train.CLASS_DIRS:
        for k in range(12):
            write_image(root / label / f"{label} {k}.jpg", seed=k + (100 if label == "without_mask" else 0))
    (root / "with_mask" / "notes.txt").write_text("not an image")
    (root / "without_mask" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "without_mask" / "empty.png").write_bytes(b"")
    return root


def run_main(argv, capsys):
    code = train.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_missing_dataset_is_one_error_line(tmp_path, capsys):
    code, _, err = run_main(["--dataset", str(tmp_path / "nope"), "--model", str(tmp_path / "m.keras")], capsys)
    assert code == 2
    assert err.strip().startswith("error:") and "nope" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_empty_class_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "d" / "with_mask").mkdir(parents=True)
    write_image(tmp_path / "d" / "without_mask" / "a.jpg", 1)
    code, _, err = run_main(["-d", str(tmp_path / "d"), "-m", str(tmp_path / "m.keras"), "--weights", "none"], capsys)
    assert code == 2 and "with_mask" in err and "no readable images" in err


def test_one_class_only_is_an_error(tmp_path, capsys):
    write_image(tmp_path / "d" / "with_mask" / "a.jpg", 1)
    code, _, err = run_main(["-d", str(tmp_path / "d"), "-m", str(tmp_path / "m.keras"), "--weights", "none"], capsys)
    assert code == 2 and "without_mask" in err


def test_too_few_images_to_split(tmp_path, capsys):
    for label in train.CLASS_DIRS:
        write_image(tmp_path / "d" / label / "a.jpg", 1 if label == "with_mask" else 2)
    code, _, err = run_main(["-d", str(tmp_path / "d"), "-m", str(tmp_path / "m.keras"), "--weights", "none",
                             "--crop", "image"], capsys)
    assert code == 2 and "too few" in err


@pytest.mark.parametrize("flag", [
    ["--epochs", "0"], ["--batch-size", "0"], ["--dropout", "2"], ["--bogus"],
    ["--test-size", "0"], ["--test-size", "0.8"],  # the split would hold out 50%
    ["--tflite", "float32,fp8"], ["--export-only", "--tflite", "int4"], ["--tflite-default", "int4"],
    ["--evaluate", "d", "--export-only"], ["--export-only", "--convert", "m.h5"], ["--evaluate", "d", "--convert", "m.h5"],
    ["--calibrate", "c", "--export-only"], ["--calibrate", "c", "--evaluate", "d", "--dataset", "d"]])
def test_bad_arguments_exit_2_with_one_error_line(flag, capsys):
    """argparse's usage, then one error line (as the detect scripts and tests/test_robustness.py expect)."""
    with pytest.raises(SystemExit) as exit_info:
        train.main(flag)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and err.count("error:") == 1 and "error: " in err.splitlines()[-1], err


def test_tflite_variants_are_parsed_once():
    assert train.parse_args(["--tflite", "float32, int8"]).tflite == ["float32", "int8"]
    assert train.parse_args(["--tflite", ""]).tflite == []
    assert train.parse_args([]).tflite == list(train.TFLITE_VARIANTS)


def test_unwritable_output_is_detected_before_training(tiny_dataset, tmp_path, capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    code, out, err = run_main(["-d", str(tiny_dataset), "-m", str(blocker / "m.keras"), "--weights", "none"], capsys)
    assert code == 2 and "cannot write" in err
    assert "loading images" not in out  # nothing was trained first


def test_model_name_must_be_keras(tiny_dataset, tmp_path, capsys):
    code, _, err = run_main(["-d", str(tiny_dataset), "-m", str(tmp_path / "mask_detector.model")], capsys)
    assert code == 2 and ".keras" in err


def test_evaluate_with_a_missing_model(tiny_dataset, tmp_path, capsys):
    code, _, err = run_main(["--evaluate", str(tiny_dataset), "-m", str(tmp_path / "none.keras"),
                             "--report-dir", str(tmp_path / "r"), "--crop", "image"], capsys)
    assert code == 2 and "not found" in err


def test_interrupted_save_leaves_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "plot.png"

    def broken_savefig(self, path, **kwargs):
        Path(path).write_bytes(b"half a png")
        raise KeyboardInterrupt

    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    with pytest.raises(KeyboardInterrupt):
        train.save_plot({"loss": [1.0, 0.5], "accuracy": [0.5, 0.9]}, target, None)
    assert list(tmp_path.iterdir()) == []


# --- a real (tiny) training run ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, calibration_folders):
    """One epoch on 24 synthetic photos with random start weights, calibrated on the real-face photo folder,
    LiteRT float32 + int8 exported."""
    root = tmp_path_factory.mktemp("train")
    data = root / "data set"
    for label in train.CLASS_DIRS:
        for k in range(12):
            write_image(data / label / f"{label} {k}.jpg", seed=k + (100 if label == "without_mask" else 0))
    (data / "with_mask" / "notes.txt").write_text("not an image")
    (data / "without_mask" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = root / "out"
    code = train.main(tiny_training_argv(data, out, calibration_folders / "photos"))
    return code, out


def test_tiny_training_calibrates_before_saving(trained):
    import zipfile

    _, out = trained
    calibration = json.loads((out / "metrics.json").read_text())["calibration"]
    assert list(calibration["per_folder"].values())[0]["faces"] == 4 and calibration["previous_bias"] == 0.0
    with zipfile.ZipFile(out / "mask_detector.keras") as archive:
        assert json.loads(archive.read(train.CALIBRATION_MEMBER)) == {"mask_bias": calibration["total_bias"]}
    assert (out / "reports" / "calibration.png").is_file()


def tiny_training_argv(data: Path, out: Path, calibrate: Path) -> list:
    return ["--calibrate", str(calibrate), "-d", str(data), "-m", str(out / "mask_detector.keras"), "-p", str(out / "plot.png"),
            "--metrics", str(out / "metrics.json"), "--report-dir", str(out / "reports"),
            "--epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "8", "--weights", "none",
            "--tflite", "float32,int8", "--tflite-default", "int8", "--deterministic"]


def test_tiny_training_writes_every_output(trained):
    code, out = trained
    assert code == 0
    for name in ("mask_detector.keras", "plot.png", "metrics.json", "mask_detector.tflite",
                 "mask_detector_float32.tflite", "mask_detector_int8.tflite",
                 "reports/held_out_confusion.png", "reports/held_out_mistakes.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert cv2.imread(str(out / "plot.png")) is not None


def test_tiny_training_metrics(trained):
    _, out = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 24 and metrics["skipped_files"] == 2
    assert metrics["split"]["train"] + metrics["split"]["held_out"] == 24
    assert set(metrics["per_class"]) == {"Mask", "No Mask"}
    assert np.sum(metrics["confusion_matrix"]) == metrics["split"]["held_out"]
    assert metrics["groups"] >= 10 and metrics["seed"] == 42
    assert metrics["wall_seconds"] > 0
    assert set(metrics["tflite"]) == {"float32", "int8"}


def test_tiny_model_keeps_the_contract(trained):
    import keras

    _, out = trained
    model = keras.saving.load_model(out / "mask_detector.keras", compile=False, safe_mode=True)
    assert tuple(model.input_shape) == (None, 224, 224, 3)
    probabilities = model.predict(np.zeros((3, 224, 224, 3), np.float32), verbose=0)
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_float32_litert_agrees_with_keras(trained):
    import keras

    _, out = trained
    model = keras.saving.load_model(out / "mask_detector.keras", compile=False, safe_mode=True)
    batch = np.random.default_rng(0).uniform(-1, 1, (4, 224, 224, 3)).astype(np.float32)
    expected = model.predict(batch, verbose=0)
    got = train.tflite_predict((out / "mask_detector_float32.tflite").read_bytes(), batch)
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.slow
def test_deterministic_training_gives_identical_weights(trained, calibration_folders, tmp_path):
    """Two runs of one command give the same weights (without --deterministic this test fails)."""
    import keras

    _, out = trained
    again = tmp_path / "again"
    assert train.main(tiny_training_argv(out.parent / "data set", again, calibration_folders / "photos")) == 0
    first, second = (keras.saving.load_model(folder / "mask_detector.keras", compile=False, safe_mode=True)
                     for folder in (out, again))
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_evaluate_mode_scores_a_labelled_folder(trained, tiny_dataset, tmp_path, capsys):
    _, out = trained
    code, stdout, _ = run_main(["--evaluate", str(tiny_dataset), "-m", str(out / "mask_detector.keras"),
                                "--report-dir", str(tmp_path / "r")], capsys)
    assert code == 0
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["images"] == 24 and result["skipped"] == 3
    assert 0.0 <= result["balanced_accuracy"] <= 1.0
    name = f"evaluate_{tiny_dataset.name}"
    for suffix in ("_confusion.png", "_mistakes.png", ".json"):
        assert (tmp_path / "r" / f"{name}{suffix}").is_file()


# --- --calibrate: the operating point folded into the model -------------------------------------------
def tiny_classifier(spread: float = 1.0, seed: int = 0):
    """A small model with the classifier's contract, ending in Dense(2, softmax) (what fold_mask_bias needs)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Conv2D(4, 16, strides=16)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    kernel, offset = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * spread, offset])
    return model


@pytest.mark.parametrize("bias", [-2.0, 0.0, 1.5, np.log(49.0)])
def test_folding_a_bias_is_the_threshold_rule_with_odds_shifted(bias):
    model = tiny_classifier(spread=100.0)  # log-odds from -9 to 8 on these crops
    crops = np.random.default_rng(1).integers(0, 256, (64, 224, 224, 3), dtype=np.uint8)
    before = model.predict(train.preprocess(crops), verbose=0)
    odds = train.mask_log_odds(model, crops, chunk=16)
    np.testing.assert_allclose(odds, np.log(before[:, 0] / before[:, 1]), atol=1e-4)
    threshold = 1 / (1 + np.exp(bias))
    clear = np.abs(before[:, 0] - threshold) > 1e-4  # a face on the threshold may round either way
    assert clear.sum() > 50 and 0 < np.sum(before[:, 0] >= threshold) < 64  # both sides of the threshold
    after = train.fold_mask_bias(model, bias).predict(train.preprocess(crops), verbose=0)
    np.testing.assert_array_equal((after.argmax(axis=1) == 0)[clear], (before[:, 0] >= threshold)[clear])
    np.testing.assert_allclose(after[:, 0] / after[:, 1], before[:, 0] / before[:, 1] * np.exp(bias), rtol=1e-4)
    np.testing.assert_allclose(train.mask_log_odds(model, crops), odds + bias, atol=1e-4)


def test_folding_needs_a_softmax_pair_at_the_end():
    import keras

    inputs = keras.Input((3,))
    with pytest.raises(train.UsageError, match="not Dense"):
        train.fold_mask_bias(keras.Model(inputs, keras.layers.Dense(2)(inputs)), 1.0)


def test_litert_export_of_a_folded_model_answers_the_same(tmp_path):
    model = train.fold_mask_bias(tiny_classifier(spread=20.0), 3.0)
    batch = train.preprocess(np.random.default_rng(2).integers(0, 256, (8, 224, 224, 3), dtype=np.uint8))
    expected = model.predict(batch, verbose=0)
    got = train.tflite_predict(train.tflite_bytes(model, "float16", np.zeros((0,))), batch)
    np.testing.assert_allclose(got, expected, atol=1e-2)


def masks(*labels):
    return np.array([0 if label == "M" else 1 for label in labels])


def test_bias_is_the_middle_of_the_best_plateau():
    assert train.choose_bias([(np.array([1.0, 2, 3, -3, -2, -1]), masks(*"MMMNNN"))]) == (0.0, (-1.0, 1.0), 1.0)
    assert train.choose_bias([(np.array([5.0, 6, 2, 3]), masks(*"MMNN"))]) == (-4.0, (-5.0, -3.0), 1.0)
    assert train.choose_bias([(np.array([-3.0, -1, -6, -5]), masks(*"MMNN"))])[:2] == (4.0, (3.0, 5.0))
    # two plateaus of the best mean (0.75): the wider one, (-5, -3), not (-1, 0)
    sets = [(np.array([5.0, 6, 2, 3]), masks(*"MMNN")), (np.array([1.0, 0]), masks(*"MN"))]
    assert train.choose_bias(sets) == (-4.0, (-5.0, -3.0), 0.75)
    # the mean of balanced accuracies, not the accuracy of the pooled faces: 2 faces weigh as much as 100
    sets = [(np.array([2.0] * 50 + [1.5] * 50), masks(*"M" * 50 + "N" * 50)), (np.array([0.0, -4.0]), masks(*"MN"))]
    assert train.choose_bias(sets) == (2.0, (0.0, 4.0), 0.75)


def test_balanced_accuracy_rule_is_mask_from_zero_log_odds_on():
    odds, labels = np.array([-1.0, 0.0, 1.0, -2.0]), masks(*"MMNN")
    np.testing.assert_allclose(train.balanced_accuracies(odds, labels, [0.0, 1.0, -1.5, 5.0]),
                               [0.5, 0.75, 0.5, 0.5])  # at 0 the Mask face of log-odds 0 is right


def test_match_boxes_one_to_one_best_iou_first():
    truth = [(0, 0, 10, 10), (20, 20, 30, 30), (100, 100, 110, 110)]
    detected = [(21, 21, 30, 30), (1, 1, 10, 10), (0, 0, 11, 11), (103, 103, 113, 113)]
    assert train.match_boxes(truth, detected) == [2, 0, None]  # (100..110) vs (103..113): IoU 0.32


@pytest.fixture(scope="module")
def calibration_folders(tmp_path_factory):
    """Real faces (grace_hopper, astronaut): a photo folder (two per class, mirrored copies) and a VOC scene of
    both faces side by side, plus an annotated face where there is none and an incorrectly worn mask."""
    import detect_helpers

    root = tmp_path_factory.mktemp("calibration")
    hopper, astronaut = detect_helpers.grace_hopper(), detect_helpers.astronaut()
    for label, photos in (("with_mask", (hopper, cv2.flip(astronaut, 1))),
                          ("without_mask", (astronaut, cv2.flip(hopper, 1)))):
        (root / "photos" / label).mkdir(parents=True)
        for k, photo in enumerate(photos):
            detect_helpers.write_image(root / "photos" / label / f"{k}.jpg", photo)
    scene = np.full((700, 1024, 3), 128, np.uint8)
    scene[:600, :512], scene[:512, 512:] = hopper, astronaut
    (root / "scenes" / "images").mkdir(parents=True)
    (root / "scenes" / "annotations").mkdir()
    detect_helpers.write_image(root / "scenes" / "images" / "two.png", scene)
    boxes = [(181, 123, 352, 333), (179 + 512, 58, 272 + 512, 177)]  # most_confident_face of each photo
    objects = [("with_mask", boxes[0]), ("without_mask", boxes[1]), ("mask_weared_incorrect", boxes[1]),
               ("with_mask", (400, 620, 460, 690))]  # the grey strip: no face to detect
    (root / "scenes" / "annotations" / "two.xml").write_text("<annotation><filename>two.png</filename>" + "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>" for name, b in objects) + "</annotation>")
    return root


def calibrate_argv(model: Path, *folders) -> list:
    out = model.parent
    return ["--calibrate", *map(str, folders), "--model", str(model), "--metrics", str(out / "metrics.json"),
            "--report-dir", str(out / "reports"), "--tflite", ""]


def test_calibration_folders_read_as_the_detect_scripts_see_them(calibration_folders):
    import detect_helpers

    net = detect_helpers.face_net()
    photos = train.calibration_faces(calibration_folders / "photos", "photos", net, 0.5)
    assert photos["labels"].tolist() == [0, 0, 1, 1] and photos["missed"] == [0, 0]
    scenes = train.calibration_faces(calibration_folders / "scenes", "voc", net, 0.5)
    assert scenes["labels"].tolist() == [0, 1] and scenes["missed"] == [1, 0]
    assert scenes["crops"].shape == (2, 224, 224, 3) and scenes["crops"].dtype == np.uint8
    assert train.check_calibration_folder(calibration_folders / "scenes") == "voc"


@pytest.mark.slow
def test_recalibrate_folds_the_bias_into_the_model_and_again_adds_nothing(calibration_folders, tmp_path, capsys):
    import zipfile

    import keras

    model_path = tmp_path / "m.keras"
    train.save_model(tiny_classifier(spread=30.0, seed=3), model_path)
    _, offset = keras.saving.load_model(model_path, safe_mode=True).layers[-1].get_weights()
    folders = (calibration_folders / "photos", calibration_folders / "scenes")
    code, out, _ = run_main(calibrate_argv(model_path, *folders) + ["--tflite", "float16"], capsys)
    assert code == 0 and "calibration: Mask bias" in out
    calibration = json.loads((tmp_path / "metrics.json").read_text())["calibration"]
    bias = calibration["bias"]
    assert calibration["plateau"][0] < bias < calibration["plateau"][1]
    assert calibration["threshold_equivalent"] == pytest.approx(1 / (1 + np.exp(bias)))
    assert calibration["mean_balanced_accuracy_after"] >= calibration["mean_balanced_accuracy_before"]
    scenes = calibration["per_folder"][str(folders[1])]
    assert (scenes["layout"], scenes["faces"], scenes["without_detection"]) == ("voc", 2, 1)
    assert calibration["per_folder"][str(folders[0])]["faces_per_class"] == [2, 2]
    folded = keras.saving.load_model(model_path, safe_mode=True)
    np.testing.assert_allclose(folded.layers[-1].get_weights()[1], offset + (bias / 2, -bias / 2), atol=1e-5)
    with zipfile.ZipFile(model_path) as archive:
        assert json.loads(archive.read(train.CALIBRATION_MEMBER)) == {"mask_bias": bias}
    assert (tmp_path / "m_float16.tflite").is_file() and (tmp_path / "m.tflite").is_file()
    assert (tmp_path / "reports" / "calibration.png").is_file()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    # once more: the best plateau moved by -bias, so its middle is 0 and the total stays
    assert run_main(calibrate_argv(model_path, *folders), capsys)[0] == 0
    again = json.loads((tmp_path / "metrics.json").read_text())["calibration"]
    assert again["bias"] == pytest.approx(0.0, abs=1e-5) and again["previous_bias"] == bias
    assert again["total_bias"] == pytest.approx(bias, abs=1e-5)


def test_calibration_folder_errors_come_before_any_work(calibration_folders, tiny_dataset, tmp_path, capsys):
    """A missing or empty folder, or one class only: one line, exit 2, nothing written (the model untouched,
    in training mode nothing loaded)."""
    (tmp_path / "empty").mkdir()
    write_image(tmp_path / "one class" / "with_mask" / "a.jpg", 1)
    (tmp_path / "one class" / "without_mask").mkdir()
    (tmp_path / "voc" / "annotations").mkdir(parents=True)
    (tmp_path / "voc" / "annotations" / "a.xml").write_text(
        (calibration_folders / "scenes" / "annotations" / "two.xml").read_text().replace("without_mask", "other"))
    (tmp_path / "voc" / "images").symlink_to(calibration_folders / "scenes" / "images")
    model = tmp_path / "out" / "m.keras"
    model.parent.mkdir()
    model.write_bytes(b"the old model")
    cases = {"missing": "folder not found", "empty": "the folder is empty", "one class": "no photos in without_mask/",
             "voc": "with_mask faces only"}
    for name, message in cases.items():
        for argv in (calibrate_argv(model, calibration_folders / "photos", tmp_path / name),
                     calibrate_argv(model, tmp_path / name) + ["--dataset", str(tiny_dataset)]):
            code, out, err = run_main(argv, capsys)
            assert code == 2 and err.count("\n") == 1 and message in err and str(tmp_path / name) in err, err
            assert "loading images" not in out
    assert model.read_bytes() == b"the old model" and sorted(p.name for p in model.parent.iterdir()) == ["m.keras"]


def write_blank_photos(folder: Path, count: int) -> None:
    """`count` plain grey photos per class: no face for res10."""
    for label in train.CLASS_DIRS:
        (folder / label).mkdir(parents=True)
        for k in range(count):
            cv2.imwrite(str(folder / label / f"{k}.png"), np.full((120, 100, 3), 40 * k + 60, np.uint8))


def test_calibration_without_a_face_found_is_an_error_before_training(tiny_dataset, tmp_path, capsys):
    write_blank_photos(tmp_path / "blank", 2)
    out_dir = tmp_path / "out"
    code, out, err = run_main(calibrate_argv(out_dir / "m.keras", tmp_path / "blank")
                              + ["--dataset", str(tiny_dataset), "--weights", "none", "--crop", "image"], capsys)
    assert code == 2 and err.count("error:") == 1  # after the dataset's warnings about its unreadable files
    assert err.splitlines()[-1] == f"error: --calibrate {tmp_path / 'blank'}: res10 found no face in any of its 4 photos"
    assert "training head" not in out and not (out_dir / "m.keras").exists()


def test_recalibrate_without_a_face_found_leaves_the_model(tmp_path, capsys):
    write_blank_photos(tmp_path / "blank", 1)
    model_path = tmp_path / "out" / "m.keras"
    model_path.parent.mkdir()
    train.save_model(tiny_classifier(), model_path)
    before = model_path.read_bytes()
    code, _, err = run_main(calibrate_argv(model_path, tmp_path / "blank"), capsys)
    assert code == 2 and "res10 found no face" in err and err.count("\n") == 1
    assert model_path.read_bytes() == before
    assert [p.name for p in model_path.parent.rglob("*") if p.is_file()] == ["m.keras"]


# --- --face-detector centerface -----------------------------------------------------------------------
def centerface_argv(tmp_path, face_dir) -> list:
    return ["--face-detector", "centerface", "--face", str(face_dir), "-m", str(tmp_path / "out" / "m.keras"),
            "-p", str(tmp_path / "out" / "plot.png"), "--metrics", str(tmp_path / "out" / "metrics.json"),
            "--report-dir", str(tmp_path / "out" / "reports"), "--weights", "none", "--epochs", "1",
            "--fine-tune-epochs", "0", "--batch-size", "8", "--tflite", ""]


def test_centerface_finds_and_crops_faces_as_the_detect_scripts_do(calibration_folders):
    import detect_helpers
    import detect_mask_image as dm

    assert train.parse_args([]).face_detector == "res10"  # the default stays
    assert (train.CENTERFACE_SHA256, train.CENTERFACE_CONFIDENCE, train.CENTERFACE_REFRAME) == (
        dm.CENTERFACE_SHA256, dm.CENTERFACE_CONFIDENCE, dm.CENTERFACE_REFRAME)
    net = train.load_face_detector(train.parse_args(["--face-detector", "centerface"]))
    for photo in (detect_helpers.astronaut(), detect_helpers.grace_hopper(), detect_helpers.astronaut()[:300, :400]):
        np.testing.assert_allclose(net.detections(photo, 0.5), detect_helpers.centerface().detections(photo, 0.5),
                                   atol=1e-5)
        (box, score), = dm.drop_contained(dm.find_faces(photo, detect_helpers.centerface(), 0.5, [0], 0.3))
        assert net.faces(photo) == [(score, box)]
        crop_box = dm.clip_box(dm.reframe(box, dm.CENTERFACE_REFRAME), photo.shape[1], photo.shape[0])
        assert train.most_confident_face(net, photo, 0.5) == crop_box
    photos = train.calibration_faces(calibration_folders / "photos", "photos", net, 0.5)
    assert photos["labels"].tolist() == [0, 0, 1, 1] and photos["missed"] == [0, 0]
    scenes = train.calibration_faces(calibration_folders / "scenes", "voc", net, 0.5)
    assert scenes["labels"].tolist() == [0, 1] and scenes["missed"] == [1, 0]
    # no CenterFace face: res10 looks, as it does today (here a stand-in that boxes the middle)
    fallback = train.CenterFace(net.data, TwoLookNet([(0.9, 0.1, 0.1, 0.5, 0.5)], []))
    assert train.most_confident_face(fallback, np.full((100, 100, 3), 90, np.uint8), 0.5) == (10, 10, 50, 50)


@pytest.mark.parametrize("damage", ["missing", "truncated", "foreign"])
def test_a_missing_or_damaged_centerface_model_is_one_error_line(damage, tiny_dataset, tmp_path, capsys):
    faces = tmp_path / "faces"
    faces.mkdir()
    data = (REPO / "face_detector" / train.CENTERFACE_ONNX).read_bytes()
    if damage != "missing":
        (faces / train.CENTERFACE_ONNX).write_bytes(data[: len(data) // 2] if damage == "truncated" else b"x" * 64)
    code, out, err = run_main(["-d", str(tiny_dataset), *centerface_argv(tmp_path, faces)], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {faces / train.CENTERFACE_ONNX}: ")
    assert ("not found" if damage == "missing" else "wrong SHA-256") in err
    assert "loading images" not in out and not (tmp_path / "out" / "m.keras").exists()


def test_evaluate_with_centerface_crops_real_faces(calibration_folders, tmp_path, capsys):
    model = tmp_path / "m.keras"
    train.save_model(tiny_classifier(), model)
    code, stdout, _ = run_main(["--evaluate", str(calibration_folders / "photos"), "-m", str(model),
                                "--face-detector", "centerface", "--report-dir", str(tmp_path / "r")], capsys)
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["faces_found"] == 4
    assert json.loads((tmp_path / "r" / "evaluate_photos.json").read_text())["face_detector"] == "centerface"


@pytest.mark.slow
def test_tiny_training_with_centerface(calibration_folders, tiny_dataset, tmp_path, capsys):
    """Synthetic photos (no face: res10 looks, then the whole photo) and the four real-face photos."""
    for label in train.CLASS_DIRS:
        for photo in (calibration_folders / "photos" / label).iterdir():
            (tiny_dataset / label / photo.name).write_bytes(photo.read_bytes())
    code, out, _ = run_main(["-d", str(tiny_dataset), *centerface_argv(tmp_path, REPO / "face_detector")], capsys)
    assert code == 0 and "centerface and res10 found a face in" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["recipe"]["face_detector"] == "centerface" and metrics["faces_found"] >= 4


# --- the committed model on the real data ------------------------------------------------------------
@pytest.mark.slow
def test_committed_model_on_the_grouped_held_out_split(shared_dir):
    """Recompute the seed-42 grouped split of the committed model's training folders and score the committed
    model on its held-out side, folder by folder."""
    import keras

    weights = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    if not list(weights.glob("mobilenet_v2_weights_*_1.0_224_no_top.h5")):
        pytest.skip(f"MobileNetV2 ImageNet weights not in {weights} (the grouping uses them)")
    folders = [shared_dir / "dataset", *(shared_dir / "extra_training" / name for name in COMMITTED_EXTRA)]
    for folder in folders:
        if not folder.is_dir():
            pytest.skip(f"{folder} not found")
    args = train.parse_args(["--dataset", *map(str, folders), "--seed", COMMITTED_SEED])
    dataset = train.load_datasets([Path(d) for d in args.dataset])
    data = train.prepare_split(dataset, args)
    test_index = data["test_index"]
    model = keras.saving.load_model(REPO / "mask_detector.keras", compile=False, safe_mode=True)
    # The model as trained: the bias --calibrate folded in (README: +3.480) taken back out.
    bias = train.folded_bias(REPO / "mask_detector.keras")
    assert 3.0 < bias < 4.0, bias
    log_odds = train.mask_log_odds(model, data["crops"][test_index]) - bias
    predicted = (log_odds < 0).astype(int)  # class 0 = Mask
    per_folder = train.per_folder_accuracy(dataset, test_index, predicted)
    accuracy = {Path(folder).name: entry["accuracy"] for folder, entry in per_folder.items()}
    assert len(test_index) > 900
    assert accuracy["dataset"] >= 0.98 and accuracy["ilc2021"] >= 0.97, accuracy  # 0.989, 0.978 when trained
    assert accuracy["ilc2021_small"] >= 0.90, accuracy  # 0.922


COMMITTED_EXTRA = ("ilc2021", "ilc2021_small")  # ../shared/extra_training folders the committed model used
COMMITTED_SEED = "1"  # the committed model's --seed (README), which also draws its split


# --- --convert: legacy 2020 models ----------------------------------------------------------------------
def test_convert_refuses_what_is_not_a_legacy_model(tmp_path, capsys):
    notes = tmp_path / "notes.model"
    notes.write_text("hello, I am a text file\n")
    assert train.main(["--convert", str(notes)]) == 2
    assert capsys.readouterr().err == f"error: {notes}: not an HDF5 file; expected a legacy .h5/.model saved by Keras 2\n"
    assert train.main(["--convert", str(tmp_path / "missing.model")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert train.main(["--convert", str(tmp_path / "model.keras")]) == 2
    assert "expected a legacy .h5/.hdf5/.model file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.model"]


def test_convert_refuses_a_cut_or_foreign_hdf5_file(tmp_path, capsys):
    import h5py

    foreign = tmp_path / "table.h5"
    with h5py.File(foreign, "w") as f:
        f["numbers"] = np.arange(1000.0)
    assert train.main(["--convert", str(foreign)]) == 2
    assert capsys.readouterr().err.endswith("HDF5 file without Keras layer weights; expected a legacy .h5/.model "
                                            "saved by Keras 2\n")
    cut = tmp_path / "cut.model"
    cut.write_bytes(foreign.read_bytes()[:1000])
    assert train.main(["--convert", str(cut)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {cut}: cannot read the HDF5 model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.model", "table.h5"]


@pytest.mark.slow
def test_convert_round_trip_keeps_the_model(tmp_path, capsys):
    """A 2020-architecture model saved as HDF5 converts to .keras (the same outputs) and float16 .tflite."""
    import shutil

    import detect_helpers

    models = detect_helpers.small_models()
    legacy = shutil.copyfile(models["h5"], tmp_path / "mask_detector.h5")
    assert train.main(["--convert", str(legacy)]) == 0
    assert f"wrote {tmp_path / 'mask_detector.keras'} and {tmp_path / 'mask_detector.tflite'}" in capsys.readouterr().out
    batch = detect_helpers.face_batch()
    script = detect_helpers.image_script
    expected = script.load_classifier(models["keras"]).predict(batch)
    np.testing.assert_allclose(script.load_classifier(tmp_path / "mask_detector.keras").predict(batch), expected,
                               atol=1e-5)
    tflite = script.load_classifier(tmp_path / "mask_detector.tflite")
    assert tflite.input["dtype"] == np.float32  # float16 weights, float input: as training's default file
    np.testing.assert_allclose(tflite.predict(batch), expected, atol=1e-2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask_detector.h5", "mask_detector.keras",
                                                          "mask_detector.tflite"]
