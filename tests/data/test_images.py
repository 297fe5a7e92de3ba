"""Image decoding: 16-bit scaled by value, alpha on white, other modes converted, float refused; path samples
decode on each access and read their size from the header."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from mmguard.core.errors import UserError
from mmguard.data.errors import DataFormatError
from mmguard.data.images import ImageError, read_image, to_rgb
from mmguard.data.sample import Sample, pil_to_tensor


def _png_16bit(path, values: np.ndarray, color_type: int) -> None:
    """A 16-bit-per-channel PNG written chunk by chunk (PIL does not write 48-bit RGB)."""
    h, w = values.shape[:2]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_grey_png_is_scaled_by_value_not_clipped(tmp_path):
    values = np.random.default_rng(0).integers(0, 65536, size=(16, 16)).astype(np.uint16)
    values[0, :4] = [0, 128, 47000, 65535]
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    rgb = np.asarray(read_image(tmp_path / "g16.png")).astype(int)
    expected = np.round(values / 257).astype(int)
    assert rgb.shape == (16, 16, 3) and (rgb == expected[..., None]).all()
    assert list(rgb[0, :4, 0]) == [0, 0, 183, 255]
    # the user's case: a mostly bright 16-bit image kept its mean (PIL's own convert clips it to 255)
    bright = np.full((8, 8), 47000, dtype=np.uint16)
    Image.fromarray(bright).save(tmp_path / "bright.png")
    assert np.asarray(read_image(tmp_path / "bright.png")).mean() == 183
    assert np.asarray(Image.open(tmp_path / "bright.png").convert("RGB")).mean() == 255


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_16bit_in_memory_modes(mode):
    values = np.array([[0, 257, 1000, 30000], [40000, 47000, 65534, 65535]], dtype=np.int64)
    im = Image.new(mode, (4, 2))
    im.putdata(values.ravel().tolist())
    got = np.asarray(to_rgb(im))[..., 0].astype(int)
    assert np.abs(got - np.round(values / 257)).max() <= 1
    assert (got == np.round(values * 255 / 65535)).all()


def test_int_image_outside_16_bits_and_float_images_are_refused():
    big = Image.new("I", (4, 4), 70000)
    with pytest.raises(ImageError, match=r"outside the 16-bit range"):
        to_rgb(big)
    with pytest.raises(ImageError, match=r"floating-point pixels \(mode F\)"):
        to_rgb(Image.new("F", (4, 4), 0.5))
    assert issubclass(ImageError, UserError)


def test_48bit_rgb_png_within_one_level(tmp_path):
    values = np.random.default_rng(1).integers(0, 65536, size=(8, 8, 3)).astype(np.uint16)
    _png_16bit(tmp_path / "rgb48.png", values, color_type=2)
    got = np.asarray(read_image(tmp_path / "rgb48.png")).astype(int)
    assert np.abs(got - np.round(values / 257)).max() <= 1


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 40, 0)
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[0, 2, 3] = 0, 255, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    got = np.asarray(read_image(tmp_path / "rgba.png")).astype(int)
    assert list(got[0, 0]) == [255, 255, 255]  # fully transparent: white, not the colour stored under it
    assert list(got[0, 1]) == [200, 40, 0]
    assert np.abs(got[0, 2] - np.round(np.array([200, 40, 0]) * 128 / 255 + 255 * 127 / 255)).max() <= 1

    la = Image.fromarray(np.stack([np.full((4, 4), 10, np.uint8), np.full((4, 4), 0, np.uint8)], -1), "LA")
    la.save(tmp_path / "la.png")
    assert (np.asarray(read_image(tmp_path / "la.png")) == 255).all()

    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 30, 60, 90] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "p.png", transparency=0)
    got = np.asarray(read_image(tmp_path / "p.png"))
    assert list(got[0, 0]) == [255, 255, 255] and list(got[1, 1]) == [30, 60, 90]

    pa = Image.new("PA", (2, 2))
    pa.putpalette([5, 6, 7] * 256)
    assert (np.asarray(to_rgb(pa)) == 255).all()  # alpha 0 everywhere


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "1", "L", "P", "LAB", "HSV"])
def test_other_modes_become_8bit_rgb(mode):
    im = Image.new(mode, (5, 3))
    out = to_rgb(im)
    assert out.mode == "RGB" and out.size == (5, 3)
    assert pil_to_tensor(im).shape == (3, 3, 5)


def _write_rgb(path, value, size=(12, 10)):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_path_sample_decodes_on_each_access_and_keeps_nothing(tmp_path):
    path = tmp_path / "a.png"
    _write_rgb(path, 10)
    s = Sample("a", str(path), "Q?", "A")
    assert s.pixels()[0, 0, 0].item() == pytest.approx(10 / 255)
    assert s.image == str(path)  # not replaced by the decoded image
    _write_rgb(path, 20)
    assert np.asarray(s.pil)[0, 0, 0] == 20  # read again, not cached


def test_size_reads_the_header_without_decoding(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    _write_rgb(path, 10, size=(12, 10))

    def no_decoding(self):
        raise AssertionError("size must not decode pixels")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert Sample("a", path, "Q?", "A").size == (12, 10)


def test_unreadable_images_name_the_sample(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    cases = {"zero.png": "empty (0 bytes)", "cut.png": "truncated or corrupt", "junk.png": "corrupt",
             "gone.png": "does not exist"}
    for name, problem in cases.items():
        s = Sample(f"id-{name}", str(tmp_path / name), "Q?", "A")
        for access in (lambda: s.pil, lambda: s.pixels()):
            with pytest.raises(DataFormatError) as err:
                access()
            msg = str(err.value)
            assert isinstance(err.value, UserError) and problem in msg, msg
            assert name in msg and f"'id-{name}'" in msg and "field 'image'" in msg
    with pytest.raises(DataFormatError, match="empty"):
        Sample("z", tmp_path / "zero.png", "Q?", "A").size
