"""face_detector/finetune_res10.py: the Caffe reading and writing, the SSD matching and augmentation, the Keras
rebuild against OpenCV's own res10, and the fast path on the real entry point."""
import importlib.util
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO

SCRIPT = REPO / "face_detector" / "finetune_res10.py"
spec = importlib.util.spec_from_file_location("finetune_res10", SCRIPT)
finetune = importlib.util.module_from_spec(spec)
spec.loader.exec_module(finetune)


@pytest.fixture(scope="module")
def opencv_res10():
    """(prototxt path, caffemodel path, cv2.dnn net) of OpenCV's res10 in the installed package."""
    prototxt, caffemodel = finetune.opencv_res10_files()
    return prototxt, caffemodel, cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))


@pytest.fixture(scope="module")
def photo_blob():
    """A real photo with faces (examples/group.jpg) as res10's 300x300 input blob."""
    image = cv2.imread(str(REPO / "examples" / "group.jpg"))
    return cv2.dnn.blobFromImage(cv2.resize(image, (300, 300)), 1.0, (300, 300), finetune.SSD_MEAN, swapRB=False)


def forward(net, blob):
    net.setInput(blob)
    return net.forward(["detection_out", "mbox_loc", "mbox_conf_flatten"])


def test_parse_prototxt_reads_layers_values_and_sub_messages():
    text = """name: "x"  # a comment
input: "data"
input_shape { dim: 1 dim: 3 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 1.0 } param { lr_mult: 2.0 }
  convolution_param { num_output: 8 # 84
    pad: 1 kernel_size: 3 }
}
layer {
  name: "perm"
  type: "Permute"
  permute_param { order: 0 order: 2 order: 3 order: 1 }
}"""
    conv, perm = finetune.parse_prototxt(text)
    assert conv["name"] == ["conv"] and conv["bottom"] == ["data"] and len(conv["param"]) == 2
    assert conv["convolution_param"][0] == {"num_output": ["8"], "pad": ["1"], "kernel_size": ["3"]}
    assert finetune.integer(conv, "kernel_size", 1) == 3 and finetune.integer(conv, "stride", 1) == 1
    assert perm["permute_param"][0]["order"] == ["0", "2", "3", "1"]


def test_opencv_weights_written_back_give_identical_outputs(opencv_res10, photo_blob, tmp_path):
    prototxt, caffemodel, net = opencv_res10
    weights = finetune.read_caffemodel(caffemodel.read_bytes())
    assert weights["conv1_h"][1][0].shape == (32, 3, 7, 7) and weights["data_bn"][0] == "BatchNorm"
    written = tmp_path / "copy.caffemodel"
    written.write_bytes(finetune.caffemodel_bytes(weights))
    copy = cv2.dnn.readNetFromCaffe(str(prototxt), str(written))
    for original, rewritten in zip(forward(net, photo_blob), forward(copy, photo_blob)):
        np.testing.assert_array_equal(original, rewritten)


def test_matching_gives_each_face_its_best_prior_and_encodes_it_back(opencv_res10):
    priors, variances = finetune.prior_boxes(opencv_res10[2])
    assert priors.shape == variances.shape == (8892, 4)
    faces = np.float32([[0.1, 0.1, 0.3, 0.35], [0.52, 0.5, 0.55, 0.53]])  # the second: 9 px, no prior reaches 0.5
    labels, targets = finetune.match_priors(faces, priors, variances)
    iou = finetune.box_iou(priors, faces)
    assert labels[iou[:, 1].argmax()] == 1 and labels[iou[:, 0].argmax()] == 1
    assert set(np.flatnonzero(labels)) == set(np.flatnonzero(iou[:, 0] >= 0.5)) | {iou[:, 1].argmax()}
    decoded = finetune.decode_boxes(targets[labels > 0], priors[labels > 0], variances[labels > 0])
    assert np.allclose(decoded, faces[iou[labels > 0].argmax(axis=1)], atol=1e-5)
    empty_labels, _ = finetune.match_priors(np.zeros((0, 4), np.float32), priors, variances)
    assert not empty_labels.any()


