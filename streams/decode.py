"""Decode a frame message into pixels, or say exactly why not.

Pure: no Kafka. The image's own header is read (Pillow, without decoding pixels) before anything is
allocated, so a file that claims 50,000 x 50,000 pixels is refused instead of exhausting memory.

An EXIF orientation tag is applied, as ``cv2.imread`` and image viewers do: the pixels are decoded as stored
(OpenCV told to ignore the tag) and turned as the tag that Pillow read from the same header says, so the size
check and the turn rest on one reading of it. The frame header's width and height are the image as displayed,
after the turn (a tag of 5 to 8 swaps them), and so are the detections' boxes.

A JPEG may be decoded at a reduced scale (1/2, 1/4 or 1/8: libjpeg-turbo's scaled inverse DCT, through
OpenCV's ``IMREAD_REDUCED_COLOR_*`` flags) when every use of the pixels needs fewer of them than the frame has
(:func:`jpeg_scale`): the decode costs less and so do the resizes after it. The checks stay those of a full
decode: the size is read from the image's own header, the pixels must come out at the size that scale gives,
and a frame that fails gives the same dead-letter reason either way.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from core.contracts import ContractError, Frame, unpack_frame

_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


@dataclass(frozen=True)
class DecodedFrame:
    frame: Frame
    image: np.ndarray  # BGR uint8, H x W x 3: the frame's header size, or about 1/scale of it
    scale: int = 1  # 1 = decoded at full size; 2, 4 or 8: JPEG decoded at that fraction

    @property
    def header(self):
        return self.frame.header

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frame as displayed, whatever the scale it was decoded at: the size its
        detections' boxes and its metrics are given in."""
        return self.frame.header.height, self.frame.header.width


SCALES = (8, 4, 2)  # the reductions libjpeg-turbo decodes directly, largest first
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def jpeg_scale(width: int, height: int, need: tuple[int, int]) -> int:
    """The largest reduction (8, 4, 2, else 1) at which a ``width`` x ``height`` JPEG still decodes to at least
    ``need`` (width, height) pixels; libjpeg-turbo rounds a reduced side up (``ceil(side / scale)``).

    >>> jpeg_scale(1920, 1080, (416, 416)), jpeg_scale(1280, 720, (416, 416)), jpeg_scale(3840, 2160, (320, 180))
    (2, 1, 8)
    >>> jpeg_scale(1280, 720, (0, 0))  # no need given: no reduction
    1
    """
    if need[0] <= 0 and need[1] <= 0:
        return 1
    for scale in SCALES:
        if -(-width // scale) >= need[0] and -(-height // scale) >= need[1]:
            return scale
    return 1


_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the OpenCV operations that display the stored pixels upright, in order.
_UPRIGHT = {
    2: [lambda a: cv2.flip(a, 1)],
    3: [lambda a: cv2.rotate(a, cv2.ROTATE_180)],
    4: [lambda a: cv2.flip(a, 0)],
    5: [cv2.transpose],
    6: [lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE)],
    7: [cv2.transpose, lambda a: cv2.rotate(a, cv2.ROTATE_180)],
    8: [lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE)],
}


def image_size(data: bytes, encoding: str) -> tuple[int, int]:
    """(width, height) as stored, from the image's own header, without decoding pixels."""
    return image_info(data, encoding)[:2]


def image_info(data: bytes, encoding: str) -> tuple[int, int, int]:
    """(width, height) as stored and the EXIF orientation (1-8; 1 without a tag or with a value out of range),
    from the image's own header, without decoding pixels."""
    try:
        with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[encoding]]) as im:
            try:
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            except Exception:  # an unreadable EXIF block: the pixels as stored, as a viewer would show them
                orientation = 1
            return *im.size, orientation if orientation in _UPRIGHT else 1
    except Image.DecompressionBombError as exc:
        raise ContractError("too_many_pixels", str(exc)) from None
    except Exception as exc:
        raise ContractError("corrupt_image", f"not a readable {encoding} image: {exc}") from None


def decode_image(data: bytes, encoding: str, max_pixels: int) -> np.ndarray:
    """BGR pixels of an encoded image, upright as its EXIF orientation says."""
    return decode_scaled(data, encoding, max_pixels)[0]


def decode_scaled(
    data: bytes, encoding: str, max_pixels: int, need: tuple[int, int] = (0, 0)
) -> tuple[np.ndarray, int, tuple[int, int]]:
    """BGR pixels of an encoded image, upright as its EXIF orientation says, a JPEG at the largest reduction
    that still gives ``need`` (width, height, upright) pixels (:func:`jpeg_scale`); with the scale and the
    image's full upright (width, height)."""
    width, height, orientation = image_info(data, encoding)
    if width * height > max_pixels:
        raise ContractError("too_many_pixels", f"image is {width}x{height}, more than the {max_pixels} pixels allowed")
    turned = orientation >= 5  # the need is upright; the pixels are decoded as stored
    scale = jpeg_scale(width, height, need[::-1] if turned else need) if encoding == "jpeg" else 1
    flags = _REDUCED.get(scale, cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.shape[:2] != (-(-height // scale), -(-width // scale)):
        raise ContractError("corrupt_image", f"{encoding} data could not be decoded ({len(data)} bytes)")
    for step in _UPRIGHT.get(orientation, []):
        image = step(image)
    return np.ascontiguousarray(image), scale, ((height, width) if turned else (width, height))


def decode_frame(value: bytes | None, max_pixels: int, need: tuple[int, int] = (0, 0)) -> DecodedFrame:
    """Parse and decode one frames-topic value, a JPEG reduced as ``need`` allows (:func:`decode_scaled`);
    :class:`ContractError` names what is wrong."""
    frame = unpack_frame(value)
    h = frame.header
    image, scale, (width, height) = decode_scaled(frame.image, h.encoding, max_pixels, need)
    if (width, height) != (h.width, h.height):
        raise ContractError("size_mismatch", f"header says {h.width}x{h.height}, image is {width}x{height}")
    return DecodedFrame(frame, image, scale)
