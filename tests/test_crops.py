"""detect_mask_image.py --crops DIR and the per-face keys of --json (detector, mask_probability), and the label
layout on small faces. Real res10 face detector, stub classifier (fast)."""
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_helpers import (  # noqa: E402
    StubClassifier, astronaut, error_lines, grace_hopper, image_script, use_stub_classifier, write_image)

HEADER = ["file", "label", "source_image", "box_xyxy", "detector", "confidence"]


@pytest.fixture
def stub(monkeypatch, tmp_path):
    """(-m path, StubClassifier): load_classifier patched, no window ever opened."""
    monkeypatch.setattr(cv2, "imshow", lambda *a: pytest.fail("cv2.imshow called"))
    return use_stub_classifier(monkeypatch, tmp_path)


def two_faces():
    """One photo with two faces side by side (astronaut, Grace Hopper)."""
    canvas = np.full((600, 1100, 3), 255, np.uint8)
    canvas[44:556, :512] = astronaut()
    canvas[:, 560:1072] = grace_hopper()
    return canvas


def blank():
    return np.full((120, 160, 3), 128, np.uint8)


def run(capsys, model, *argv):
    """main(argv) -> (status, stdout lines, stderr); res10 at 300 and 600 px (at 900 it also finds a 20 px
    false face on the astronaut photo)."""
    sizes = [] if "centerface" in argv else ["--detect-size", "300", "600"]
    status = image_script.main([*map(str, argv), "-m", str(model), "--no-display", *sizes])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def read_manifest(folder):
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def tree(root, photos):
    """{relative path: image} written under root; returns root."""
    for name, image in photos.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_image(root / name, image)
    return root


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_crops_mirror_the_input_tree_with_a_manifest(stub, tmp_path, capsys):
    model, _ = stub
    photos = tree(tmp_path / "photos", {"with_mask/a.png": astronaut(), "without_mask/b.jpg": grace_hopper(),
                                        "street/c.png": two_faces(), "empty.png": blank()})
    faces = tmp_path / "faces"
    status, lines, err = run(capsys, model, "-i", photos, "--crops", faces)
    assert status == 0, err
    assert err.splitlines()[-1] == "crops: 4 faces from 3 photos; 1 photos without a face"
    assert files_under(faces) == ["manifest.csv", "street/c_1.jpg", "street/c_2.jpg", "with_mask/a_1.jpg",
                                  "without_mask/b_1.jpg"]
    header, rows = read_manifest(faces)
    assert header == HEADER
    texts = {line.split(": face ")[0] + f"#{line.split(': face ')[1].split()[0]}": line for line in lines
             if ": face " in line}
    for row in rows:
        stem, n = row["file"].rsplit("_", 1)
        source = photos / (stem + Path(row["source_image"]).suffix)
        assert row["source_image"] == str(source)
        x1, y1, x2, y2 = map(int, row["box_xyxy"].split())
        assert texts[f"{source}#{n.split('.')[0]}"].split(" at ")[1].startswith(f"({x1}, {y1}, {x2}, {y2}) ")
        assert row["detector"] == "res10" and len(row["confidence"].split(".")[1]) == 4
        assert 0.5 <= float(row["confidence"]) <= 1
    labels = {row["file"]: row["label"] for row in rows}
    assert labels["with_mask/a_1.jpg"] == "with_mask" and labels["without_mask/b_1.jpg"] == "without_mask"
    for n in (1, 2):  # no class folder in the path: the model's label as a folder name
        line = texts[f"{photos / 'street/c.png'}#{n}"]
        assert labels[f"street/c_{n}.jpg"] == ("with_mask" if ") Mask " in line else "without_mask")


def test_a_crop_is_the_box_region_of_the_photo_at_native_size(stub, tmp_path, capsys):
    model, _ = stub
    photo = write_image(tmp_path / "one.png", two_faces())
    faces = tmp_path / "faces"
    status, lines, err = run(capsys, model, "-i", photo, "--crops", faces, "--json", "-o", tmp_path / "drawn.png")
    assert status == 0, err  # -o: the crops are taken before the boxes are drawn
    found = json.loads(lines[0])["faces"]
    _, rows = read_manifest(faces)
    assert [row["file"] for row in rows] == ["one_1.jpg", "one_2.jpg"]  # a single file: DIR/<stem>_<n>.jpg
    for face, row in zip(found, rows):
        assert row["box_xyxy"] == " ".join(map(str, face["box"]))  # res10's box as classified
        x1, y1, x2, y2 = face["box"]
        crop = cv2.imread(str(faces / row["file"]))
        region = two_faces()[y1:y2, x1:x2]
        assert crop.shape == region.shape
        assert np.abs(crop.astype(int) - region).mean() < 3  # JPEG's loss only


