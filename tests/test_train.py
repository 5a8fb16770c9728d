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


def test_read_image_gives_8_bit_bgr_of_grey_16_bit_and_alpha_files(tmp_path):
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((5, 6), 200, np.uint8))
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((5, 6, 3), 65535, np.uint16))
    cv2.imwrite(str(tmp_path / "alpha.png"), np.full((5, 6, 4), 100, np.uint8))
    for name in ("grey.png", "deep.png", "alpha.png"):
        image = train.read_image(tmp_path / name)
        assert image.shape == (5, 6, 3) and image.dtype == np.uint8, name
    assert train.read_image(tmp_path / "deep.png").max() == 255
    (tmp_path / "empty.png").write_bytes(b"")
    assert train.read_image(tmp_path / "empty.png") is None and train.read_image(tmp_path / "none.png") is None


def test_crop_face_resizes_as_the_detect_scripts_do():
    import detect_mask_image

    rng = np.random.default_rng(0)
    for shape in ((60, 50, 3), (400, 300, 3), (100, 300, 3)):
        photo = rng.integers(0, 255, shape, dtype=np.uint8)
        batch, _ = detect_mask_image.preprocess_faces(photo, [(0, 0, shape[1], shape[0])])
        np.testing.assert_allclose(train.preprocess(train.crop_face(photo)[None]), batch, atol=1e-6)


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


def test_read_image_applies_the_exif_orientation(tmp_path):
    """A phone photo stored landscape with EXIF orientation 6 (rotate 90 degrees) reads portrait, as the
    detect scripts read it (IMREAD_UNCHANGED would give it sideways)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to view
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "phone.jpg", exif=exif)
    assert train.read_image(tmp_path / "phone.jpg").shape == (40, 20, 3)


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
    code, _, err = run_main(["-d", str(tmp_path / "d"), "-m", str(tmp_path / "m.keras"), "--weights", "none"], capsys)
    assert code == 2 and "too few" in err


@pytest.mark.parametrize("flag", [
    ["--epochs", "0"], ["--batch-size", "0"], ["--dropout", "2"], ["--bogus"], ["--epochs", "two"],
    ["--tflite", "fp8"], ["--export-only", "--tflite", "int4"], ["--crop", "image"], ["--face-border", "0.3"],
    ["--evaluate", "d", "--export-only"], ["--export-only", "--convert", "m.h5"], ["--evaluate", "d", "--convert", "m.h5"],
    ["--calibrate", "c", "--export-only"], ["--calibrate", "c", "--evaluate", "d", "--dataset", "d"],
    ["--dataset", "d", "--", "--face-detector", "centerface"]])  # image script options without a use
def test_bad_arguments_exit_2_with_one_error_line(flag, capsys):
    """argparse's usage, then one error line (as the detect scripts and tests/test_robustness.py expect)."""
    with pytest.raises(SystemExit) as exit_info:
        train.main(flag)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and err.count("error:") == 1 and "error: " in err.splitlines()[-1], err


def test_tflite_variants_and_image_script_options():
    assert train.parse_args(["--tflite", "float32", "int8"]).tflite == ["float32", "int8"]
    assert train.parse_args(["--tflite"]).tflite == []
    assert train.parse_args([]).tflite == list(train.TFLITE_VARIANTS) and train.TFLITE_VARIANTS[0] == "float16"
    args = train.parse_args(["--evaluate", "p", "--", "--face-detector", "centerface", "-c", "0.6"])
    assert args.evaluate == ["p"] and args.detect_options == ["--face-detector", "centerface", "-c", "0.6"]


@pytest.mark.parametrize("argv, expected", [([], 5), (["--epochs", "1"], 0), (["--epochs", "7"], 1),
                                            (["--epochs", "1", "--fine-tune-epochs", "2"], 2)])
def test_fine_tune_epochs_default_to_a_quarter_of_the_epochs(argv, expected):
    assert train.parse_args(argv).fine_tune_epochs == expected


