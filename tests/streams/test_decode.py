import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from core.contracts import ContractError, FrameHeader, pack_frame
from streams.decode import decode_frame


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def frame(image_bytes: bytes, w: int, h: int, encoding: str = "jpeg") -> bytes:
    header = FrameHeader(
        frame_id="c:1:0", camera_id="c", seq=0, captured_at=1.7e9, width=w, height=h, encoding=encoding
    )
    return pack_frame(header, image_bytes)


def test_decodes_a_real_frame(street_frames):
    img = street_frames[0]
    decoded = decode_frame(frame(jpeg(img), img.shape[1], img.shape[0]), max_pixels=10**7)
    assert decoded.image.shape == img.shape
    assert np.abs(decoded.image.astype(int) - img).mean() < 4  # JPEG loss only


def test_png_is_accepted():
    img = np.zeros((20, 30, 3), np.uint8)
    data = cv2.imencode(".png", img)[1].tobytes()
    assert decode_frame(frame(data, 30, 20, "png"), 10**7).image.shape == (20, 30, 3)


def test_corrupt_and_truncated_images_are_rejected(street_frames):
    img = street_frames[0]
    data = jpeg(img)
    for bad in (b"\x00" * 500, data[: len(data) // 3], b"\xff\xd8\xff" + b"\x00" * 40):
        with pytest.raises(ContractError) as err:
            decode_frame(frame(bad, img.shape[1], img.shape[0]), 10**7)
        assert err.value.reason == "corrupt_image"


def test_decompression_bomb_is_refused_before_decoding():
    # A real PNG header claiming 50,000 x 50,000 pixels: rejected from its header, nothing allocated.
    tiny = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiny, format="PNG")
    data = bytearray(tiny.getvalue())
    data[16:24] = (50_000).to_bytes(4, "big") + (50_000).to_bytes(4, "big")  # IHDR width and height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # keep the chunk's checksum valid
    with pytest.raises(ContractError) as err:
        decode_frame(frame(bytes(data), 50_000, 50_000, "png"), max_pixels=40_000_000)
    assert err.value.reason == "too_many_pixels"


def test_header_size_must_match_the_image(street_frames):
    img = street_frames[0]
    with pytest.raises(ContractError) as err:
        decode_frame(frame(jpeg(img), img.shape[1] * 2, img.shape[0]), 10**7)
    assert err.value.reason == "size_mismatch"


def with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """``image`` (BGR) as a JPEG written by Pillow, with an EXIF Orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_exif_orientation_is_applied_and_the_header_gives_the_size_as_displayed(street_frames, orientation):
    data = with_orientation(street_frames[0], orientation)
    with Image.open(io.BytesIO(data)) as im:
        assert im.getexif()[0x0112] == orientation
        upright = cv2.cvtColor(np.asarray(ImageOps.exif_transpose(im)), cv2.COLOR_RGB2BGR)  # as a viewer shows it
    h, w = upright.shape[:2]
    assert (w, h) == ((272, 640) if orientation >= 5 else (640, 272))
    decoded = decode_frame(frame(data, w, h), max_pixels=10**7)
    assert decoded.image.shape == upright.shape
    assert np.abs(decoded.image.astype(int) - upright).mean() < 2  # the same pixels, up to the two decoders
    if orientation >= 5:  # the size as stored, not as displayed: the header is wrong
        with pytest.raises(ContractError) as err:
            decode_frame(frame(data, h, w), max_pixels=10**7)
        assert err.value.reason == "size_mismatch"