@pytest.mark.parametrize("seed", range(20))
def test_augmented_samples_keep_faces_inside_the_input(seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (120, 200, 3), np.uint8)
    boxes = np.float32([[10, 10, 60, 70], [150, 40, 190, 100]])
    sample, faces = finetune.training_sample(image, boxes, rng)
    assert sample.shape == (300, 300, 3) and sample.dtype == np.float32
    assert faces.ndim == 2 and faces.shape[1] == 4 and len(faces) <= 2
    assert np.all(faces >= -1e-6) and np.all(faces <= 1 + 1e-6) and np.all(faces[:, 2:] > faces[:, :2])


def test_bad_arguments_exit_2(tmp_path, capsys):
    for argv in (["--epochs", "0"], ["--limit", "-1"], ["--learning-rate", "0"], ["--data", str(tmp_path)],
                 ["--output", str(tmp_path / "no" / "x.caffemodel")]):
        with pytest.raises(SystemExit) as exit_info:
            finetune.parse_args(argv)
        assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_detect_scripts_check_the_fine_tuned_weights(tmp_path, capsys):
    import detect_mask_image as image_script

    prototxt, _ = finetune.opencv_res10_files()
    shutil.copyfile(prototxt, tmp_path / "deploy.prototxt")
    (tmp_path / image_script.RES10_MASKS).write_bytes(b"not the fine-tuned res10")
    image = tmp_path / "blank.png"
    cv2.imwrite(str(image), np.zeros((10, 10, 3), np.uint8))
    argv = ["-i", str(image), "-f", str(tmp_path), "--no-display", "--face-detector", "res10-masks"]
    assert image_script.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert image_script.RES10_MASKS in err and "SHA-256" in err and "face_detector/" in err


def test_the_committed_fine_tuned_weights_are_one_flag_away():
    import detect_mask_image as image_script

    assert image_script.FACE_DETECTORS[0] == "res10" and image_script.RES10_WEIGHTS["res10"][0] == image_script.CAFFEMODEL
    assert image_script.RES10_WEIGHTS["res10-masks"][0] == image_script.RES10_MASKS
    names = (image_script.PROTOTXT_NAMES, (image_script.RES10_MASKS,))
    prototxt, weights = image_script.find_face_detector(names=names)
    assert weights.resolve() == REPO / "face_detector" / "res10_masks.caffemodel"
    assert not image_script.load_face_detector(name="res10-masks").empty()


@pytest.mark.slow
def test_keras_rebuild_reproduces_opencv(opencv_res10, photo_blob):
    prototxt, caffemodel, net = opencv_res10
    model = finetune.build_keras_model(finetune.parse_prototxt(prototxt.read_text()),
                                       finetune.read_caffemodel(caffemodel.read_bytes()))
    loc, conf = model.predict(photo_blob[0].transpose(1, 2, 0)[None], verbose=0)
    detections, opencv_loc, opencv_conf = forward(net, photo_blob)
    np.testing.assert_allclose(loc.reshape(1, -1), opencv_loc, atol=1e-3)
    scores = np.exp(conf[0]) / np.exp(conf[0]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scores.reshape(1, -1), opencv_conf, atol=1e-4)
    priors, variances = finetune.prior_boxes(net)
    ours = finetune.decode_detections(loc[0], conf[0], priors, variances, 0.5)
    theirs = detections[0, 0][detections[0, 0, :, 2] >= 0.5, 2:7]
    assert len(theirs) >= 2  # group.jpg: two faces
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.slow
def test_fast_path_writes_a_caffemodel_that_opencv_runs(shared, tmp_path, photo_blob, opencv_res10):
    data = shared("detector_training", "ilc2021")
    output = tmp_path / "tiny.caffemodel"
    argv = ["--data", str(data), "--epochs", "1", "--limit", "2", "--batch-size", "2", "-o", str(output)]
    result = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no TensorFlow start-up lines
    assert "wrote" in result.stdout
    net = cv2.dnn.readNetFromCaffe(str(opencv_res10[0]), str(output))
    detections = forward(net, photo_blob)[0][0, 0]
    assert (detections[:, 2] >= 0.5).sum() >= 1
    trained = finetune.read_caffemodel(output.read_bytes())
    original = finetune.read_caffemodel(opencv_res10[1].read_bytes())
    assert trained.keys() == original.keys()
    assert not np.array_equal(trained["conv1_h"][1][0], original["conv1_h"][1][0])  # one step changed it
    assert list(tmp_path.iterdir()) == [output]  # no temp file left behind
