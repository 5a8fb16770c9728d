"""detect_mask_video.py, driven through main(argv) and process() (stub classifier unless slow)."""
import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_helpers import (  # noqa: E402
    StubClassifier, error_lines, face_net, small_models, use_stub_classifier, video_frames,
    video_script, write_video)

main = video_script.main
LABELS = video_script.LABELS
FRAMES = 6
FPS = 10.0


@pytest.fixture
def stub(monkeypatch, tmp_path):
    monkeypatch.setattr(cv2, "imshow", lambda *a: pytest.fail("cv2.imshow called"))
    return use_stub_classifier(monkeypatch, tmp_path)


@pytest.fixture
def video(tmp_path):
    return write_video(tmp_path / "clip.avi", video_frames(FRAMES), FPS)


def frame_count(path):
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened()
    n = 0
    while capture.read()[0]:
        n += 1
    capture.release()
    return n


def run_json(capsys, *argv):
    status = main([*map(str, argv), "--json", "--no-display"])
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_to_json_and_annotated_output(stub, video, tmp_path, capsys, suffix):
    model, clf = stub
    out = tmp_path / f"annotated{suffix}"
    status, lines, err = run_json(capsys, "-i", video, "-m", model, "-o", out)
    assert status == 0, err
    records, people = [r for r in lines if "frame" in r], [r for r in lines if "person" in r]
    assert len(records) + len(people) == len(lines)
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert [r["time"] for r in records] == [round(i / FPS, 4) for i in range(FRAMES)]
    assert all(len(r["faces"]) >= 1 for r in records)
    assert clf.calls == [len(r["faces"]) for r in records]  # one classifier call per frame
    face = records[0]["faces"][0]
    assert set(face) == {"box", "confidence", "label", "probability", "id", "frame_label", "frame_probability",
                         "detector", "mask_probability", "too_small"}
    assert frame_count(out) == FRAMES
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clip.avi", out.name, "stub.tflite"])
    summary = err.strip().splitlines()[-1]
    assert summary.startswith(f"summary: {FRAMES} frames, 0 dropped, 0 skipped, 0 reconnects, mean ")
    with_mask, without = (sum(p["label"] == label and p["event"] == "end" for p in people) for label in LABELS)
    assert summary.endswith(f"frames): {with_mask} with mask, {without} without mask, 0 too far to tell (faces "
                            "under 20 px)")


def test_max_frames(stub, video, capsys):
    model, _ = stub
    status, records, _ = run_json(capsys, "-i", video, "-m", model, "--max-frames", "2")
    assert status == 0 and [r["frame"] for r in records if "frame" in r] == [0, 1]


def test_video_of_blank_frames_has_no_faces(stub, tmp_path, capsys):
    model, clf = stub
    clip = write_video(tmp_path / "blank.avi", [np.full((120, 160, 3), 90, np.uint8)] * 3)
    status, records, _ = run_json(capsys, "-i", clip, "-m", model)
    assert status == 0 and [r["faces"] for r in records] == [[], [], []] and clf.calls == []