def test_help_is_short_and_says_each_default_once(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "{float" not in text and text.count("(default: dataset)") == 1
    assert len(text.splitlines()) <= 90
    for removed in ("--crop ", "--face-detector", "--face-border", "--manifest-crop", "--tflite-default", "--plot",
                    "--dropout", "--class-weight", "--fine-tune-layers", "--test-size"):
        assert removed not in text


def test_unwritable_output_is_detected_before_training(tiny_dataset, tmp_path, capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    code, out, err = run_main(["-d", str(tiny_dataset), "-m", str(blocker / "m.keras"), "--weights", "none"], capsys)
    assert code == 2 and "cannot write" in err
    assert "loading faces" not in out  # nothing was trained first


def test_model_name_must_be_keras(tiny_dataset, tmp_path, capsys):
    code, _, err = run_main(["-d", str(tiny_dataset), "-m", str(tmp_path / "mask_detector.model")], capsys)
    assert code == 2 and ".keras" in err


@pytest.mark.parametrize("existing", ["m.keras", "plot.png", "metrics.json", "reports", "m.tflite", "m_int8.tflite"])
def test_training_never_replaces_a_file_without_overwrite(existing, tiny_dataset, tmp_path, capsys):
    """Every output lies beside --model; one that is there already stops the run before any work."""
    (tmp_path / existing).write_bytes(b"the user's file")
    code, out, err = run_main(["-d", str(tiny_dataset), "-m", str(tmp_path / "m.keras"), "--weights", "none"], capsys)
    assert code == 2 and err.count("\n") == 1 and f"{tmp_path / existing} already exists; pass --overwrite" in err
    assert "loading faces" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data set", existing])
    assert (tmp_path / existing).read_bytes() == b"the user's file"


def test_overwrite_lets_training_replace_its_outputs(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"an older model")
    paths = train.output_paths(tmp_path / "m.keras", ["float16"])
    assert sorted(p.name for p in paths.values()) == ["m.keras", "m.tflite", "m_float16.tflite", "metrics.json",
                                                       "plot.png", "reports"]
    train.check_outputs(paths, overwrite=True)
    with pytest.raises(train.UsageError, match="already exist"):
        train.check_outputs(paths, overwrite=False)


def test_evaluate_with_a_missing_model(tiny_dataset, tmp_path, capsys):
    code, _, err = run_main(["--evaluate", str(tiny_dataset), "-m", str(tmp_path / "none.keras")], capsys)
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


# --- inputs: face folders, crop folders with a manifest, VOC sets ---------------------------------------
def write_voc(root: Path, photos: int = 6) -> Path:
    """A tiny VOC set: each photo two faces (a with_mask and a without_mask box) and one mask_weared_incorrect."""
    (root / "annotations").mkdir(parents=True)
    for k in range(photos):
        write_image(root / "images" / f"p{k}.png", seed=300 + k, size=(120, 200))
        objects = [("with_mask", (10, 10, 60, 70)), ("without_mask", (100, 20, 180, 110)),
                   ("mask_weared_incorrect", (60, 60, 100, 100))]
        (root / "annotations" / f"p{k}.xml").write_text(f"<annotation><filename>p{k}.png</filename>" + "".join(
            f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
            f"<ymax>{b[3]}</ymax></bndbox></object>" for name, b in objects) + "</annotation>")
    return root


def test_a_voc_set_gives_the_annotated_faces_cut_as_the_detect_scripts_cut_them(tmp_path, capsys):
    import detect_mask_image

    data = train.load_datasets([write_voc(tmp_path / "voc", photos=2)])
    assert data["labels"].tolist() == [0, 1, 0, 1] and data["kinds"] == ["VOC set"]
    assert data["sources"] == [str(tmp_path / "voc" / "images" / name) for name in ("p0.png",) * 2 + ("p1.png",) * 2]
    photo = train.read_image(tmp_path / "voc" / "images" / "p0.png")
    batch, _ = detect_mask_image.preprocess_faces(photo, [(100, 20, 180, 110)])
    np.testing.assert_allclose(train.preprocess(data["crops"][1:2]), batch, atol=1e-6)
    assert "skipped 2 mask_weared_incorrect" in capsys.readouterr().err


def test_one_command_trains_on_a_voc_set(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_main(["-d", str(write_voc(tmp_path / "voc")), "-m", str(out / "m.keras"), "--epochs", "1",
                                  "--weights", "none", "--batch-size", "4", "--tflite"], capsys)
    assert code == 0, err
    assert "12 faces (6 with mask, 6 without), VOC set" in stdout and "skipped 6 mask_weared_incorrect" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["groups"] <= 6 and metrics["split"]["train"] + metrics["split"]["held_out"] == 12
    assert sorted(p.name for p in out.iterdir()) == ["m.keras", "metrics.json", "plot.png", "reports"]


def test_the_crops_of_one_photo_form_one_group(tmp_path):
    """A crop folder (as detect_mask_image.py --crops writes it): the manifest's source photo groups the crops."""
    for name, seed in (("with_mask/a_1.jpg", 1), ("with_mask/a_2.jpg", 2), ("without_mask/b_1.jpg", 3)):
        write_image(tmp_path / "faces" / name, seed)
    (tmp_path / "faces" / "manifest.csv").write_text(
        "file,label,source_image,box_xyxy,detector,confidence\n"
        "with_mask/a_1.jpg,with_mask,photos/a.jpg,0 0 9 9,res10,0.9\n"
        "with_mask/a_2.jpg,with_mask,photos/a.jpg,9 9 19 19,res10,0.8\n"
        "without_mask/b_1.jpg,without_mask,photos/b.jpg,0 0 9 9,res10,0.9\n")
    data = train.load_datasets([tmp_path / "faces"])
    assert data["kinds"] == ["face crops with a manifest"] and data["labels"].tolist() == [0, 0, 1]
    groups = train.find_groups(data["crops"], None, data["sources"])
    assert groups[0] == groups[1] != groups[2]


# --- a real (tiny) training run ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, calibration_folders):
    """One epoch on 24 synthetic faces with random start weights, one fine-tune epoch, calibrated on the
    real-face photo folder with the image script's faces, LiteRT float32 + int8 exported."""
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


def tiny_training_argv(data: Path, out: Path, calibrate: Path) -> list:
    return ["--calibrate", str(calibrate), "-d", str(data), "-m", str(out / "mask_detector.keras"),
            "--epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "8", "--weights", "none",
            "--tflite", "int8", "float32", "--deterministic"]


def test_tiny_training_calibrates_before_saving(trained):
    import zipfile

    _, out = trained
    calibration = json.loads((out / "metrics.json").read_text())["calibration"]
    assert list(calibration["per_folder"].values())[0]["faces"] == 4 and calibration["previous_bias"] == 0.0
    with zipfile.ZipFile(out / "mask_detector.keras") as archive:
        assert json.loads(archive.read(train.CALIBRATION_MEMBER)) == {"mask_bias": calibration["total_bias"]}


def test_tiny_training_writes_every_output_beside_the_model(trained):
    code, out = trained
    assert code == 0
    for name in ("mask_detector.keras", "plot.png", "metrics.json", "mask_detector.tflite",
                 "mask_detector_float32.tflite", "mask_detector_int8.tflite",
                 "reports/held_out_confusion.png", "reports/held_out_mistakes.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert cv2.imread(str(out / "plot.png")) is not None
    assert (out / "mask_detector.tflite").read_bytes() == (out / "mask_detector_int8.tflite").read_bytes()


def test_tiny_training_metrics(trained):
    _, out = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["faces"] == 24 and metrics["skipped_files"] == 2
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

    import detect_mask_image

    _, out = trained
    model = keras.saving.load_model(out / "mask_detector.keras", compile=False, safe_mode=True)
    batch = np.random.default_rng(0).uniform(-1, 1, (4, 224, 224, 3)).astype(np.float32)
    expected = model.predict(batch, verbose=0)
    got = detect_mask_image.load_classifier(out / "mask_detector_float32.tflite").predict(batch)
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


def test_evaluate_scores_the_image_scripts_faces_and_labels(trained, calibration_folders, tmp_path, capsys):
    """--evaluate on photos and a VOC scene: the faces and labels are those of detect_mask_image.py --json."""
    import detect_mask_image

    _, out = trained
    model = tmp_path / "m.keras"
    model.write_bytes((out / "mask_detector.keras").read_bytes())
    folders = [calibration_folders / "photos", calibration_folders / "scenes"]
    code, stdout, _ = run_main(["--evaluate", *map(str, folders), "-m", str(model)], capsys)
    assert code == 0
    results = [json.loads(line) for line in stdout.strip().splitlines()]
    assert [(r["folder"], r["faces"], r["without_detection"]) for r in results] == [
        (str(folders[0]), 4, 0), (str(folders[1]), 2, 1)]
    assert detect_mask_image.main(["-i", str(folders[0]), "--json", "--no-display", "-m", str(model)]) == 0
    script = [json.loads(line)["faces"][0] for line in capsys.readouterr().out.splitlines()]
    truth = [0 if "/with_mask/" in line else 1 for line in sorted(str(p) for p in folders[0].rglob("*.jpg"))]
    predicted = [train.LABELS.index(face["label"]) for face in script]
    assert results[0]["confusion_matrix"] == train.classification_metrics(np.array(truth),
                                                                          np.array(predicted))["confusion_matrix"]
    for name in ("evaluate_photos.json", "evaluate_photos_confusion.png", "evaluate_scenes.json"):
        assert (tmp_path / "reports" / name).is_file()


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
    odds = train.mask_log_odds(before[:, 0])
    np.testing.assert_allclose(odds, np.log(before[:, 0] / before[:, 1]), atol=1e-3)
    threshold = 1 / (1 + np.exp(bias))
    clear = np.abs(before[:, 0] - threshold) > 1e-4  # a face on the threshold may round either way
    assert clear.sum() > 50 and 0 < np.sum(before[:, 0] >= threshold) < 64  # both sides of the threshold
    after = train.fold_mask_bias(model, bias).predict(train.preprocess(crops), verbose=0)
    np.testing.assert_array_equal((after.argmax(axis=1) == 0)[clear], (before[:, 0] >= threshold)[clear])
    np.testing.assert_allclose(after[:, 0] / after[:, 1], before[:, 0] / before[:, 1] * np.exp(bias), rtol=1e-4)


def test_mask_log_odds_stay_finite_where_the_softmax_saturates():
    odds = train.mask_log_odds(np.array([0.0, 0.5, 1.0]))
    assert np.isfinite(odds).all() and odds[1] == 0.0 and odds[2] > 15
    assert odds[0] == pytest.approx(-odds[2])


def test_folding_needs_a_softmax_pair_at_the_end():
    import keras

    inputs = keras.Input((3,))
    with pytest.raises(train.UsageError, match="not Dense"):
        train.fold_mask_bias(keras.Model(inputs, keras.layers.Dense(2)(inputs)), 1.0)


def test_litert_export_of_a_folded_model_answers_the_same(tmp_path):
    import detect_mask_image

    model = train.fold_mask_bias(tiny_classifier(spread=20.0), 3.0)
    batch = train.preprocess(np.random.default_rng(2).integers(0, 256, (8, 224, 224, 3), dtype=np.uint8))
    expected = model.predict(batch, verbose=0)
    (tmp_path / "m.tflite").write_bytes(train.tflite_bytes(model, "float16", np.zeros((0,))))
    got = detect_mask_image.load_classifier(tmp_path / "m.tflite").predict(batch)
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
    boxes = [(181, 123, 352, 333), (179 + 512, 58, 272 + 512, 177)]  # res10's boxes of the two faces
    objects = [("with_mask", boxes[0]), ("without_mask", boxes[1]), ("mask_weared_incorrect", boxes[1]),
               ("with_mask", (400, 620, 460, 690))]  # the grey strip: no face to detect
    (root / "scenes" / "annotations" / "two.xml").write_text("<annotation><filename>two.png</filename>" + "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>" for name, b in objects) + "</annotation>")
    return root


def calibrate_argv(model: Path, *folders) -> list:
    return ["--calibrate", *map(str, folders), "--model", str(model), "--tflite"]


@pytest.mark.parametrize("options", [[], ["--face-detector", "centerface"]])
def test_calibration_faces_and_probabilities_are_the_image_scripts_own(calibration_folders, tmp_path, capsys,
                                                                         options):
    """The faces --calibrate scores, and their Mask probabilities, are what detect_mask_image.py --json says
    for the same photos with the same options: each photo's most confident face, each annotated face's match."""
    import detect_mask_image

    model = tmp_path / "m.keras"
    train.save_model(tiny_classifier(spread=30.0), model)
    folders = train.labelled_folders([calibration_folders / "photos", calibration_folders / "scenes"],
                                     "--calibrate", 0)
    sets = train.folder_faces(folders, model, options, "--calibrate")
    photos, scenes = sets.values()
    assert photos["labels"].tolist() == [0, 0, 1, 1] and photos["missed"] == [0, 0]
    assert scenes["labels"].tolist() == [0, 1] and scenes["missed"] == [1, 0]
    capsys.readouterr()
    for folder, found in zip(folders.values(), sets.values()):
        images = [str(path) for path, _ in folder["photos"]]
        assert detect_mask_image.main(["-i", *images, "--json", "--no-display", "-m", str(model), *options]) == 0
        script = {json.loads(line)["image"]: json.loads(line)["faces"] for line in capsys.readouterr().out.splitlines()}
        expected = [script[images[0]][0], script[images[0]][1]] if folder["layout"] == "voc" else [
            script[image][0] for image in images]
        if folder["layout"] == "voc":  # the annotated faces' order: hopper's (with_mask) box, astronaut's
            expected.sort(key=lambda face: face["box"][0])
        assert [box for _, box in found["faces"]] == [face["box"] for face in expected]
        assert found["mask_probability"].tolist() == [face["mask_probability"] for face in expected]
        assert {face["detector"] for face in expected} == {"centerface" if options else "res10"}


@pytest.mark.slow
def test_recalibrate_folds_the_bias_into_the_model_and_again_adds_nothing(calibration_folders, tmp_path, capsys):
    import zipfile

    import keras

    model_path = tmp_path / "m.keras"
    train.save_model(tiny_classifier(spread=30.0, seed=3), model_path)
    _, offset = keras.saving.load_model(model_path, safe_mode=True).layers[-1].get_weights()
    folders = (calibration_folders / "photos", calibration_folders / "scenes")
    code, out, _ = run_main(calibrate_argv(model_path, *folders) + ["float16"], capsys)
    assert code == 0 and "calibration: Mask bias" in out
    calibration = json.loads((tmp_path / "metrics.json").read_text())["calibration"]
    bias = calibration["bias"]
    assert calibration["plateau"][0] < bias < calibration["plateau"][1]
    assert calibration["threshold_equivalent"] == pytest.approx(1 / (1 + np.exp(bias)))
    assert calibration["mean_balanced_accuracy_after"] >= calibration["mean_balanced_accuracy_before"]
    scenes = calibration["per_folder"][str(folders[1])]
    assert (scenes["faces"], scenes["without_detection"]) == (2, 1)
    assert calibration["per_folder"][str(folders[0])]["faces_per_class"] == [2, 2]
    folded = keras.saving.load_model(model_path, safe_mode=True)
    np.testing.assert_allclose(folded.layers[-1].get_weights()[1], offset + (bias / 2, -bias / 2), atol=1e-5)
    with zipfile.ZipFile(model_path) as archive:
        assert json.loads(archive.read(train.CALIBRATION_MEMBER)) == {"mask_bias": bias}
    assert (tmp_path / "m_float16.tflite").is_file() and (tmp_path / "m.tflite").is_file()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    # once more: the best plateau moved by -bias, so its middle is 0 and the total stays
    assert run_main(calibrate_argv(model_path, *folders), capsys)[0] == 0
    again = json.loads((tmp_path / "metrics.json").read_text())["calibration"]
    assert again["bias"] == pytest.approx(0.0, abs=1e-4) and again["previous_bias"] == bias
    assert again["total_bias"] == pytest.approx(bias, abs=1e-4)


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
                     calibrate_argv(tmp_path / "new" / "m.keras", tmp_path / name) + ["--dataset", str(tiny_dataset)]):
            code, out, err = run_main(argv, capsys)
            assert code == 2 and err.count("\n") == 1 and message in err and str(tmp_path / name) in err, err
            assert "loading faces" not in out
    assert model.read_bytes() == b"the old model" and sorted(p.name for p in model.parent.iterdir()) == ["m.keras"]
    assert not (tmp_path / "new").exists()


def write_blank_photos(folder: Path, count: int) -> None:
    """`count` plain grey photos per class: no face for res10."""
    for label in train.CLASS_DIRS:
        (folder / label).mkdir(parents=True)
        for k in range(count):
            cv2.imwrite(str(folder / label / f"{k}.png"), np.full((120, 100, 3), 40 * k + 60, np.uint8))


def test_recalibrate_without_a_face_found_leaves_the_model(tmp_path, capsys):
    write_blank_photos(tmp_path / "blank", 1)
    model_path = tmp_path / "out" / "m.keras"
    model_path.parent.mkdir()
    train.save_model(tiny_classifier(), model_path)
    before = model_path.read_bytes()
    code, _, err = run_main(calibrate_argv(model_path, tmp_path / "blank"), capsys)
    assert err == (f"error: --calibrate {tmp_path / 'blank'}: detect_mask_image.py found no face in its 2 photos; "
                   "a balanced accuracy needs both classes\n") and code == 2
    assert model_path.read_bytes() == before
    assert [p.name for p in model_path.parent.rglob("*") if p.is_file()] == ["m.keras"]


def test_image_script_errors_and_absence_are_one_line(calibration_folders, tmp_path, capsys):
    """A bad option for the image script is its own error line; without the image script beside this one,
    --evaluate and --calibrate say so before any work."""
    import shutil
    import subprocess
    import sys

    model = tmp_path / "m.keras"
    train.save_model(tiny_classifier(), model)
    code, _, err = run_main(["--evaluate", str(calibration_folders / "photos"), "-m", str(model), "--",
                             "--face-detector", "mtcnn"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: detect_mask_image.py: argument --face-detector")
    alone = Path(shutil.copy(REPO / "train_mask_detector.py", tmp_path / "train_mask_detector.py"))
    done = subprocess.run([sys.executable, str(alone), "--evaluate", str(calibration_folders / "photos"),
                           "-m", str(model)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == (
        f"error: {tmp_path / 'detect_mask_image.py'} not found: --evaluate scores the faces it finds; "
        "put it beside this script\n")


# --- the smoke command: quick, quiet, and nothing in the repository changed ---------------------------
@pytest.mark.slow
def test_the_smoke_command_writes_nothing_into_the_repository(tmp_path, shared):
    """README's smoke command in a fresh clone: it finishes, says its accuracy is expected at chance, writes
    only beside --model, prints no TensorFlow / CUDA / Keras noise, and git status stays clean."""
    import subprocess
    import sys

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    (clone / "dataset" / "photos2020").symlink_to(shared("dataset"))  # dataset/*/ is git-ignored (dataset/README)
    out = tmp_path / "smoke"
    done = subprocess.run([sys.executable, "train_mask_detector.py", "--dataset", "dataset/photos2020", "--epochs", "1",
                           "--fine-tune-epochs", "0", "--weights", "none", "--limit", "40",
                           "--model", str(out / "mask_detector.keras")],
                          cwd=clone, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": ""})
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # no cuInit, oneDNN, absl or Keras UserWarning lines
    assert "expected to be near chance" in done.stdout and "fine-tuning" not in done.stdout
    git = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=clone, capture_output=True, text=True)
    assert git.stdout.splitlines() == ["!! dataset/photos2020"]
    assert (out / "mask_detector.keras").is_file() and (out / "plot.png").is_file()
    again = subprocess.run([sys.executable, "train_mask_detector.py", "--dataset", "dataset/photos2020",
                            "--model", str(out / "mask_detector.keras")], cwd=clone, capture_output=True, text=True)
    assert again.returncode == 2 and "already exist" in again.stderr and "--overwrite" in again.stderr


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
