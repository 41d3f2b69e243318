"""Pictures deeper than 8 bits: predict's and pretraining's readers against OpenCV's.

PIL's convert("RGB"), which detectron2's read_image and torchvision's loader use, clips a
16-bit one-channel picture's values to 255 (a picture of values above 255 comes out white).
OpenCV's imread keeps their top 8 bits; it is the reference here.
"""
import cv2
import numpy as np
import pytest
from detectron2.data.detection_utils import read_image as detectron2_read_image
from PIL import Image

from resnext_det.data.checks import BadImageError
from resnext_det.data.classification import read_image as classification_read_image
from resnext_det.data.inputs import read_inputs, read_picture


def _gradient(shape=(40, 56)):
    """16-bit values over the whole range: dark, mid and bright areas."""
    ramp = np.linspace(0, 65535, shape[0] * shape[1]).reshape(shape)
    return ramp.astype(np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_pictures_read_as_opencv_reads_them(tmp_path, suffix):
    path = str(tmp_path / f"g16{suffix}")
    Image.fromarray(_gradient()).save(path)
    assert Image.open(path).mode == "I;16"
    expected = cv2.imread(path, cv2.IMREAD_COLOR)
    assert expected.dtype == np.uint8 and 0 < expected.mean() < 255
    np.testing.assert_array_equal(read_picture(path), expected)
    np.testing.assert_array_equal(read_picture(path, format="RGB"), expected[:, :, ::-1])
    np.testing.assert_array_equal(np.asarray(classification_read_image(path)), expected[:, :, ::-1])
    # what detectron2's reader makes of it: every value above 255 is white
    assert (detectron2_read_image(path, format="BGR") == 255).mean() > 0.9


def test_8_bit_pictures_read_as_detectron2_reads_them(tmp_path):
    path = str(tmp_path / "rgb.png")
    Image.fromarray((_gradient((40, 56)) >> 8).astype(np.uint8)).convert("RGB").save(path)
    np.testing.assert_array_equal(read_picture(path), detectron2_read_image(path, format="BGR"))


def _rotated_by_exif(image, path):
    """Save `image` with EXIF orientation 6 (shown turned 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes())
    return path


def test_exif_orientation_is_applied_as_the_references_apply_it(tmp_path):
    """A phone's picture: an 8-bit JPEG as detectron2 reads it, a 16-bit PNG as OpenCV does
    (both turn it upright: 40x56 stored, 56x40 read)."""
    jpeg = _rotated_by_exif(Image.fromarray((_gradient() >> 8).astype(np.uint8)).convert("RGB"),
                            str(tmp_path / "phone.jpg"))
    expected = detectron2_read_image(jpeg, format="BGR")
    assert expected.shape == (56, 40, 3)
    np.testing.assert_array_equal(read_picture(jpeg), expected)
    png = _rotated_by_exif(Image.fromarray(_gradient()), str(tmp_path / "phone16.png"))
    expected = cv2.imread(png, cv2.IMREAD_COLOR)
    assert expected.shape == (56, 40, 3)
    np.testing.assert_array_equal(read_picture(png), expected)


def test_floating_point_pictures_are_named_and_skipped(tmp_path):
    path = str(tmp_path / "f32.tif")
    Image.fromarray(_gradient().astype(np.float32) / 65535).save(path)
    assert Image.open(path).mode == "F"
    with pytest.raises(BadImageError, match=r"f32.tif: is a floating-point picture"):
        read_picture(path)
    with pytest.raises(BadImageError, match=r"f32.tif: is a floating-point picture"):
        classification_read_image(path)
    skipped = []
    assert list(read_inputs([path], skipped)) == []
    assert skipped[0][0] == path and "floating-point picture" in skipped[0][1]
