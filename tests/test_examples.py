"""examples/make_examples.py: writes the demo images, and masks only the lower part of the face."""

import importlib.util

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO

SCRIPT = REPO / "examples" / "make_examples.py"


def _load():
    spec = importlib.util.spec_from_file_location("make_examples", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mk = _load()


@pytest.fixture(scope="module")
def net():
    return mk.load_detector()


@pytest.fixture(scope="module")
def images(net):
    return mk.make_examples(net)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples")
    assert mk.main(["--output-dir", str(out)]) == 0
    return out


def test_writes_every_example(written):
    for name in mk.OUTPUT_NAMES:
        path = written / name
        assert path.is_file(), name
        assert path.stat().st_size < 300_000, name
        assert cv2.imread(str(path)) is not None, name
    assert sorted(p.name for p in written.iterdir()) == sorted(mk.OUTPUT_NAMES)


def test_output_is_deterministic(written, tmp_path):
    assert mk.main(["--output-dir", str(tmp_path)]) == 0
    for name in mk.OUTPUT_NAMES:
        assert (tmp_path / name).read_bytes() == (written / name).read_bytes(), name


def test_detector_files_come_from_the_installed_distribution():
    prototxt, weights = mk.detector_paths()
    assert prototxt.is_file() and weights.is_file()
    assert weights.stat().st_size == 10_666_211


@pytest.mark.parametrize("person", ["grace_hopper", "astronaut"])
def test_mask_changes_only_the_lower_face(images, net, person):
    plain, masked = images[f"{person}.jpg"], images[f"{person}_mask.jpg"]
    assert plain.shape == masked.shape
    (x0, y0, x1, y1), *_ = mk.detect_faces(net, plain)
    bw, bh = x1 - x0, y1 - y0
    changed = np.any(plain != masked, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.size > 0.2 * bw * bh  # a real mask, not a few pixels
    # nothing above ~40% down the face box, nothing outside the box (ear loops reach its sides)
    assert ys.min() >= y0 + 0.40 * bh
    assert ys.max() <= y1 + 0.06 * bh
    assert xs.min() >= x0 - 0.04 * bw
    assert xs.max() <= x1 + 0.04 * bw
    # the mask itself covers the mouth-and-chin middle of the box, light blue (B > R)
    cy0, cy1 = y0 + int(0.55 * bh), y0 + int(0.90 * bh)
    cx0, cx1 = x0 + int(0.30 * bw), x0 + int(0.70 * bw)
    assert changed[cy0:cy1, cx0:cx1].mean() > 0.95
    b, g, r = masked[cy0:cy1, cx0:cx1].reshape(-1, 3).mean(axis=0)
    assert b > r + 40 and b > 150


@pytest.mark.parametrize("person", ["grace_hopper", "astronaut"])
def test_written_jpegs_differ_only_in_the_lower_face(written, net, person):
    plain = cv2.imread(str(written / f"{person}.jpg"))
    masked = cv2.imread(str(written / f"{person}_mask.jpg"))
    (x0, y0, x1, y1), *_ = mk.detect_faces(net, plain)
    bw, bh = x1 - x0, y1 - y0
    diff = np.abs(plain.astype(int) - masked.astype(int)).max(axis=2)
    margin = 16  # JPEG blocks (8x8, 16x16 with chroma subsampling) smear changes a little
    outside = np.ones_like(diff, bool)
    outside[
        max(int(y0 + 0.40 * bh) - margin, 0) : int(y1 + 0.06 * bh) + margin,
        max(int(x0 - 0.04 * bw) - margin, 0) : int(x1 + 0.04 * bw) + margin,
    ] = False
    assert diff[outside].max() == 0  # JPEG blocks are coded independently
    assert (diff[~outside] > 60).mean() > 0.2


def test_masked_faces_are_still_found(images, net):
    for name in ("grace_hopper_mask.jpg", "astronaut_mask.jpg"):
        assert len(mk.detect_faces(net, images[name])) == 1, name


def test_group_has_one_masked_and_one_unmasked_face(images, net):
    group = images["group.jpg"]
    faces = mk.detect_faces(net, group)
    assert len(faces) == 2
    blue = []
    for x0, y0, x1, y1 in faces:
        lower = group[y0 + (y1 - y0) * 6 // 10 : y1, x0 + (x1 - x0) // 3 : x1 - (x1 - x0) // 3]
        b, g, r = lower.reshape(-1, 3).mean(axis=0)
        blue.append(b > r + 40)
    assert sorted(blue) == [False, True]


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(40, 240),
    w=st.integers(40, 240),
    fx0=st.floats(-0.2, 0.9),
    fy0=st.floats(-0.2, 0.9),
    fw=st.floats(0.05, 1.0),
    fh=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**16),
)
def test_draw_mask_stays_inside_its_region(h, w, fx0, fy0, fw, fh, seed):
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    box = (int(fx0 * w), int(fy0 * h), int((fx0 + fw) * w) + 2, int((fy0 + fh) * h) + 2)
    original = image.copy()
    out = mk.draw_mask(image, box)
    assert np.array_equal(image, original)  # the input is left alone
    assert out.shape == image.shape and out.dtype == np.uint8
    rx0, ry0, rx1, ry1 = mk.mask_region(box, image.shape)
    outside = np.ones((h, w), bool)
    if rx1 > rx0 and ry1 > ry0:
        outside[ry0:ry1, rx0:rx1] = False
    assert np.array_equal(out[outside], image[outside])
    x0, y0, x1, y1 = box
    assert ry0 >= min(max(y0 + 0.40 * (y1 - y0), 0), h) - 1 or ry1 <= ry0


def test_parse_args_defaults():
    args = mk.parse_args([])
    assert args.output_dir == SCRIPT.parent
    assert args.quality == mk.JPEG_QUALITY