def test_centerface_crops_are_reframed_and_clipped(stub, tmp_path, capsys):
    model, _ = stub
    frame = astronaut()[90:, 150:330]  # the face near the top edge: the reframed box leaves the photo
    photo = write_image(tmp_path / "edge.png", frame)
    faces = tmp_path / "faces"
    status, lines, err = run(capsys, model, "-i", photo, "--crops", faces, "--json", "--face-detector", "centerface")
    assert status == 0, err
    face, = json.loads(lines[0])["faces"]
    assert face["detector"] == "centerface"
    row, = read_manifest(faces)[1]
    reframed = image_script.classifier_box(face["box"], "centerface")
    box = image_script.clip_box(reframed, frame.shape[1], frame.shape[0])
    assert box != tuple(int(round(v)) for v in reframed)  # clipped
    assert row["box_xyxy"] == " ".join(map(str, box)) and row["detector"] == "centerface"
    assert cv2.imread(str(faces / row["file"])).shape[:2] == (box[3] - box[1], box[2] - box[0])


def test_a_rerun_replaces_the_rows_of_its_photos_and_keeps_the_others(stub, tmp_path, capsys):
    model, _ = stub
    first = tree(tmp_path / "first", {"with_mask/a.png": two_faces(), "with_mask/b.png": astronaut()})
    second = tree(tmp_path / "second", {"without_mask/c.png": grace_hopper()})
    faces = tmp_path / "faces"
    assert run(capsys, model, "-i", first, "--crops", faces)[0] == 0
    assert run(capsys, model, "-i", second, "--crops", faces)[0] == 0
    assert [row["file"] for row in read_manifest(faces)[1]] == [
        "with_mask/a_1.jpg", "with_mask/a_2.jpg", "with_mask/b_1.jpg", "without_mask/c_1.jpg"]
    write_image(first / "with_mask/a.png", grace_hopper())  # now one face
    write_image(first / "with_mask/b.png", blank())  # now none
    status, _, err = run(capsys, model, "-i", first, "--crops", faces)
    assert status == 0, err
    assert err.splitlines()[-1] == "crops: 1 faces from 1 photos; 1 photos without a face"
    _, rows = read_manifest(faces)
    assert [row["file"] for row in rows] == ["without_mask/c_1.jpg", "with_mask/a_1.jpg"]  # kept rows first
    assert files_under(faces) == ["manifest.csv", "with_mask/a_1.jpg", "without_mask/c_1.jpg"]
    assert cv2.imread(str(faces / "with_mask/a_1.jpg")).shape[:2] != (0, 0)


def test_photos_whose_names_differ_only_in_the_extension_get_their_own_crops(stub, tmp_path, capsys):
    model, _ = stub
    photos = tree(tmp_path / "photos", {"a.jpg": astronaut(), "a.png": grace_hopper()})
    faces = tmp_path / "faces"
    assert run(capsys, model, "-i", photos, "--crops", faces)[0] == 0
    _, rows = read_manifest(faces)
    assert [(row["file"], Path(row["source_image"]).name) for row in rows] == [("a_1.jpg", "a.jpg"),
                                                                              ("a-2_1.jpg", "a.png")]


def test_an_interrupted_run_leaves_a_consistent_folder(stub, tmp_path, capsys, monkeypatch):
    model, _ = stub
    photos = tree(tmp_path / "photos", {"a.png": astronaut(), "b.png": grace_hopper()})
    real = image_script.detect_and_classify
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(image_script, "detect_and_classify", interrupted)
    faces = tmp_path / "faces"
    status, _, err = run(capsys, model, "-i", photos, "--crops", faces)
    assert status == 130 and error_lines(err) == ["error: interrupted"]
    _, rows = read_manifest(faces)
    assert [row["file"] for row in rows] == ["a_1.jpg"]
    assert files_under(faces) == ["a_1.jpg", "manifest.csv"]  # no temp files, every crop listed


