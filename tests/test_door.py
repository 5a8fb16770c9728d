"""detect_mask_video.py at a door: --serve (in a real headless Chromium), verdict events with --on-person and
--snapshots, live streams that drop and come back (a local MJPEG server), the windowed FPS, bad input.

The real model (mask_detector.tflite) labels the panned people; the bad-input and FPS tests use the stub.
"""
import contextlib
import http.server
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_helpers import (  # noqa: E402
    ROOT, astronaut, error_lines, grace_hopper, use_stub_classifier, video_script, write_video)

v = video_script
SCRIPT = ROOT / "detect_mask_video.py"
MODEL = ROOT / "mask_detector.tflite"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; .ci/run installs it
SUMMARY = re.compile(r"summary: (\d+) frames, (\d+) dropped, (\d+) skipped, (\d+) reconnects, mean ([\d.]+) FPS, "
                     r"people \(seen 5\+ frames\): (\d+) with mask, (\d+) without mask, (\d+) too far to tell")


def masked_grace_hopper():
    return cv2.imread(str(ROOT / "examples" / "grace_hopper_mask.jpg"))


def walk(photo, frames, size=(320, 240)):
    """photo at half the frame's width, moving sideways (2 px a frame, back and forth) over frames frames."""
    photo = cv2.resize(photo, (size[0] // 2, size[0] // 2 * photo.shape[0] // photo.shape[1]))[:size[1] - 10]
    out = []
    for i in range(frames):
        canvas = np.full((size[1], size[0], 3), 40, np.uint8)
        x = 10 + abs((2 * i) % (size[0] - 40) - size[0] // 2 + 20)
        canvas[10:10 + photo.shape[0], x:x + photo.shape[1]] = photo
        out.append(canvas)
    return out


def two_people(each=20, size=(320, 240)):
    """Frames: astronaut (bare) walking for each frames, then grace_hopper with a mask (a scene cut between)."""
    return walk(astronaut(), each, size) + walk(masked_grace_hopper(), each, size)


def start_script(*argv):
    """The video script as a subprocess (real model, stderr piped line by line)."""
    return subprocess.Popen([sys.executable, str(SCRIPT), "-m", str(MODEL), "--no-display", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def live_url(process):
    """The URL of the script's 'live view:' line on stderr (the lines before it are returned too)."""
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith("live view: "):
            return line.split()[-1], lines
    pytest.fail(f"no live view line: {''.join(lines)}")


def summary(err):
    found = SUMMARY.search(err)
    assert found, err
    return [float(x) if "." in x else int(x) for x in found.groups()]


# --- bad input: one line, exit 2, before any frame is read -------------------------------------------------

@pytest.fixture
def stub_run(monkeypatch, tmp_path):
    model, _ = use_stub_classifier(monkeypatch, tmp_path)
    clip = write_video(tmp_path / "clip.avi", walk(grace_hopper(), 6), 10.0)
    monkeypatch.setattr(v, "process", lambda *a, **k: pytest.fail("frames were read"))
    return lambda *argv: v.main(["-i", str(clip), "-m", str(model), "--no-display", *map(str, argv)])


def test_an_occupied_port_is_one_line(stub_run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert stub_run("--serve", port) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"error: --serve {port}: cannot listen there (Address already in use); give a free port, "
        "e.g. 8000 or 0.0.0.0:8000"]


@pytest.mark.parametrize("address", ["80x", "127.0.0.1:99999", "no.such.host.invalid:8000"])
def test_a_bad_serve_address_is_one_line(stub_run, capsys, address):
    assert stub_run("--serve", address) == 2
    assert len(error_lines(capsys.readouterr().err)) == 1


def test_unwritable_snapshots_folder_is_one_line(stub_run, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert stub_run("--snapshots", tmp_path / "a_file" / "snaps") == 2  # root can write anywhere else
    err = capsys.readouterr().err
    assert error_lines(err) == [f"error: --snapshots {tmp_path / 'a_file' / 'snaps'}: cannot write there (Not a "
                                "directory); choose another folder"]


def test_missing_on_person_program_is_one_line(stub_run, capsys):
    assert stub_run("--on-person", "no-such-program-h30 --flag") == 2
    assert error_lines(capsys.readouterr().err) == [
        "error: --on-person 'no-such-program-h30 --flag': no such program; give a command on PATH or its path"]


# --- the windowed FPS -------------------------------------------------------------------------------------

def test_the_drawn_fps_is_the_mean_rate_of_the_recent_frames(monkeypatch, tmp_path, capsys):
    model, _ = use_stub_classifier(monkeypatch, tmp_path)
    monkeypatch.setattr(v, "FPS_WINDOW_S", 60.0)  # the window spans the whole run: the same frames as the mean's
    clip = write_video(tmp_path / "clip.avi", walk(grace_hopper(), 120), 10.0)
    drawn, draw = [], v.draw
    monkeypatch.setattr(v, "draw", lambda frame, faces, fps: drawn.append(fps) or draw(frame, faces, fps))
    assert v.main(["-i", str(clip), "-m", str(model), "--no-display", "--detect-every", "3"]) == 0
    mean_fps = summary(capsys.readouterr().err)[4]
    assert len(drawn) == 120 and drawn[-1] == pytest.approx(mean_fps, rel=0.2)


# --- verdict events, --on-person, --snapshots on the panned two-person video (real model) -------------------

def test_one_verdict_per_person_while_there_with_command_and_snapshot(tmp_path):
    clip = write_video(tmp_path / "people.avi", two_people(), 10.0)
    received = tmp_path / "received.jsonl"
    process = start_script("-i", clip, "--json", "--snapshots", tmp_path / "snaps",
                           "--on-person", f"tee -a {received}")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines() if '"event"' in line]
    verdicts = [e for e in events if e["event"] == "verdict"]
    ends = {e["person"]: e for e in events if e["event"] == "end"}
    assert [(e["person"], e["label"]) for e in verdicts] == [(1, "No Mask"), (2, "Mask")]
    assert all(e["last_frame"] < ends[e["person"]]["last_frame"] for e in verdicts)  # while still in view
    assert [json.loads(line) for line in received.read_text().splitlines()] == verdicts
    snaps = sorted((tmp_path / "snaps").iterdir())
    assert [re.fullmatch(r"\d{8}-\d{6}-person(\d+)\.jpg", p.name).group(1) for p in snaps] == ["1", "2"]
    assert all(cv2.imread(str(p)).shape == (240, 320, 3) for p in snaps)
    assert "--on-person: 0 failed, 0 timed out" in err and summary(err)[5:] == [1, 1, 0]


def test_failing_and_hanging_commands_are_counted_and_never_stall_the_loop(monkeypatch, tmp_path, capsys):
    model, _ = use_stub_classifier(monkeypatch, tmp_path)
    monkeypatch.setattr(v, "ON_PERSON_TIMEOUT_S", 1.0)
    clip = write_video(tmp_path / "clip.avi", two_people(each=8), 10.0)
    for command, outcome in (("false", "2 failed, 0 timed out"), ("sleep 30", "0 failed, 2 timed out")):
        start = time.monotonic()
        assert v.main(["-i", str(clip), "-m", str(model), "--no-display", "--on-person", command]) == 0
        err = capsys.readouterr().err
        assert f"--on-person: {outcome}" in err and time.monotonic() - start < 10
        assert summary(err)[4] > 5  # FPS: the loop did not wait for the commands


# --- streams that come back: a local MJPEG server ---------------------------------------------------------

class MjpegServer:
    """Serves frames (cycled) as multipart JPEG at fps on 127.0.0.1; stop() closes the port and all viewers."""

    def __init__(self, frames, fps=10.0):
        self.jpegs = [cv2.imencode(".jpg", frame)[1].tobytes() for frame in frames]
        self.fps, self.sent, self.port, self.server = fps, 0, 0, None
        self.start()

    def start(self):
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                while owner.server is server:
                    jpeg = owner.jpegs[owner.sent % len(owner.jpegs)]
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                         % (len(jpeg), jpeg))
                    except OSError:
                        return
                    owner.sent += 1
                    time.sleep(1 / owner.fps)

            def log_message(self, *args):
                pass
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.server, self.port = server, server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self):
        server, self.server = self.server, None
        server.shutdown()
        server.server_close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/stream.mjpg"


@pytest.mark.slow
def test_a_stream_that_stops_for_3_s_is_reopened_and_the_run_goes_on(tmp_path):
    server = MjpegServer(two_people(each=15))
    process = start_script("-i", server.url, "--json", "--max-frames", "120")
    try:
        while server.sent < 45:  # past the first person's verdict
            time.sleep(0.05)
        server.stop()
        time.sleep(3)
        server.start()
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
        server.stop()
    assert process.returncode == 0 and error_lines(err) == [], err
    frames, _, _, reconnects, _, with_mask, without, too_far = summary(err)
    verdicts = [json.loads(line) for line in out.splitlines() if '"verdict"' in line]
    assert frames == 120 and reconnects >= 1
    assert len(verdicts) >= 3 and with_mask + without == len(verdicts)  # counts kept across the outage


def test_a_stream_that_never_comes_back_ends_the_run_and_keeps_the_output(tmp_path):
    server = MjpegServer(two_people(each=15))
    output = tmp_path / "kept.avi"
    process = start_script("-i", server.url, "--max-failures", "2", "-o", output)
    try:
        while server.sent < 30:
            time.sleep(0.05)
        server.stop()
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1
    assert error_lines(err) == [f"error: {server.url}: gave up after 3 failed reads in a row (raise --max-failures "
                                "to wait longer)"]
    assert summary(err)[0] > 0 and output.is_file() and cv2.VideoCapture(str(output)).read()[0]


# --- the live view: newest frame only, encoded once, and in a real browser ---------------------------------

def test_viewers_get_the_newest_frame_encoded_once_and_the_end(monkeypatch, capsys):
    view, encode, encoded = v.LiveView("127.0.0.1:0"), cv2.imencode, []
    monkeypatch.setattr(cv2, "imencode", lambda ext, image, *rest: encoded.append(image[0, 0, 0]) or encode(ext, image))
    try:
        for n in range(3):  # frames 1 and 2 are replaced before anyone asks: a slow viewer skips them
            view.publish(np.full((8, 8, 3), n, np.uint8), {})
        newest = [view.newest(0), view.newest(2)]  # two viewers
        assert [number for number, _ in newest] == [3, 3] and newest[0][1] == newest[1][1] and encoded == [2]
        waiter = threading.Thread(target=lambda: newest.append(view.newest(3)))
        waiter.start()  # waits for a newer frame ...
    finally:
        view.close()  # ... and gets None at the end
    waiter.join(5)
    assert newest[-1] is None and capsys.readouterr().err.startswith("live view: http://127.0.0.1:")


def read_mjpeg(url, parts):
    """Append (X-Frame number, JPEG bytes) of each part of the MJPEG stream at url until it ends."""
    with contextlib.suppress(ConnectionError), urllib.request.urlopen(url, timeout=60) as stream:
        assert stream.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        while stream.readline():  # the boundary line
            headers = dict(line.decode().strip().split(": ", 1) for line in iter(stream.readline, b"\r\n"))
            parts.append((int(headers["X-Frame"]), stream.read(int(headers["Content-Length"]))))
            stream.readline()


def chromium(url, tmp_path, *flags):
    """Headless Chromium on url; returns its stdout."""
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=800,700", "--virtual-time-budget=3000",
               *flags, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_the_live_page_in_chromium_and_an_mjpeg_client_that_keeps_up(tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} missing: install Debian's chromium (apt-get install -y chromium; .ci/run does)")
    clip = write_video(tmp_path / "door.avi", two_people(each=60, size=(640, 480)) * 4, 25.0)
    process = start_script("-i", clip, "--serve", "0")
    try:
        url, _ = live_url(process)
        parts = []
        client = threading.Thread(target=read_mjpeg, args=(url + "stream.mjpg", parts))
        client.start()
        shot = tmp_path / "page.png"
        chromium(url, tmp_path, f"--screenshot={shot}")
        dom = chromium(url, tmp_path, "--dump-dom")
        process.send_signal(signal.SIGINT)  # Ctrl-C: the run ends with its summary
        _, err = process.communicate(timeout=60)
        client.join(60)
    finally:
        process.kill()
    page = cv2.imread(str(shot))[:480, :640]
    red = (page[:, :, 2] > 200) & (page[:, :, 1] < 60) & (page[:, :, 0] < 60)  # a No Mask box (BGR 0, 0, 255)
    green = (page[:, :, 1] > 200) & (page[:, :, 2] < 60) & (page[:, :, 0] < 60)  # a Mask box
    assert page.std() > 20 and (red.sum() > 100 or green.sum() > 100)
    counts = re.search(r'<p id="counts">(\d+) with mask, (\d+) without mask, (\d+) too far to tell; ([\d.]+) FPS</p>',
                       dom)
    assert counts and float(counts.group(4)) > 0, dom
    frames = summary(err)[0]
    numbers = [number for number, _ in parts]
    assert numbers == sorted(set(numbers)) and len({jpeg for _, jpeg in parts}) > 10  # a moving stream
    assert len(parts) >= 0.9 * frames, (len(parts), frames)
