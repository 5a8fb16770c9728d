"""detect_mask_video.py's tracker, steady labels, --detect-every, per-person lines and the live reader."""
import json
import re
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_helpers import (  # noqa: E402
    StubClassifier, astronaut, face_net, grace_hopper, use_stub_classifier, video_script, write_video)

v = video_script


def face(box, label="Mask", probability=0.9):
    return {"box": list(box), "confidence": 0.9, "label": label, "probability": probability}


def run_tracker(frames, **kw):
    """[[face dicts]] per frame (None = no detector pass) -> (shown faces per frame, all ended tracks)."""
    tracker, shown, ended = v.Tracker(0.5, **kw), [], []
    for n, faces in enumerate(frames):
        out, gone = tracker.update(faces, n, n / 10)
        shown.append(out)
        ended += gone
    return shown, ended + tracker.tracks


def test_box_iou():
    assert v.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1 and v.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == 1 / 3


def test_match_boxes_is_greedy_best_first_and_one_to_one():
    assert v.match_boxes([(0, 0, 10, 10), (20, 0, 30, 10)], [(21, 0, 31, 10), (1, 0, 11, 10), (90, 0, 99, 9)]) == {
        0: 1, 1: 0}


def test_mask_log_odds_sign_follows_the_label():
    assert v.mask_log_odds(face((0, 0, 1, 1), "Mask", 0.9), 0.5) == pytest.approx(np.log(9))
    assert v.mask_log_odds(face((0, 0, 1, 1), "No Mask", 0.9), 0.5) == pytest.approx(-np.log(9))
    assert v.mask_log_odds(face((0, 0, 1, 1), "Mask", 1.0), 0.5) == pytest.approx(np.log(1e6 - 1))  # clipped


def test_steady_label_has_hysteresis():
    assert [v.steady_label("Mask", [-0.04]), v.steady_label("Mask", [-0.06]), v.steady_label("No Mask", [2, -1])] == [
        "Mask", "No Mask", "Mask"]


def test_ids_are_kept_across_frames_and_a_new_face_gets_a_new_id():
    shown, _ = run_tracker([[face((10, 10, 50, 50))], [face((12, 10, 52, 50)), face((100, 10, 140, 50))]])
    assert [[f["id"] for f in frame] for frame in shown] == [[1], [1, 2]]


def test_a_face_that_leaves_ends_its_track():
    tracker = v.Tracker(0.5, max_misses=2)
    ended = [tracker.update(faces, n, n)[1] for n, faces in enumerate([[face((10, 10, 50, 50))], [], [], []])]
    assert [[t["id"] for t in e] for e in ended] == [[], [], [], [1]] and tracker.tracks == []


def test_a_scene_cut_ends_all_tracks():
    tracker = v.Tracker(0.5)
    tracker.update([face((10, 10, 50, 50))], 0, 0.0)
    shown, ended = tracker.update([face((10, 10, 50, 50))], 1, 0.1, cut=True)
    assert [t["id"] for t in ended] == [1] and [f["id"] for f in shown] == [2]


def test_hysteresis_stops_flicker():
    probs = [0.9, 0.45, 0.8, 0.3, 0.9, 0.4]  # Mask probabilities: per frame Mask, No Mask, Mask, ...
    frames = [[face((10, 10, 50, 50), "Mask" if p >= 0.5 else "No Mask", max(p, 1 - p))] for p in probs]
    shown, _ = run_tracker(frames)
    assert [f[0]["frame_label"] for f in shown] == ["Mask", "No Mask"] * 3
    assert {f[0]["label"] for f in shown} == {"Mask"}


def test_a_new_track_shows_its_first_frames_label():
    shown, _ = run_tracker([[face((10, 10, 50, 50), "No Mask", 0.51)]])
    assert shown[0][0]["label"] == "No Mask" and shown[0][0]["frame_label"] == "No Mask"


def test_detect_every_carries_boxes_at_their_speed_between_passes():
    shown, _ = run_tracker([[face((10, 10, 50, 50))], None, [face((14, 10, 54, 50))], None, None])
    assert [f[0]["box"] for f in shown[3:]] == [[16, 10, 56, 50], [18, 10, 58, 50]]
    assert [f[0]["frame_label"] for f in shown] == ["Mask", None, "Mask", None, None]


