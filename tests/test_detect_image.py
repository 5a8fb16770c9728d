"""detect_mask_image.py, driven through main(argv) (stub classifier unless marked slow)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_helpers import (  # noqa: E402
    ROOT, error_lines, grace_hopper, image_script, shared_path, small_models, use_stub_classifier,
    write_image)

main = image_script.main


@pytest.fixture
def stub(monkeypatch, tmp_path):
    """(-m path, StubClassifier): load_classifier patched, no window ever opened."""
    monkeypatch.setattr(cv2, "imshow", lambda *a: pytest.fail("cv2.imshow called"))
    return use_stub_classifier(monkeypatch, tmp_path)


@pytest.fixture
def photo(tmp_path):
    return write_image(tmp_path / "grace.png", grace_hopper())


def run_json(capsys, *argv):
    status = main([*map(str, argv), "--json", "--no-display"])
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


def test_json_output_on_a_real_face(stub, photo, capsys):
    model, clf = stub
    status, records, err = run_json(capsys, "-i", photo, "-m", model)
    assert status == 0, err
    assert len(records) == 1 and records[0]["image"] == str(photo)
    faces = records[0]["faces"]
    assert len(faces) >= 1 and clf.calls == [len(faces)]
    for face in faces:
        assert set(face) == {"box", "confidence", "label", "probability", "detector", "mask_probability"}
        assert face["detector"] == "res10"
        x1, y1, x2, y2 = face["box"]
        assert all(type(v) is int for v in face["box"])
        assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 600
        assert face["label"] in ("Mask", "No Mask")
        assert 0.5 <= face["probability"] <= 1 and 0.5 <= face["confidence"] <= 1
        assert round(face["probability"], 4) == face["probability"]
    # Grace Hopper's face is at about (181, 122, 352, 333)
    assert any(abs(f["box"][0] - 181) < 15 and abs(f["box"][1] - 122) < 15 for f in faces)


def test_blank_image_has_no_faces(stub, tmp_path, capsys):
    model, clf = stub
    blank = write_image(tmp_path / "blank.png", np.full((200, 300, 3), 200, np.uint8))
    status, records, _ = run_json(capsys, "-i", blank, "-m", model)
    assert status == 0
    assert records == [{"image": str(blank), "faces": []}]
    assert clf.calls == []


def test_text_output(stub, photo, tmp_path, capsys):
    model, _ = stub
    blank = write_image(tmp_path / "blank.png", np.zeros((50, 50, 3), np.uint8))
    assert main(["-i", str(photo), str(blank), "-m", str(model), "--no-display"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"{blank}: no faces found"
    pattern = re.escape(f"{photo}: face 1 at (") + r"\d+, \d+, \d+, \d+\) (Mask|No Mask) \d+\.\d\d% " \
        r"\(face confidence [01]\.\d\d\)"
    assert re.fullmatch(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("name", ["with spaces.png", "grâce hopper 画像.jpg"])
def test_unusual_file_names(stub, tmp_path, name, capsys):
    model, _ = stub
    path = write_image(tmp_path / name, grace_hopper())
    out = tmp_path / f"out {name}"
    status, records, _ = run_json(capsys, "-i", path, "-m", model, "-o", out)
    assert status == 0
    assert records[0]["image"] == str(path) and records[0]["faces"]
    assert cv2.imdecode(np.fromfile(out, np.uint8), cv2.IMREAD_COLOR).shape == (600, 512, 3)


@pytest.mark.parametrize("kind", ["gray", "rgba", "16-bit", "16-bit gray"])
def test_gray_alpha_and_16_bit_inputs(stub, tmp_path, kind, capsys):
    model, _ = stub
    bgr = grace_hopper()
    image = {"gray": cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
             "rgba": cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
             "16-bit": bgr.astype(np.uint16) * 257,
             "16-bit gray": cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257}[kind]
    path = write_image(tmp_path / "input.png", image)
    status, records, _ = run_json(capsys, "-i", path, "-m", model)
    assert status == 0
    assert records[0]["faces"], kind


def test_exif_orientation_is_applied(stub, tmp_path, capsys):
    pil = pytest.importorskip("PIL.Image")
    model, _ = stub
    # stored rotated 90 degrees, with EXIF orientation 6 ("rotate 90 CW to display")
    stored = cv2.rotate(grace_hopper(), cv2.ROTATE_90_COUNTERCLOCKWISE)
    exif = pil.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    pil.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)).save(path, exif=exif, quality=95)
    assert image_script.read_image(path).shape == (600, 512, 3)
    status, records, _ = run_json(capsys, "-i", path, "-m", model, "--detect-size", "300")
    assert status == 0 and records[0]["faces"]


def test_folder_expands_to_sorted_images(stub, tmp_path, capsys):
    model, _ = stub
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.png", "a.jpg", "c.PNG"):
        write_image(folder / name, np.zeros((20, 20, 3), np.uint8))
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    out = tmp_path / "annotated"
    status, records, _ = run_json(capsys, "-i", folder, "-m", model, "-o", out)
    assert status == 0
    assert [Path(r["image"]).name for r in records] == ["a.jpg", "b.png", "c.PNG"]
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.png", "c.PNG"]


def test_folder_expansion_takes_subfolders_too_in_path_order(stub, tmp_path, capsys):
    model, _ = stub
    folder = tmp_path / "photos"
    for name in ("b.png", "sub/a.jpg", "a.tif", "sub/deeper/z.webp"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        write_image(folder / name, np.zeros((20, 20, 3), np.uint8))
    (folder / "sub" / "notes.txt").write_text("not an image")
    (folder / "c.jpeg.bak").write_text("not an image either")
    status, records, _ = run_json(capsys, "-i", folder, "-m", model)
    assert status == 0
    assert [Path(r["image"]).relative_to(folder).as_posix() for r in records] == [
        "a.tif", "b.png", "sub/a.jpg", "sub/deeper/z.webp"]


def test_several_images_with_the_same_name_get_distinct_outputs(stub, tmp_path, capsys):
    model, _ = stub
    paths = []
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        paths.append(write_image(tmp_path / sub / "same.png", np.zeros((20, 20, 3), np.uint8)))
    out = tmp_path / "out"
    status, _, _ = run_json(capsys, "-i", *paths, "-m", model, "-o", out)
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == ["same.png", "same_2.png"]


def test_single_output_file_is_written_whole(stub, photo, tmp_path, capsys):
    model, _ = stub
    out = tmp_path / "result.jpg"
    status, records, _ = run_json(capsys, "-i", photo, "-m", model, "-o", out)
    assert status == 0
    annotated = cv2.imread(str(out))
    assert annotated.shape == (600, 512, 3)
    x1, y1, x2, y2 = records[0]["faces"][0]["box"]
    assert not np.array_equal(annotated, grace_hopper())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grace.png", "result.jpg", "stub.tflite"]


@pytest.mark.parametrize("argv_tail, message", [
    (["-i", "{tmp}/missing.png"], "missing.png: no such file or folder"),
    (["-i", "{tmp}/empty"], "empty: folder has no images"),
    (["-i", "{photo}", "-o", "{tmp}/no/such/folder/out.png"], "does not exist"),
    (["-i", "{photo}", "-o", "{photo}/out.png"], "does not exist"),
    (["-i", "{photo}", "-o", "{tmp}/out.xyz"], "OpenCV cannot write .xyz"),
    (["-i", "{photo}", "-o", "{photo}"], "would overwrite the input image"),
    (["-i", "{photo}", "-m", "{tmp}/nope.keras"], "no such file"),
    (["-i", "{photo}", "-f", "{tmp}/no_face_dir"], "no such folder"),
])
def test_bad_inputs_are_one_error_line_and_exit_2(stub, photo, tmp_path, capsys, argv_tail, message):
    model, clf = stub
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, photo=photo) for a in argv_tail]
    if "-m" not in argv:
        argv += ["-m", str(model)]
    assert main(argv + ["--no-display"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and clf.calls == []  # checked before any work
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_unreadable_file_is_reported_and_the_rest_processed(stub, photo, tmp_path, capsys):
    model, _ = stub
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    status, records, err = run_json(capsys, "-i", bad, photo, empty, "-m", model, "-o", out)
    assert status == 2
    assert [r["image"] for r in records] == [str(photo)]
    assert len(error_lines(err)) == 2 and "broken.jpg: not an image" in err and "empty.png" in err
    assert [p.name for p in out.iterdir()] == ["grace.png"]


def test_no_model_anywhere_is_explained(stub, photo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(image_script, "SCRIPT_DIR", tmp_path / "nowhere")
    assert main(["-i", str(photo), "--no-display"]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) and "mask_detector.tflite" in err and "--model" in err


def test_display_only_where_one_exists(monkeypatch):
    for var in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    if sys.platform.startswith("linux"):
        assert image_script.has_display() is False
        monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
        assert image_script.has_display() is True


def test_without_display_no_window_even_without_no_display(stub, photo, monkeypatch, capsys):
    model, _ = stub
    monkeypatch.setattr(image_script, "has_display", lambda: False)
    assert main(["-i", str(photo), "-m", str(model)]) == 0


def test_unexpected_failure_is_exit_1_without_traceback(stub, photo, monkeypatch, capsys):
    model, _ = stub

    def boom(*args):
        raise ValueError("first line\nsecond line")
    monkeypatch.setattr(image_script, "detect_and_classify", boom)
    assert main(["-i", str(photo), "-m", str(model), "--no-display"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ValueError") and "Traceback" not in err
    with pytest.raises(ValueError):
        main(["-i", str(photo), "-m", str(model), "--no-display", "--debug"])


# --- real models (slow) ---------------------------------------------------------------------------

@pytest.mark.slow
def test_keras_model_end_to_end(photo, capsys):
    status, records, err = run_json(capsys, "-i", photo, "-m", small_models()["keras"])
    assert status == 0, err
    faces = records[0]["faces"]
    assert faces and all(f["label"] in ("Mask", "No Mask") for f in faces)


@pytest.mark.slow
def test_tflite_path_never_imports_tensorflow(photo, tmp_path):
    model = small_models()["tflite"]
    out = tmp_path / "annotated.png"
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import detect_mask_image as m; "
            f"rc = m.main(['-i', {str(photo)!r}, '-m', {str(model)!r}, '--json', '--no-display', "
            f"'-o', {str(out)!r}]); print('TF', 'tensorflow' in sys.modules, 'keras' in sys.modules); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "TF False False"
    record = json.loads(lines[0])
    assert record["faces"] and out.is_file()


@pytest.mark.slow
def test_classic_examples_after_converting_the_legacy_model(tmp_path, capsys):
    """The 2020 model, converted once by train_mask_detector.py --convert, labels the classic photos right
    through both files it writes (with the 2020 argmax, --mask-threshold 0.5)."""
    import shutil

    import train_mask_detector as train

    examples = shared_path("examples")
    legacy = shutil.copyfile(shared_path("legacy", "mask_detector.model"), tmp_path / "mask_detector.model")
    assert train.main(["--convert", str(legacy)]) == 0
    assert "wrote" in capsys.readouterr().out
    for model in (tmp_path / "mask_detector.keras", tmp_path / "mask_detector.tflite"):
        status, records, err = run_json(capsys, "-i", examples, "-m", model, "--mask-threshold", "0.5")
        assert status == 0 and err == "", err
        by_name = {Path(r["image"]).name: r["faces"] for r in records}

        def largest(faces):
            return max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        assert largest(by_name["example_01.png"])["label"] == "Mask", model
        assert largest(by_name["example_02.png"])["label"] == "No Mask", model
        labels = {f["label"] for f in by_name["example_03.png"]}
        assert labels >= {"Mask", "No Mask"}, model  # the masked woman in front and the man behind her


def test_a_normal_run_prints_only_the_face_lines():
    """The README's first command, as a user runs it: the two face lines and nothing else, on either stream
    (LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." included); --debug shows it."""
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    command = [sys.executable, "detect_mask_image.py", "--image", "examples/group.jpg", "--no-display"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("examples/group.jpg: face ") for line in lines), lines
    proc = subprocess.run([*command, "--detect-size", "300", "--no-mirror", "--debug"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and "XNNPACK" in proc.stderr
