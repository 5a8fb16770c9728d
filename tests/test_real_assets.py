"""The committed model on the real demo photos of ../shared/examples, run the way a user runs it:
`detect_mask_image.py --image ../shared/examples --json --no-display` with every other flag at its default."""

import json
from pathlib import Path

import pytest

import detect_mask_image

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def centre_x(face):
    x1, _, x2, _ = face["box"]
    return (x1 + x2) / 2


@pytest.fixture(scope="module")
def classic(shared_dir):
    """{name: faces} from one run of the image script over the three classic photos."""
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = detect_mask_image.main(["--image", str(shared_dir / "examples"), "--json", "--no-display"])
    assert code == 0
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    return {line["image"].rsplit("/", 1)[-1]: line["faces"] for line in lines}


def test_example_01_one_masked_face(classic):
    faces = classic["example_01.png"]
    assert [f["label"] for f in faces] == ["Mask"], faces


def test_example_02_one_unmasked_face(classic):
    faces = classic["example_02.png"]
    assert [f["label"] for f in faces] == ["No Mask"], faces


def test_example_03_masked_woman_and_unmasked_man_behind_her(classic):
    faces = classic["example_03.png"]
    # The woman stands in front (centre x ~ 325 px, the larger face); the man is behind her to the left
    # (centre x ~ 215 px). A third person at the right edge may or may not be found.
    woman = [f for f in faces if 280 <= centre_x(f) <= 370]
    man = [f for f in faces if 170 <= centre_x(f) <= 260]
    others = [f for f in faces if f not in woman and f not in man]
    assert len(woman) == 1 and woman[0]["label"] == "Mask", faces
    assert len(man) == 1 and man[0]["label"] == "No Mask", faces
    assert all(centre_x(f) > 500 for f in others), faces


# The project's own demo photos (examples/README.md), left to right by face.
EXAMPLE_LABELS = {"astronaut.jpg": ["No Mask"], "astronaut_mask.jpg": ["Mask"], "grace_hopper.jpg": ["No Mask"],
                  "grace_hopper_mask.jpg": ["Mask"], "group.jpg": ["No Mask", "Mask"]}


def test_the_examples_folder_with_the_committed_model(capsys):
    """detect_mask_image.py --image examples, defaults: every face found and labelled right."""
    assert detect_mask_image.main(["--image", str(REPO / "examples"), "--json", "--no-display"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    labels = {Path(line["image"]).name: [f["label"] for f in sorted(line["faces"], key=centre_x)] for line in lines}
    assert labels == EXAMPLE_LABELS


# --- real photos from the validation set, end to end ---------------------------------------------------
VALIDATION_PHOTOS_PER_CLASS = 50  # the first 50 of each class by name (tests/score_labelled.py --limit 50)


def labelled_run(folder, extra=()):
    """{class folder: [label of the largest face, or None]} for the first photos of each class folder."""
    import io
    from contextlib import redirect_stdout

    from score_labelled import largest_face, list_images

    paths = {name: list_images(folder / name, detect_mask_image.IMAGE_EXTENSIONS, VALIDATION_PHOTOS_PER_CLASS)
             for name in ("with_mask", "without_mask")}
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = detect_mask_image.main(["--image", *map(str, paths["with_mask"] + paths["without_mask"]),
                                       "--json", "--no-display", *extra])
    assert code == 0
    faces = {json.loads(line)["image"]: json.loads(line)["faces"]
             for line in buffer.getvalue().splitlines() if line.startswith("{")}
    return {name: [(largest_face(faces[str(p)]) or {}).get("label") for p in found]
            for name, found in paths.items()}


@pytest.fixture(scope="module")
def face_mask_12k(shared_dir):
    folder = shared_dir / "validation" / "face_mask_12k"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


def test_real_photos_end_to_end_and_what_the_mask_threshold_adds(face_mask_12k):
    """Scored as the hidden set is (largest face, no face = wrong), on the first 50 + 50 photos; the default
    Mask threshold must label more masked photos right than the argmax (tests/RESULTS.md: 0.971 against
    0.859 balanced accuracy on all 1,789)."""
    default = labelled_run(face_mask_12k)
    argmax = labelled_run(face_mask_12k, ["--mask-threshold", "0.5"])
    masked = default["with_mask"].count("Mask") / VALIDATION_PHOTOS_PER_CLASS
    unmasked = default["without_mask"].count("No Mask") / VALIDATION_PHOTOS_PER_CLASS
    assert (masked + unmasked) / 2 >= 0.85, (masked, unmasked)
    assert argmax["with_mask"].count("Mask") < default["with_mask"].count("Mask")
