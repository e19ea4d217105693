"""Decode a frame message into pixels, or say exactly why not.

Pure: no Kafka. The image's own header is read (Pillow, without decoding pixels) before anything is
allocated, so a file that claims 50,000 x 50,000 pixels is refused instead of exhausting memory.

An EXIF orientation tag is applied, as ``cv2.imread`` and image viewers do: the pixels are decoded as stored
(OpenCV told to ignore the tag) and turned as the tag that Pillow read from the same header says, so the size
check and the turn rest on one reading of it. The frame header's width and height are the image as displayed,
after the turn (a tag of 5 to 8 swaps them), and so are the detections' boxes.
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
    image: np.ndarray  # BGR uint8, H x W x 3

    @property
    def header(self):
        return self.frame.header


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
    width, height, orientation = image_info(data, encoding)
    if width * height > max_pixels:
        raise ContractError("too_many_pixels", f"image is {width}x{height}, more than the {max_pixels} pixels allowed")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.shape[0] != height or image.shape[1] != width:
        raise ContractError("corrupt_image", f"{encoding} data could not be decoded ({len(data)} bytes)")
    for step in _UPRIGHT.get(orientation, []):
        image = step(image)
    return np.ascontiguousarray(image)


def decode_frame(value: bytes | None, max_pixels: int) -> DecodedFrame:
    """Parse and decode one frames-topic value; :class:`ContractError` names what is wrong."""
    frame = unpack_frame(value)
    h = frame.header
    image = decode_image(frame.image, h.encoding, max_pixels)
    if (image.shape[1], image.shape[0]) != (h.width, h.height):
        raise ContractError(
            "size_mismatch",
            f"header says {h.width}x{h.height}, image is {image.shape[1]}x{image.shape[0]}",
        )
    return DecodedFrame(frame, image)
