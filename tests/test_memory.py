"""Bounded cost on large photos and progress over a folder (issue 27). Memory over many inputs is measured in
tests/benchmark.py --memory (a fresh process per figure), not here; the CenterFace net cache is tested in
test_detect_common.py (test_centerface_nets_are_bounded_and_never_reused_for_another_size)."""
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest

from detect_helpers import ROOT, SCRIPTS, StubClassifier, astronaut, centerface, image_script, write_image


@pytest.mark.parametrize("script", SCRIPTS)
def test_native_size_is_capped_for_large_photos_only(script):
    assert script.scaled_size(4032, 3024, 0) == (script.NATIVE_MAX_SIDE, script.NATIVE_MAX_SIDE * 3 // 4)
    assert script.scaled_size(3024, 4032, 0) == (script.NATIVE_MAX_SIDE * 3 // 4, script.NATIVE_MAX_SIDE)
    assert script.scaled_size(640, 480, 0) == (640, 480)
    assert script.scaled_size(4032, 3024, 4032) == (4032, 3024)  # asked for: the photo's own size


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_says_what_the_native_cap_gives_up_and_how_to_ask_for_more(script, capsys):
    assert script.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"larger photos shrunk to {script.NATIVE_MAX_SIDE} px" in text
    assert "smaller faces at more time and memory" in text


def test_centerface_on_a_phone_photo_runs_at_the_capped_size():
    """A 4032x3024 photo: one net, for the capped input only, and the face found where it is."""
    photo = np.full((3024, 4032, 3), 128, np.uint8)
    photo[1000:2536, 1500:3036] = __import__("cv2").resize(astronaut(), (1536, 1536))
    detector = image_script.load_face_detector(name="centerface")
    faces = image_script.find_faces(photo, detector, 0.5, [0], 0.3)
    assert detector.net.cache_info().currsize == 1
    assert detector.net.cache_info().misses == 1
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0][0]
    assert 1500 < x1 < x2 < 3036 and 1000 < y1 < y2 < 2536
    small = image_script.find_faces(photo[::4, ::4].copy(), centerface(), 0.5, [0], 0.3)
    assert np.allclose(np.array(small[0][0]) * 4, faces[0][0], atol=40)  # the same face in a quarter-size photo


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_crowd_is_classified_a_few_faces_at_a_time_in_order(script):
    """The classifier's memory grows with its batch: a crowd goes CLASSIFIER_BATCH faces at a time, each face
    keeping its own label."""
    frame = np.zeros((100, 2100, 3), np.uint8)
    faces = [((100 * n, 0, 100 * n + 90, 90), 0.9) for n in range(21)]
    for n in range(21):
        frame[:, 100 * n:100 * n + 90] = 255 * (n % 2)  # white faces read as Mask by the stub, black as No Mask
    classifier = StubClassifier()
    results = script.classify_faces(frame, faces, classifier, 0.5)
    assert classifier.calls == [script.CLASSIFIER_BATCH, script.CLASSIFIER_BATCH, 21 - 2 * script.CLASSIFIER_BATCH]
    assert [result["label"] for result in results] == [("No Mask", "Mask")[n % 2] for n in range(21)]
    assert [result["box"] for result in results] == [list(box) for box, _ in faces]


class TwoPassNet:
    """One detection row (0-1 coordinates) for the photo as given, another for the framed look; records the input
    shapes it was given."""

    def __init__(self, first_row, framed_row):
        self.rows = [np.asarray(first_row, np.float32), np.asarray(framed_row, np.float32)]
        self.calls = []

    def setInput(self, blob):  # noqa: N802 - OpenCV's name
        self.calls.append(blob.shape)

    def forward(self):
        return self.rows[min(len(self.calls), 2) - 1].reshape(1, 1, 1, 7)


def test_the_border_look_shrinks_a_large_photo_first_and_maps_boxes_back():
    """3000x3000 photo, border 0.25, sizes 300: the look sees a 300x300 framed copy (the photo at 200 px), never a
    4500x4500 one; a face at (10, 10)-(290, 290) of the framed input is (150, 150)-(2850, 2850) in the photo."""
    frame = np.full((3000, 3000, 3), 90, np.uint8)
    net = TwoPassNet(np.zeros(7), [0, 1, 0.9, 60 / 300, 60 / 300, 240 / 300, 240 / 300])
    faces = image_script.detect_faces(frame, net, 0.5, [300], 0.4, border=0.25)
    assert net.calls[1][2:] == (300, 300)
    assert [box for box, _ in faces] == [(150, 150, 2850, 2850)]


def run_on_a_folder(tmp_path, stderr_is_a_terminal):
    """detect_mask_image.py --json on a folder of 3 photos, stdout a pipe, stderr a pty or a pipe: (stdout, stderr)."""
    (tmp_path / "photos").mkdir()
    for n in range(3):
        write_image(tmp_path / "photos" / f"{n}.png", astronaut()[::2, ::2])
    command = [sys.executable, str(ROOT / "detect_mask_image.py"), "-i", str(tmp_path / "photos"), "--json",
               "--no-display", "--detect-size", "300", "--no-mirror"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if not stderr_is_a_terminal:
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # rows, columns (0x0 at first)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=terminal, env=env, cwd=ROOT)
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    stdout = child.stdout.read().decode()
    assert child.wait(timeout=300) == 0, seen
    os.close(controller)
    return stdout, seen.decode(errors="replace")


@pytest.mark.parametrize("stderr_is_a_terminal", [True, False])
def test_progress_over_a_folder_shows_on_a_terminal_only(tmp_path, stderr_is_a_terminal):
    stdout, stderr = run_on_a_folder(tmp_path, stderr_is_a_terminal)
    assert [json.loads(line)["image"].endswith(f"{n}.png") for n, line in enumerate(stdout.splitlines())] == \
        [True] * 3  # the JSON lines untouched either way
    if stderr_is_a_terminal:
        # e.g. "100%|#####| 3/3 [00:09<00:00,  3.28s/photo]": done/total [elapsed<left, rate] (tqdm inverts a
        # rate under 1/s)
        assert re.search(r"100%.*\| 3/3 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(photo/s|s/photo)\]", stderr), stderr
    else:
        assert stderr == ""
