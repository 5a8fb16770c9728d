#!/usr/bin/env python3
"""Score the whole system end to end on a labelled folder of photos.

A benchmark run by hand (not a pytest test). It runs detect_mask_image.py exactly
as a user does, as a subprocess:

    python detect_mask_image.py --image DIR/with_mask DIR/without_mask --json --no-display

with the script's own defaults, takes the label of the LARGEST face found in each
photo, and counts a photo where no face is found (or that cannot be read) as wrong.
Reports accuracy, balanced accuracy, per-class recall / precision / F1, the
confusion matrix (true class x [Mask, No Mask, no face]), the no-face rate per
class and the photo count.

Usage:
    python tests/score_labelled.py ../shared/validation/face_mask_12k
    python tests/score_labelled.py ../shared/validation/face_mask_12k --limit 20
    python tests/score_labelled.py DIR --output scores.json -- -m mask_detector.keras --detect-size 300
    python tests/score_labelled.py DIR -- -c 0.3        # everything after -- goes to detect_mask_image.py

--limit N passes only the first N images (sorted by name) of each class folder.
Exit status: 0 scored, 2 bad arguments or inputs, 1 detect_mask_image.py failed.
"""
import argparse
import json
import os
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DETECT_SCRIPT = REPO / "detect_mask_image.py"
# Class folders and the label detect_mask_image.py prints for each.
CLASSES = (("with_mask", "Mask"), ("without_mask", "No Mask"))
NO_FACE = "no face"
PREDICTIONS = tuple(label for _, label in CLASSES) + (NO_FACE,)
PROGRESS_EVERY = 200  # photos between progress lines on stderr


def detect_module():
    """detect_mask_image imported as a module (for its IMAGE_EXTENSIONS)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import detect_mask_image
    return detect_mask_image


def list_images(folder, extensions, limit=0):
    """Image files of folder (subfolders too), sorted as detect_mask_image.py expands a folder; first `limit`
    if > 0."""
    from imutils.paths import list_files
    found = sorted(Path(p) for p in list_files(folder, validExts=tuple(extensions)))
    return found[:limit] if limit > 0 else found


def largest_face(faces):
    """The face with the largest box area, or None."""
    def area(face):
        x1, y1, x2, y2 = face["box"]
        return max(0, x2 - x1) * max(0, y2 - y1)
    return max(faces, key=area) if faces else None


def predicted_label(faces):
    """The label of the largest face; NO_FACE when there is none."""
    face = largest_face(faces)
    return face["label"] if face else NO_FACE


def parse_detect_output(lines):
    """{image path: faces} from detect_mask_image.py --json lines (other lines ignored)."""
    results = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        results[record["image"]] = record["faces"]
    return results


def path_key(path):
    return os.path.realpath(path)


def confusion(truth, predicted):
    """{true label: {prediction: count}} over PREDICTIONS, for parallel label lists."""
    matrix = {label: {p: 0 for p in PREDICTIONS} for _, label in CLASSES}
    for t, p in zip(truth, predicted):
        matrix[t][p] += 1
    return matrix


def safe_div(a, b):
    return a / b if b else float("nan")


def metrics(matrix):
    """Accuracy, balanced accuracy, per-class recall/precision/F1, no-face rates from a confusion matrix."""
    labels = [label for _, label in CLASSES]
    total = sum(sum(row.values()) for row in matrix.values())
    correct = sum(matrix[label][label] for label in labels)
    per_class = {}
    for label in labels:
        n = sum(matrix[label].values())
        predicted = sum(matrix[t][label] for t in labels)
        recall = safe_div(matrix[label][label], n)
        precision = safe_div(matrix[label][label], predicted)
        f1 = safe_div(2 * precision * recall, precision + recall) if n and predicted else float("nan")
        found = n - matrix[label][NO_FACE]
        per_class[label] = {"count": n, "recall": recall, "precision": precision, "f1": f1,
                            "no_face_rate": safe_div(matrix[label][NO_FACE], n),
                            "accuracy_when_face_found": safe_div(matrix[label][label], found)}
    found_total = total - sum(matrix[label][NO_FACE] for label in labels)
    return {"count": total, "accuracy": safe_div(correct, total),
            "balanced_accuracy": sum(per_class[l]["recall"] for l in labels) / len(labels),
            "accuracy_when_face_found": safe_div(correct, found_total),
            "no_face_rate": safe_div(total - found_total, total),
            "per_class": per_class, "confusion": matrix}


def short_command(command, keep=4):
    """The command as text, with a long run of image paths abbreviated."""
    start = command.index("--image") + 1 if "--image" in command else len(command)
    end = next((i for i in range(start, len(command)) if command[i].startswith("-")), len(command))
    if end - start <= keep:
        return " ".join(command)
    return " ".join([*command[:start + keep], f"... ({end - start - keep} more paths)", *command[end:]])


def format_report(result):
    """Human-readable text of metrics() plus run info."""
    m = result["metrics"]
    lines = [f"photos: {m['count']}   accuracy: {m['accuracy']:.4f}   balanced accuracy: "
             f"{m['balanced_accuracy']:.4f}   no-face rate: {m['no_face_rate']:.4f}   "
             f"accuracy where a face was found: {m['accuracy_when_face_found']:.4f}",
             "",
             f"{'class':<10}{'count':>7}{'recall':>9}{'precision':>11}{'F1':>8}{'no face':>9}{'acc|found':>11}"]
    for label, c in m["per_class"].items():
        lines.append(f"{label:<10}{c['count']:>7}{c['recall']:>9.4f}{c['precision']:>11.4f}{c['f1']:>8.4f}"
                     f"{c['no_face_rate']:>9.4f}{c['accuracy_when_face_found']:>11.4f}")
    lines += ["", "confusion (rows: truth; columns: prediction of the largest face)",
              f"{'':<10}" + "".join(f"{p:>10}" for p in PREDICTIONS)]
    for label, row in m["confusion"].items():
        lines.append(f"{label:<10}" + "".join(f"{row[p]:>10}" for p in PREDICTIONS))
    lines += ["", f"unreadable photos (counted as no face): {result['unreadable']}",
              f"wall time: {result['seconds']:.1f} s ({result['ms_per_image']:.1f} ms per photo, "
              "including model loading)",
              f"command: {short_command(result['command'])}"]
    return "\n".join(lines)


def json_safe(value):
    """value with NaN floats replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def build_command(python, inputs, extra):
    return [python, str(DETECT_SCRIPT), "--image", *(os.path.abspath(p) for p in inputs),
            "--json", "--no-display", *extra]


