"""cgml_jax.data.images.read_rgb: every image mode to 8-bit sRGB, bad files in one line."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cgml_jax.data import images


def _save(tmp_path, im, name):
  path = tmp_path / name
  im.save(path)
  return path


def _png16_rgb(path, rgb16: np.ndarray):
  """A 16-bit-per-channel RGB PNG (Pillow cannot write one): IHDR, one IDAT, IEND."""
  h, w, _ = rgb16.shape
  raw = b''.join(b'\x00' + rgb16[r].astype('>u2').tobytes() for r in range(h))

  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, 2,
                                                                        0, 0, 0))
                   + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
  v = np.array([[0, 257, 1000], [30000, 65535, 32896]], np.uint16)
  path = _save(tmp_path, Image.fromarray(v), 'g16.png')
  assert Image.open(path).mode.startswith('I;16')
  got = images.read_rgb(path)
  assert got.shape == (2, 3, 3) and got.dtype == np.uint8
  np.testing.assert_array_equal(got[..., 0], got[..., 2])
  np.testing.assert_allclose(got[..., 0], v / 65535 * 255, atol=1)
  assert got.min() == 0 and got.max() == 255 and len(np.unique(got)) == 6


def test_16_bit_rgb(tmp_path):
  rgb16 = np.array([[[65535, 0, 32768], [1000, 50000, 65535]]], np.uint16)
  _png16_rgb(tmp_path / 'c16.png', rgb16)
  np.testing.assert_allclose(images.read_rgb(tmp_path / 'c16.png'), rgb16 / 65535 * 255, atol=1)


def test_palette_with_and_without_transparency(tmp_path):
  im = Image.new('P', (2, 1))
  im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
  im.putdata([0, 1])
  np.testing.assert_array_equal(images.read_rgb(_save(tmp_path, im, 'p.png')),
                                [[[255, 0, 0], [0, 0, 255]]])
  im.info['transparency'] = 1  # palette entry 1 (blue) is transparent: shown on white
  got = images.read_rgb(_save(tmp_path, im, 'pt.png'))
  np.testing.assert_array_equal(got, [[[255, 0, 0], [255, 255, 255]]])


def test_alpha_is_composited_on_white(tmp_path):
  la = Image.new('LA', (3, 1))
  la.putdata([(0, 0), (0, 255), (100, 128)])
  got = images.read_rgb(_save(tmp_path, la, 'la.png'))
  want = 100 * 128 / 255 + 255 * (1 - 128 / 255)
  np.testing.assert_allclose(got[0, :, 0], [255, 0, want], atol=1)
  np.testing.assert_array_equal(got[..., 0], got[..., 1])

  rgba = Image.new('RGBA', (3, 1))
  rgba.putdata([(255, 0, 0, 255), (0, 0, 255, 0), (255, 0, 0, 128)])
  got = images.read_rgb(_save(tmp_path, rgba, 'rgba.png')).astype(float)
  half = 255 * (1 - 128 / 255)
  np.testing.assert_allclose(got[0], [[255, 0, 0], [255, 255, 255], [255, half, half]],
                             atol=1)


def test_cmyk(tmp_path):
  im = Image.new('CMYK', (3, 1))
  im.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
  got = images.read_rgb(_save(tmp_path, im, 'cmyk.tif'))
  np.testing.assert_array_equal(got[0], [[255, 255, 255], [0, 255, 255], [0, 0, 0]])


def test_grey_bilevel_and_exif_orientation(tmp_path):
  grey = np.array([[0, 200, 255]], np.uint8)
  got = images.read_rgb(_save(tmp_path, Image.fromarray(grey), 'l.png'))
  np.testing.assert_array_equal(got, np.repeat(grey[..., None], 3, -1))
  bilevel = Image.fromarray(grey).convert('1', dither=Image.Dither.NONE)
  got = images.read_rgb(_save(tmp_path, bilevel, 'b.png'))
  np.testing.assert_array_equal(got[0, :, 0], [0, 255, 255])
  im = Image.fromarray(np.array([[0, 255]], np.uint8)).convert('RGB')
  exif = Image.Exif()
  exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
  path = tmp_path / 'rot.png'
  im.save(path, exif=exif)
  assert images.read_rgb(path).shape == (2, 1, 3)


@pytest.mark.parametrize('name,content,reason', [
    ('empty.png', b'', 'empty'),
    ('notes.jpg', b'these are my notes, not a photo\n', 'not an image'),
    ('cut.png', None, 'cannot decode'),
])
def test_bad_files_raise_one_line(tmp_path, name, content, reason):
  path = tmp_path / name
  if content is None:  # the first 60% of a real PNG
    _save(tmp_path, Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (32, 32, 3), np.uint8)), 'whole.png')
    data = (tmp_path / 'whole.png').read_bytes()
    content = data[:len(data) * 6 // 10]
  path.write_bytes(content)
  with pytest.raises(images.ImageReadError) as e:
    images.read_rgb(path)
  msg = str(e.value)
  assert '\n' not in msg and msg.startswith(str(path)) and reason in msg, msg


def test_float_images_are_refused(tmp_path):
  path = _save(tmp_path, Image.fromarray(np.zeros((2, 2), np.float32)), 'f.tif')
  with pytest.raises(images.ImageReadError, match='float'):
    images.read_rgb(path)
