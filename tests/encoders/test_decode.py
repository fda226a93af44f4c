"""Decoding checked against pydicom's own helpers on files pydicom ships, and bad input."""

import glob
import os
import pickle

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from radalign.encoders.errors import InputError
from radalign.encoders.imageio import list_images, load_image, read_dicom_fields
from radalign.encoders.transforms import AugmentConfig, ImageTransform

TEST_DIR = os.path.dirname(get_testdata_file("CT_small.dcm"))
CR_FILES = sorted(glob.glob(f"{TEST_DIR}/dicomdirtests/77654033/CR*/*"))


def _expected(path):
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0).astype(np.float64)
    img = (values - values.min()) / (values.max() - values.min())
    if ds.PhotometricInterpretation == "MONOCHROME1":
        img = 1 - img
    return img


@pytest.mark.parametrize(
    "path", CR_FILES + [get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")]
)
def test_dicom_matches_pydicom(path):
    img = load_image(path)
    assert img.dtype == np.float32 and img.ndim == 2
    assert img.min() >= 0.0 and img.max() <= 1.0
    np.testing.assert_allclose(img, _expected(path), atol=1e-6)


def test_cr_radiographs_are_monochrome1_and_inverted():
    assert len(CR_FILES) == 3
    for path in CR_FILES:
        ds = pydicom.dcmread(path)
        assert ds.PhotometricInterpretation == "MONOCHROME1"
        raw = apply_modality_lut(ds.pixel_array, ds)
        img = load_image(path, window="full")
        # the largest stored value is displayed black for MONOCHROME1
        assert img.flat[np.argmax(raw)] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "variant", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
)
def test_compressed_variants_equal_uncompressed(variant):
    np.testing.assert_array_equal(
        load_image(get_testdata_file(variant)), load_image(get_testdata_file("MR_small.dcm"))
    )


def test_windows():
    path = get_testdata_file("CT_small.dcm")
    full, pct = load_image(path, window="full"), load_image(path, window="percentile")
    raw = apply_modality_lut(pydicom.dcmread(path).pixel_array, pydicom.dcmread(path)).astype(float)
    np.testing.assert_allclose(full, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)
    assert (pct == 0).mean() >= 0.004 and (pct == 1).mean() >= 0.004
    with pytest.raises(ValueError, match="window"):
        load_image(path, window="bogus")


def test_png_8_and_16_bit_and_colour(tmp_path):
    ramp16 = (np.arange(256 * 4, dtype=np.uint16) * 64).reshape(32, 32)
    Image.fromarray(ramp16).save(tmp_path / "a16.png")
    img = load_image(tmp_path / "a16.png")
    np.testing.assert_allclose(img, ramp16 / 65535.0, atol=1e-7)
    assert len(np.unique(img)) == 1024  # 16-bit precision kept
    gray8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(gray8).save(tmp_path / "a8.png")
    np.testing.assert_allclose(load_image(tmp_path / "a8.png"), gray8 / 255.0, atol=1e-7)
    rgb = np.stack([gray8] * 3, -1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=100)
    Image.fromarray(gray8).convert("P").save(tmp_path / "pal.png")
    np.testing.assert_allclose(load_image(tmp_path / "rgb.png"), gray8 / 255.0, atol=1 / 255)
    np.testing.assert_allclose(load_image(tmp_path / "pal.png"), gray8 / 255.0, atol=1 / 255)
    assert np.abs(load_image(tmp_path / "rgb.jpg") - gray8 / 255.0).max() < 0.05


def _corrupt_files(tmp_path):
    gray = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "ok.png")
    Image.fromarray(gray).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, not an image")
    (tmp_path / "random.dcm").write_bytes(np.random.default_rng(1).bytes(2000))
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    ds.save_as(tmp_path / "unknown_syntax.dcm", enforce_file_format=False)
    return {
        "trunc.png": "truncated or corrupt image",
        "trunc.jpg": "truncated or corrupt image",
        "empty.png": "zero-byte file",
        "text.png": "not an image",
        "random.dcm": "truncated or corrupt image",
        "nopixels.dcm": "no pixel data",
        "unknown_syntax.dcm": "unsupported transfer syntax",
        "missing.png": "file not found",
    }


def test_bad_files_raise_input_error(tmp_path):
    for name, reason in _corrupt_files(tmp_path).items():
        with pytest.raises(InputError) as info:
            load_image(tmp_path / name)
        assert info.value.reason == reason, (name, info.value)
        assert name in str(info.value)
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path)


def test_dicom_fields_hide_identifiers_by_default():
    path = get_testdata_file("CT_small.dcm")
    fields = read_dicom_fields(path)
    assert "PatientName" not in fields and "PatientID" not in fields
    assert fields["Modality"] == "CT"
    named = read_dicom_fields(path, ["PatientName", "PatientID"])
    assert named["PatientName"] and named["PatientID"]


def test_list_images(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["b.png", "a.dcm", "sub/c.JPG", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.dcm", "b.png", "c.JPG"]
    (tmp_path / "list.txt").write_text("# scans\nb.png\n\n/abs/x.dcm\n")
    assert list_images(tmp_path / "list.txt") == [
        tmp_path / "b.png",
        __import__("pathlib").Path("/abs/x.dcm"),
    ]
    assert list_images(tmp_path / "b.png") == [tmp_path / "b.png"]
    with pytest.raises(InputError, match="file not found"):
        list_images(tmp_path / "nope")


def test_eval_transform_letterboxes_and_normalises():
    t = ImageTransform(32, train=False, mean=[0.5] * 3, std=[0.25] * 3)
    out = t(np.ones((64, 32), np.float32))
    assert out.shape == (3, 32, 32) and out.dtype.is_floating_point
    assert float(out[0, 16, 0]) == pytest.approx(-2.0)  # padding columns: (0 - .5) / .25
    assert float(out[0, 16, 16]) == pytest.approx(2.0)  # image: (1 - .5) / .25


def test_train_transform_seeded_and_never_flips():
    t = ImageTransform(
        32, train=True, mean=[0.0] * 3, std=[1.0] * 3, aug=AugmentConfig(rotate_deg=0)
    )
    img = np.zeros((32, 32), np.float32)
    img[:, :8] = 1.0  # bright band on the image left
    outs = []
    for s in range(30):
        t.set_seed(s)
        out = t(img)
        outs.append(out)
        assert out[0, :, :16].mean() > out[0, :, 16:].mean()
    t.set_seed(3)
    assert np.array_equal(t(img).numpy(), outs[3].numpy())
    pickle.loads(pickle.dumps(t))