@pytest.mark.parametrize("make, problem", [
    (lambda d: (d.mkdir(), (d / "notes.txt").write_text("mine")), "is not empty and has no manifest.csv"),
    (lambda d: d.write_text("a file"), "is a file"),
    (lambda d: (d.mkdir(), (d / "manifest.csv").write_text("name,size\nx,1\n")), "is not a crop manifest")])
def test_a_folder_that_is_not_a_crop_folder_is_refused(stub, tmp_path, capsys, make, problem):
    model, clf = stub
    photo = write_image(tmp_path / "a.png", astronaut())
    target = tmp_path / "faces"
    make(target)
    before = files_under(tmp_path)
    status, lines, err = run(capsys, model, "-i", photo, "--crops", target)
    assert status == 2 and lines == [] and clf.calls == []
    assert len(error_lines(err)) == 1 and problem in err and err.startswith(f"error: --crops {target}: ")
    assert files_under(tmp_path) == before


def test_an_unwritable_crop_folder_is_one_error_before_any_photo(stub, tmp_path, capsys):
    model, clf = stub
    photo = write_image(tmp_path / "a.png", astronaut())
    (tmp_path / "plain").write_text("a file, not a folder")
    status, lines, err = run(capsys, model, "-i", photo, "--crops", tmp_path / "plain" / "faces")
    assert status == 2 and lines == [] and clf.calls == []
    assert err.splitlines() == [f"error: --crops {tmp_path / 'plain' / 'faces'}: cannot write there "
                                "(Not a directory); choose another folder"]


def test_a_crop_folder_inside_the_input_folder_is_refused(stub, tmp_path, capsys):
    model, clf = stub
    photos = tree(tmp_path / "photos", {"a.png": astronaut()})
    status, _, err = run(capsys, model, "-i", photos, "--crops", photos / "faces")
    assert status == 2 and clf.calls == [] and "inside the input folder" in err
    assert not (photos / "faces").exists()


def test_the_training_script_reads_the_crop_folder(stub, tmp_path, capsys):
    import train_mask_detector as train
    model, _ = stub
    photos = tree(tmp_path / "photos", {"with_mask/a.png": two_faces(), "without_mask/b.png": grace_hopper()})
    faces = tmp_path / "faces"
    assert run(capsys, model, "-i", photos, "--crops", faces)[0] == 0
    data = train.load_datasets([faces])
    assert data["kinds"] == ["face crops with a manifest"] and data["skipped"] == []
    assert [Path(p).relative_to(faces).as_posix() for p in data["paths"]] == [
        "with_mask/a_1.jpg", "with_mask/a_2.jpg", "without_mask/b_1.jpg"]
    assert data["labels"].tolist() == [0, 0, 1]
    assert data["sources"] == [f"{faces}:{photos / name}" for name in ("with_mask/a.png",) * 2 + ("without_mask/b.png",)]


def test_json_says_the_detector_and_the_full_mask_probability(stub, tmp_path, capsys):
    model, clf = stub
    photo = write_image(tmp_path / "two.png", two_faces())
    status, lines, _ = run(capsys, model, "-i", photo, "--json")
    assert status == 0
    faces = json.loads(lines[0])["faces"]
    assert len(faces) == 2
    for face in faces:
        assert face["detector"] == "res10"
        batch, _ = image_script.preprocess_faces(two_faces(), [face["box"]])
        mask = float(StubClassifier().predict(batch)[0, 0])
        assert face["mask_probability"] == mask and round(mask, 4) != mask  # not rounded
        assert face["label"] == ("Mask" if mask >= 0.5 else "No Mask")
        assert face["probability"] == round(mask if face["label"] == "Mask" else 1 - mask, 4)


def test_json_names_res10_for_a_face_from_the_centerface_fallback(stub, tmp_path, capsys, monkeypatch):
    model, _ = stub
    monkeypatch.setattr(image_script.CenterFace, "detections", lambda self, image, confidence: np.zeros((0, 5)))
    photo = write_image(tmp_path / "a.png", astronaut())
    status, lines, _ = run(capsys, model, "-i", photo, "--json", "--face-detector", "centerface")
    assert status == 0
    faces = json.loads(lines[0])["faces"]
    assert faces and all(face["detector"] == "res10" for face in faces)
    assert abs(faces[0]["box"][0] - 182) < 15  # the astronaut's face


