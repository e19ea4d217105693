"""Decode a frame message into pixels, or say exactly why not.

Pure: no Kafka. The image's own header is read (Pillow, without decoding pixels) before anything is
allocated, so a file that claims 50,000 x 50,000 pixels is refused instead of exhausting memory.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from streams.contracts import ContractError, Frame, unpack_frame

_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


@dataclass(frozen=True)
class DecodedFrame:
    frame: Frame
    image: np.ndarray  # BGR uint8, H x W x 3

    @property
    def header(self):
        return self.frame.header


def image_size(data: bytes, encoding: str) -> tuple[int, int]:
    """(width, height) from the image's own header, without decoding pixels."""
    try:
        with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[encoding]]) as im:
            return im.size
    except Image.DecompressionBombError as exc:
        raise ContractError("too_many_pixels", str(exc)) from None
    except Exception as exc:
        raise ContractError("corrupt_image", f"not a readable {encoding} image: {exc}") from None


def decode_image(data: bytes, encoding: str, max_pixels: int) -> np.ndarray:
    width, height = image_size(data, encoding)
    if width * height > max_pixels:
        raise ContractError("too_many_pixels", f"image is {width}x{height}, more than the {max_pixels} pixels allowed")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.shape[0] != height or image.shape[1] != width:
        raise ContractError("corrupt_image", f"{encoding} data could not be decoded ({len(data)} bytes)")
    return image


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