def people_events(frames, capsys, min_face=20):
    """Tracker + People over [[face dicts]] per frame -> (JSON lines printed, People)."""
    tracker, people = v.Tracker(0.5, min_face), v.People(v.parse_args(["--json"]))
    for n, faces in enumerate(frames):
        _, ended = tracker.update(faces, n, n / 10)
        people.update(tracker.tracks, ended)
    people.update([], tracker.tracks)
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()], people


def test_the_verdict_comes_from_the_first_judged_frames_while_the_person_is_there(capsys):
    frames = [[face((10 + n, 10, 50 + n, 50), "No Mask" if n < 2 else "Mask", 0.9)] for n in range(8)]
    events, people = people_events(frames, capsys)
    assert events == [{"event": "verdict", "person": 1, "first_frame": 0, "last_frame": 4, "first_time": 0.0,
                       "last_time": 0.4, "label": "Mask", "frames": 5, "judged_frames": 5},
                      {"event": "end", "person": 1, "first_frame": 0, "last_frame": 7, "first_time": 0.0,
                       "last_time": 0.7, "label": "Mask", "frames": 8, "judged_frames": 8}]
    assert people.counts == {"Mask": 1, "No Mask": 0, "Too far to tell": 0}


def test_faces_too_small_never_decide_a_verdict(capsys):
    # A person walking up: 19x19 px faces called No Mask, then 20x20 px faces called Mask.
    frames = [[face((10, 10, 29, 29), "No Mask", 0.99)]] * 6 + [[face((10, 10, 30, 30), "Mask", 0.6)]] * 5
    shown, _ = run_tracker(frames, min_face=20)
    assert [f[0]["too_small"] for f in shown] == [True] * 6 + [False] * 5 and shown[-1][0]["label"] == "Mask"
    events, people = people_events(frames, capsys)
    assert [(e["event"], e["label"], e["last_frame"], e["judged_frames"]) for e in events] == [
        ("verdict", "Mask", 10, 5), ("end", "Mask", 10, 5)]
    assert people_events(frames, capsys, min_face=0)[0][0]["label"] == "No Mask"  # judged from the first frames


def test_a_person_never_seen_large_enough_is_too_far_to_tell(capsys):
    events, people = people_events([[face((10, 10, 25, 25), "No Mask", 0.99)]] * 12, capsys)
    assert [(e["event"], e["label"], e["frames"], e["judged_frames"]) for e in events] == [
        ("end", "Too far to tell", 12, 0)]
    assert people.counts == {"Mask": 0, "No Mask": 0, "Too far to tell": 1}


# --- the live reader ------------------------------------------------------------------------------

class Camera:
    """A fake capture producing numbered frames every `period` seconds (read blocks like a camera's)."""

    def __init__(self, period, frames, fail_after=None):
        self.period, self.frames, self.n, self.fail_after = period, frames, 0, fail_after

    def read(self):
        time.sleep(self.period)
        self.n += 1
        if self.n > self.frames or (self.fail_after and self.n > self.fail_after):
            return False, None
        return True, np.full((48, 64, 3), self.n, np.uint8)

    def get(self, prop):
        return 0.0


def test_live_reader_hands_over_the_newest_frame_of_a_faster_camera():
    camera = Camera(0.01, 1000)
    reader = v.LatestFrame(camera, 3)
    try:
        for _ in range(3):
            time.sleep(0.1)  # a loop slower than the camera
            ok, frame = reader.read()
            assert ok and int(frame[0, 0, 0]) >= camera.n - 1
        assert reader.skipped >= 10
    finally:
        reader.stop()


def test_live_reader_waits_for_a_slower_camera_and_skips_nothing():
    reader = v.LatestFrame(Camera(0.05, 4), 0)
    frames = [reader.read() for _ in range(5)]
    reader.stop()
    assert [int(f[0, 0, 0]) for ok, f in frames[:4]] == [1, 2, 3, 4] and frames[4] == (False, None)
    assert (reader.skipped, reader.failed) == (0, 1)