@pytest.mark.parametrize("argv, message", [
    (["-i", "{tmp}/missing.mp4"], "missing.mp4: no such file"),
    (["-i", "{tmp}/notes.txt"], "notes.txt"),
    (["-i", "99"], "camera 99: cannot be opened"),
    (["-i", "{video}", "-o", "{tmp}/out.mkv"], "unsupported extension; use .mp4 or .avi"),
    (["-i", "{video}", "-o", "{tmp}/no/such/out.mp4"], "does not exist"),
    (["-i", "{video}", "-o", "{video}"], "would overwrite the input video"),
    (["-i", "{video}", "--max-frames", "0"], "must be a whole number >= 1"),
    (["-i", "{video}", "--detect-every", "0"], "must be a whole number >= 1"),
])
def test_bad_sources_and_outputs_exit_2(stub, video, tmp_path, capsys, argv, message):
    model, clf = stub
    (tmp_path / "notes.txt").write_text("hello, not a video\n")
    argv = [a.format(tmp=tmp_path, video=video) for a in argv] + ["-m", str(model), "--no-display"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and clf.calls == []
    if "must be" in message:  # argparse's own usage error
        assert f"detect_mask_video.py: error: argument {argv[2]}: " + message in err
    else:
        assert message in err and len(error_lines(err)) == 1 and err.count("\n") == 1, err


# --- the frame loop with a fake capture (live-source behaviour) -----------------------------------

class FakeCapture:
    """Plays a script of reads: a frame array, None (failed read) or an exception to raise; each read
    takes delay seconds (a camera blocks until its next frame)."""

    def __init__(self, script, fps=0.0, delay=0.0):
        self.script, self.fps, self.delay = list(script), fps, delay

    def read(self):
        time.sleep(self.delay)
        if not self.script:
            return False, None
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return (item is not None), item

    def get(self, prop):
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0


def loop_args(**overrides):
    args = vars(video_script.parse_args(["--json", "--no-display", "--max-failures", "2", "--nms", "0.4"]))
    args.update(overrides)
    return argparse.Namespace(**args)


def test_live_source_tolerates_failed_reads_then_gives_up(capsys):
    frame = video_frames(1)[0]
    capture = FakeCapture([frame, None, None, frame, None, None, None, frame], delay=0.1)
    status = video_script.process(loop_args(), capture, True, face_net(), StubClassifier())
    out, err = capsys.readouterr()
    assert status == 1
    assert len(out.splitlines()) == 2  # frames 0 and 1; the last frame is never reached
    assert "gave up after 3 failed reads" in err
    assert "summary: 2 frames, 5 dropped, 0 skipped" in err


def test_file_source_just_ends(capsys):
    frame = video_frames(1)[0]
    capture = FakeCapture([frame, frame, None, frame], fps=25.0)
    status = video_script.process(loop_args(), capture, False, face_net(), StubClassifier())
    out, err = capsys.readouterr()
    assert status == 0 and len(out.splitlines()) == 2 and "summary: 2 frames, 0 dropped" in err


def test_ctrl_c_still_writes_the_output(tmp_path, capsys):
    frames = video_frames(3)
    capture = FakeCapture([*frames, KeyboardInterrupt()], fps=10.0)
    out = tmp_path / "partial.avi"
    status = video_script.process(loop_args(json=False, output=out), capture, False, face_net(), StubClassifier())
    assert status == 130
    assert frame_count(out) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["partial.avi"]  # no temp file left


def test_closed_stdout_stops_like_q_and_keeps_the_output(tmp_path, monkeypatch, capsys):
    class ClosingPipe:  # like `| head -1`: takes the first line, then the reader is gone
        lines = []

        def write(self, text):
            if "".join(self.lines).endswith("\n"):
                raise BrokenPipeError(32, "Broken pipe")
            self.lines.append(text)

        def flush(self):
            pass
    monkeypatch.setattr(sys, "stdout", ClosingPipe())
    capture = FakeCapture(video_frames(4), fps=10.0)
    out = tmp_path / "piped.avi"
    assert video_script.process(loop_args(output=out), capture, False, face_net(), StubClassifier()) == 0
    assert frame_count(out) == 1
    assert "summary: 1 frames" in capsys.readouterr().err


def test_a_crash_leaves_no_half_written_output(tmp_path):
    frames = video_frames(2)
    capture = FakeCapture([*frames, RuntimeError("decoder exploded")], fps=10.0)
    out = tmp_path / "crash.mp4"
    with pytest.raises(RuntimeError):
        video_script.process(loop_args(json=False, output=out), capture, False, face_net(), StubClassifier())
    assert list(tmp_path.iterdir()) == []


def test_frames_of_changing_size_are_resized_for_the_writer(tmp_path):
    small, big = np.zeros((60, 80, 3), np.uint8), np.zeros((120, 160, 3), np.uint8)
    capture = FakeCapture([small, big, small], fps=10.0)
    out = tmp_path / "sizes.avi"
    assert video_script.process(loop_args(json=False, output=out), capture, False, face_net(),
                                StubClassifier()) == 0
    assert frame_count(out) == 3


# --- real model (slow) ----------------------------------------------------------------------------

@pytest.mark.slow
def test_tflite_model_over_the_video(video, tmp_path, capsys):
    out = tmp_path / "annotated.mp4"
    model = small_models()["tflite"]
    capsys.readouterr()  # the converter's own output, when this test builds the model first
    status, records, err = run_json(capsys, "-i", video, "-m", model, "-o", out)
    assert status == 0, err
    assert len(records) == FRAMES and all(r["faces"] for r in records)
    assert frame_count(out) == FRAMES
