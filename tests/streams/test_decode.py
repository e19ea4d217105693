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


def test_a_jpeg_is_decoded_at_the_largest_reduction_that_still_gives_what_is_needed(street_frames):
    img = cv2.resize(street_frames[0], (1920, 1080), interpolation=cv2.INTER_LINEAR)
    value = frame(jpeg(img), 1920, 1080)
    for need, scale in (((0, 0), 1), ((640, 416), 2), ((480, 270), 4), ((240, 135), 8), ((1921, 10), 1)):
        decoded = decode_frame(value, 10**7, need)
        assert decoded.scale == scale
        assert decoded.image.shape == (1080 // scale, 1920 // scale, 3) and decoded.size == (1080, 1920)
    with pytest.raises(ContractError) as err:  # the header is checked against the full size, not the reduced one
        decode_frame(frame(jpeg(img), 960, 540), 10**7, (640, 416))
    assert err.value.reason == "size_mismatch"
    png = cv2.imencode(".png", img)[1].tobytes()  # no scaled decoding outside JPEG
    assert decode_frame(frame(png, 1920, 1080, "png"), 10**7, (240, 135)).scale == 1


def test_odd_sizes_round_up_as_libjpeg_does(street_frames):
    img = cv2.resize(street_frames[0], (1366, 767))
    decoded = decode_frame(frame(jpeg(img), 1366, 767), 10**7, (300, 150))
    assert decoded.scale == 4 and decoded.image.shape == (192, 342, 3)


@pytest.mark.parametrize("orientation", (1, 6))
def test_a_reduced_decode_is_turned_and_sized_as_displayed(street_frames, orientation):
    data = with_orientation(cv2.resize(street_frames[0], (1280, 544)), orientation)
    w, h = (544, 1280) if orientation == 6 else (1280, 544)
    full = decode_frame(frame(data, w, h), 10**7)
    half = decode_frame(frame(data, w, h), 10**7, (w // 2, h // 2))  # the need is upright too
    assert half.scale == 2 and half.image.shape == (h // 2, w // 2, 3) and half.size == full.size == (h, w)
    shrunk = cv2.resize(full.image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk.astype(int) - half.image).mean() < 2


def test_corrupt_and_truncated_images_give_the_same_reason_at_any_scale(street_frames):
    data = jpeg(cv2.resize(street_frames[0], (1280, 544)))
    rng = np.random.default_rng(7)
    variants = [data[:cut] for cut in range(0, len(data), len(data) // 40)]
    for _ in range(60):
        bad = bytearray(data)
        for position in rng.integers(0, len(data), int(rng.integers(1, 30))):
            bad[position] = int(rng.integers(0, 256))
        variants.append(bytes(bad))

    def reason(value: bytes, need: tuple[int, int]) -> str:
        try:
            decode_frame(value, 10**7, need)
            return "ok"
        except ContractError as exc:
            return exc.reason

    outcomes = [(reason(frame(v, 1280, 544), (0, 0)), reason(frame(v, 1280, 544), (160, 68))) for v in variants]
    assert all(full == reduced for full, reduced in outcomes), [o for o in outcomes if o[0] != o[1]]
    assert {"ok", "corrupt_image"} <= {full for full, _ in outcomes}  # both kinds were met
