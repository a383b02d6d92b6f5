r"""Reading image files as 8-bit sRGB, whatever their mode, with one-line errors.

`read_rgb(path)` returns uint8 (H, W, 3) for every mode Pillow opens, by these rules:

  8-bit grey (L), bilevel (1)    three equal channels
  16-bit grey (I;16*, and I      scaled to 8 bits by scikit-image's `img_as_ubyte`
    with values in [0, 65535])   (Pillow's own conversion clips them at 255: all white)
  palette (P)                    the palette's colours (Pillow)
  alpha (RGBA, LA, PA, P with    composited on white, as a page shows them (Pillow's
    transparency)                `alpha_composite`); the alpha itself is not kept
  CMYK, YCbCr                    Pillow's conversion to RGB
  16-bit RGB                     Pillow decodes it to 8 bits per channel
  EXIF orientation               applied (Pillow's `exif_transpose`), as viewers show it

Anything else (32-bit float 'F', signed or > 16-bit 'I' values, a file Pillow cannot
decode: empty, not an image, truncated) raises `ImageReadError` with one line naming the
file and the problem.
"""

from __future__ import annotations

import os

import numpy as np

SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')
ALPHA_MODES = ('RGBA', 'LA', 'PA', 'RGBa', 'La')


class ImageReadError(ValueError):
  """An image file that cannot be read (one line: the file and what is wrong)."""


def _sixteen_bit_to_uint8(im) -> np.ndarray:
  from skimage.util import img_as_ubyte
  a = np.asarray(im)
  if a.dtype != np.uint16:  # 'I' is int32: accepted when its values fit 16 bits
    if a.min() < 0 or a.max() > 65535:
      raise ImageReadError(f'32-bit integer pixels in [{a.min()}, {a.max()}] (only 8- and '
                           '16-bit images are read); save it as an 8- or 16-bit image')
    a = a.astype(np.uint16)
  return img_as_ubyte(a)


def to_rgb(im) -> np.ndarray:
  """A loaded PIL image -> uint8 (H, W, 3) sRGB by the rules of the module docstring."""
  from PIL import Image
  if im.mode in SIXTEEN_BIT_MODES or im.mode == 'I':
    grey = _sixteen_bit_to_uint8(im)
    return np.repeat(grey[..., None], 3, axis=-1)
  if im.mode == 'F':
    raise ImageReadError('32-bit float pixels (only 8- and 16-bit images are read); save '
                         'it as an 8- or 16-bit image')
  if im.mode == 'P' and 'transparency' in im.info:
    im = im.convert('RGBA')
  if im.mode in ALPHA_MODES:
    rgba = im.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    im = Image.alpha_composite(white, rgba)
  rgb = np.asarray(im.convert('RGB'), np.uint8)
  if rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise ImageReadError(f'mode {im.mode!r} did not convert to RGB (shape {rgb.shape})')
  return rgb


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """uint8 (H, W, 3) sRGB of an image file (module docstring for every mode).

  Raises:
    ImageReadError: one line, '<file>: <problem>', for a file that is missing, empty, not
      an image, truncated or of an unsupported pixel type.
  """
  from PIL import Image, ImageOps, UnidentifiedImageError
  name = os.fspath(path)
  if not os.path.isfile(name):
    raise ImageReadError(f'{name}: no such file')
  try:
    if os.path.getsize(name) == 0:
      raise ImageReadError(f'{name}: the file is empty')
    with Image.open(name) as im:
      im.load()  # decode now: a truncated file fails here, not later
      im = ImageOps.exif_transpose(im)
      return to_rgb(im)
  except ImageReadError as e:
    if str(e).startswith(name):
      raise
    raise ImageReadError(f'{name}: {e}') from None
  except UnidentifiedImageError:
    raise ImageReadError(f'{name}: not an image Pillow can decode (wrong extension, or '
                         'not an image file)') from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    # Pillow reports truncated and corrupt data as OSError (or SyntaxError for a broken
    # PNG chunk); keep its first line as the reason.
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ImageReadError(f'{name}: cannot decode it ({reason})') from None