def run_detect(command):
    """Run the detect script, streaming stdout; return (stdout lines, stderr text, exit status)."""
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}) as proc:
        err = []
        reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
        reader.start()
        for line in proc.stdout:
            lines.append(line)
            if len(lines) % PROGRESS_EVERY == 0:
                print(f"  {len(lines)} photos done", file=sys.stderr, flush=True)
        proc.wait()
        reader.join()
    return lines, "".join(err), proc.returncode


def split_argv(argv):
    """(our arguments, arguments after the first -- for detect_mask_image.py)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def parse_args(argv=None):
    ours, extra = split_argv(argv)
    parser = argparse.ArgumentParser(
        description="Score detect_mask_image.py end to end on with_mask/ and without_mask/ folders.",
        epilog="Arguments after -- are passed to detect_mask_image.py (e.g. -- -m model.keras -c 0.3).")
    parser.add_argument("folder", type=Path, help="folder holding with_mask/ and without_mask/")
    parser.add_argument("--limit", type=int, default=0, metavar="N",
                        help="use only the first N photos (sorted) of each class (default: all)")
    parser.add_argument("-o", "--output", type=Path, metavar="JSON", help="also write the scores here")
    parser.add_argument("--python", default=sys.executable, help="interpreter for detect_mask_image.py")
    args = parser.parse_args(ours)
    args.detect_args = extra
    if args.limit < 0:
        parser.error("--limit must be >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    extensions = detect_module().IMAGE_EXTENSIONS
    truth_of, inputs = {}, []
    for folder, label in CLASSES:
        class_dir = args.folder / folder
        if not class_dir.is_dir():
            print(f"error: {class_dir}: no such folder", file=sys.stderr)
            return 2
        images = list_images(class_dir, extensions, args.limit)
        if not images:
            print(f"error: {class_dir}: no images", file=sys.stderr)
            return 2
        truth_of.update((path_key(p), label) for p in images)
        inputs.extend(images if args.limit else [class_dir])
    command = build_command(args.python, inputs, args.detect_args)
    print(f"scoring {len(truth_of)} photos with detect_mask_image.py ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    lines, stderr, status = run_detect(command)
    seconds = time.perf_counter() - start
    results = {path_key(image): faces for image, faces in parse_detect_output(lines).items()}
    if status not in (0, 2) or not results:
        print(f"error: detect_mask_image.py exited with status {status}:\n{stderr.strip()}", file=sys.stderr)
        return 2 if status == 2 else 1
    truth, predicted, per_photo = [], [], []
    for key, label in truth_of.items():
        faces = results.get(key)
        pred = predicted_label(faces or [])
        truth.append(label)
        predicted.append(pred)
        per_photo.append({"image": key, "truth": label, "prediction": pred,
                          "faces": len(faces) if faces is not None else None})
    unreadable = sum(1 for key in truth_of if key not in results)
    result = {"folder": str(args.folder), "limit": args.limit, "command": command,
              "exit_status": status, "unreadable": unreadable, "seconds": seconds,
              "ms_per_image": 1000 * seconds / len(truth_of),
              "metrics": metrics(confusion(truth, predicted))}
    print(format_report(result))
    if args.output:
        args.output.write_text(json.dumps(json_safe({**result, "photos": per_photo}), indent=1) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