# --- labels on small faces -----------------------------------------------------------------------

def text_box(face, width, height):
    """(x1, y1, x2, y2) a face's label covers, by label_layout."""
    text, (x, y), scale, thickness = image_script.label_layout(face, width, height)
    (w, h), baseline = cv2.getTextSize(text, image_script.LABEL_FONT, scale, thickness)
    return x, y - h, x + w, y + baseline


def old_text_box(face, width):
    """The 2020 layout: font scale 0.45, thickness 2, 10 px above the box."""
    text = f"{face['label']}: {face['probability'] * 100:.2f}%"
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 2)
    x1, y1 = face["box"][:2]
    x = max(0, min(x1, width - w))
    y = y1 - 10 if y1 - 10 > h else y1 + h + 10
    return x, y - h, x + w, y + baseline


def overlap(a, b):
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def crowd():
    """Faces of a 400x156 crowd photo: 28-40 px boxes, some 4 px apart."""
    boxes = [(10, 40, 38, 74), (42, 30, 72, 66), (90, 50, 120, 88), (124, 45, 158, 85), (200, 20, 240, 66),
             (250, 60, 278, 96), (282, 25, 318, 70), (360, 35, 398, 80)]
    return [{"box": list(box), "label": ("Mask", "No Mask")[i % 2], "probability": 0.9912, "confidence": 0.9}
            for i, box in enumerate(boxes)]


def test_labels_on_a_crowd_overlap_less_than_the_2020_layout_and_stay_inside_the_frame():
    faces = crowd()
    new = [text_box(face, 400, 156) for face in faces]
    old = [old_text_box(face, 400) for face in faces]
    pairs = [(i, j) for i in range(len(faces)) for j in range(i + 1, len(faces))]
    new_overlap = sum(overlap(new[i], new[j]) for i, j in pairs)
    old_overlap = sum(overlap(old[i], old[j]) for i, j in pairs)
    assert new_overlap < old_overlap / 3, (new_overlap, old_overlap)
    for x1, y1, x2, y2 in new:
        assert 0 <= x1 < x2 <= 400 and 0 <= y1 < y2 <= 156
    frame = np.zeros((156, 400, 3), np.uint8)
    image_script.draw_faces(frame, faces)  # draws without error
    assert frame.any()


def test_the_label_scale_follows_the_box_within_its_range():
    face = {"label": "No Mask", "probability": 0.9912, "confidence": 0.9}
    scales = [image_script.label_layout({**face, "box": [10, 100, 10 + w, 100 + w]}, 2000, 2000)[2]
              for w in (20, 60, 120, 200, 300, 1500)]
    low, high = image_script.LABEL_SCALES
    assert scales[:2] == [low, low] and scales[-1] == high
    assert low < scales[2] < scales[3] < scales[4] < high
    text, _, scale, _ = image_script.label_layout({**face, "box": [10, 100, 210, 300]}, 2000, 2000)
    (width, _), _ = cv2.getTextSize(text, image_script.LABEL_FONT, scale, 1)
    assert text == "No Mask: 99.12%" and abs(width - 200) <= 10  # as wide as the box
    assert image_script.label_layout({**face, "box": [10, 100, 30, 120]}, 2000, 2000)[0] == "No Mask: 99%"


def test_crops_are_written_as_found_and_the_manifest_at_the_end(tmp_path):
    photo = write_image(tmp_path / "a.png", astronaut())
    crops = image_script.CropFolder(tmp_path / "faces", [str(photo)], [photo])
    assert read_manifest(tmp_path / "faces") == (HEADER, [])  # a crop folder from the start
    face = {"box": [182, 57, 272, 176], "confidence": 0.99, "label": "Mask", "probability": 0.9, "detector": "res10"}
    crops.add(photo, astronaut(), [face])
    assert (tmp_path / "faces/a_1.jpg").is_file() and read_manifest(tmp_path / "faces")[1] == []
    crops.close()
    assert crops.summary() == "crops: 1 faces from 1 photos; 0 photos without a face"
    assert [row["file"] for row in read_manifest(tmp_path / "faces")[1]] == ["a_1.jpg"]