def test_live_reader_hands_over_a_capture_error():
    class Broken:
        def read(self):
            raise RuntimeError("camera unplugged")
    reader = v.LatestFrame(Broken(), 3)
    with pytest.raises(RuntimeError, match="unplugged"):
        reader.read()
    reader.stop()


def test_a_camera_that_stops_gives_one_error_line_and_keeps_the_output(tmp_path, capsys):
    out = tmp_path / "live.avi"
    args = v.parse_args(["--json", "--no-display", "--max-failures", "2", "-o", str(out)])
    status = v.process(args, Camera(0.03, 3), True, face_net(), StubClassifier())
    err = capsys.readouterr().err
    assert status == 1 and [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: 0: gave up after 3 failed reads in a row (raise --max-failures to wait longer)"]
    frames, dropped, skipped = map(int, re.search(r"summary: (\d+) frames, (\d+) dropped, (\d+) skipped", err).groups())
    assert out.is_file() and (frames + skipped, dropped) == (3, 3)  # a slow first step may skip a frame


# --- per-person counts on a video with known people ----------------------------------------------

def panned(photo, frames, size=(320, 240)):
    """photo scaled into a size frame and panned sideways over frames frames."""
    photo = cv2.resize(photo, (160, 160 * photo.shape[0] // photo.shape[1]))
    out = []
    for i in range(frames):
        canvas = np.full((size[1], size[0], 3), 40, np.uint8)
        x = 20 + 4 * i
        canvas[20:20 + photo.shape[0], x:x + photo.shape[1]] = photo[:size[1] - 20]
        out.append(canvas)
    return out


@pytest.mark.parametrize("every", [1, 3])
def test_people_counted_once_each_on_a_video_of_known_people(monkeypatch, tmp_path, capsys, every):
    model, clf = use_stub_classifier(monkeypatch, tmp_path)
    clip = write_video(tmp_path / "people.avi", panned(grace_hopper(), 13) + panned(astronaut(), 11), 10.0)
    assert v.main(["-i", str(clip), "-m", str(model), "--json", "--no-display", "--detect-every", str(every)]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    people = [r for r in lines if r.get("event") == "end"]
    assert [(p["first_frame"], p["last_frame"], p["frames"]) for p in people] == [(0, 12, 13), (13, 23, 11)]
    assert {f["id"] for r in lines if "frame" in r for f in r["faces"]} == {p["person"] for p in people}
    verdicts = [r for r in lines if r.get("event") == "verdict"]  # one per person, while the person is there
    assert [(p["person"], p["label"], p["last_frame"]) for p in verdicts] == [(1, people[0]["label"], 4),
                                                                               (2, people[1]["label"], 17)]
    masked = sum(p["label"] == "Mask" for p in people)
    assert f"people (seen 5+ frames): {masked} with mask, {2 - masked} without mask, 0 too far to tell" in err
    assert len(clf.calls) == (24 if every == 1 else 9)  # passes: frames 0, 3, .., 21 and the cut at 13


def test_detect_every_0_is_rejected(capsys):
    assert v.main(["--detect-every", "0"]) == 2
    assert "argument --detect-every: must be a whole number >= 1" in capsys.readouterr().err


def test_a_tracker_error_is_one_line(monkeypatch, tmp_path, capsys):
    model, _ = use_stub_classifier(monkeypatch, tmp_path)
    clip = write_video(tmp_path / "c.avi", panned(grace_hopper(), 3), 10.0)
    monkeypatch.setattr(v.Tracker, "update", lambda *a: 1 / 0)
    assert v.main(["-i", str(clip), "-m", str(model), "--no-display"]) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: ZeroDivisionError: division by zero")


def test_reader_thread_does_not_outlive_process():
    before = threading.active_count()
    args = v.parse_args(["--no-display", "--max-frames", "2"])
    assert v.process(args, Camera(0.01, 100), True, face_net(), StubClassifier()) == 0
    time.sleep(0.05)
    assert threading.active_count() == before
