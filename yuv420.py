"""The YUV 4:2:0 path of VFIBenchmark's FloLPIPS: RGB → yuv420p as ffmpeg writes it → RGB as
OpenCV reads it back, so FloLPIPS sees the frames that reference sees.

    yuv420_round_trip(rgb_u8)      # (H, W, 3) uint8 → the same after the round trip (H, W even)

Pinned by tests/fixtures/protocols_compat.pt (section `flolpips_yuv`): Y exact, U and V within one
level of ffmpeg's output; the way back is bit-exact with OpenCV's COLOR_YUV2RGB_I420.
"""
import math

import numpy as np

# swscale's 15-bit fixed-point BT.601 limited-range RGB -> YUV coefficients.
_RGB2YUV_SHIFT = 15


def _fixed(coefficient, levels):
    return int(coefficient * levels / 255 * (1 << _RGB2YUV_SHIFT) + 0.5)


_Y_COEFFS = tuple(_fixed(c, 219) for c in (0.299, 0.587, 0.114))
_U_COEFFS = (-_fixed(0.168736, 224), -_fixed(0.331264, 224), _fixed(0.5, 224))
_V_COEFFS = (_fixed(0.5, 224), -_fixed(0.418688, 224), -_fixed(0.081312, 224))
# OpenCV's COLOR_YUV2RGB_I420 (BT.601 limited range, 20-bit fixed point); exact for all (Y, U, V).
_CV_SHIFT, _CV_Y, _CV_VR, _CV_VG, _CV_UG, _CV_UB = 20, 1220542, 1673527, -852492, -409993, 2116026


def _swscale_bicubic(distance, c=0.6):
    """swscale's default bicubic kernel (B = 0, C = 0.6)."""
    x = np.abs(distance)
    return np.where(x < 1, (2 - c) * x ** 3 - (3 - c) * x ** 2 + 1,
                    np.where(x < 2, -c * x ** 3 + 5 * c * x ** 2 - 8 * c * x + 4 * c, 0.0))


def _halve_rows(plane15):
    """2:1 vertical chroma downscale as swscale does it: bicubic taps (12-bit, error diffused)
    centred between rows 2i and 2i+1, edge rows repeated, rounded from 15-bit intermediates."""
    height = plane15.shape[0]
    rows = []
    for i in range(height // 2):
        centre = 2 * i + 0.5
        taps = np.arange(2 * i - 4, 2 * i + 6)
        weights = _swscale_bicubic((taps - centre) / 2)
        weights = weights / weights.sum() * 4096
        fixed, error = [], 0.0
        for w in weights:
            value = w + error
            fixed.append(int(math.floor(value + 0.5)))
            error = value - fixed[-1]
        source = plane15[np.clip(taps, 0, height - 1)]
        rows.append((source * np.asarray(fixed)[:, None]).sum(0))
    return np.clip((np.stack(rows) + (1 << 18)) >> 19, 0, 255).astype(np.uint8)


def rgb_to_yuv420p(rgb_u8):
    """(Y, U, V) uint8 planes of an (H, W, 3) RGB image, as ffmpeg writes `-pix_fmt yuv420p`.

    Emulates swscale: fixed-point BT.601 limited range; chroma of horizontal pixel pairs, then a
    bicubic 2:1 vertical filter (which bleeds across 2x2 blocks). Y is exact on the fixture, U and
    V within 1 level (the fixture's tolerance). H and W must be even (VFIBenchmark crops to even).
    """
    rgb = np.asarray(rgb_u8)
    height, width = rgb.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"rgb_to_yuv420p: {height}x{width} is not even in both axes (crop to even first)")
    r, g, b = (rgb[..., k].astype(np.int64) for k in range(3))
    ry, gy, by = _Y_COEFFS
    y14 = (ry * r + gy * g + by * b + (32 << (_RGB2YUV_SHIFT - 1)) + (1 << (_RGB2YUV_SHIFT - 7))) >> 9
    luma = np.clip((y14 + 32) >> 6, 0, 255).astype(np.uint8)
    pairs = [channel[:, 0::2] + channel[:, 1::2] for channel in (r, g, b)]

    def chroma(coeffs):
        value = sum(c * p for c, p in zip(coeffs, pairs))
        c14 = (value + (256 << _RGB2YUV_SHIFT) + (1 << (_RGB2YUV_SHIFT - 6))) >> (_RGB2YUV_SHIFT - 5)
        return _halve_rows(2 * c14)

    return luma, chroma(_U_COEFFS), chroma(_V_COEFFS)


def yuv420p_to_rgb(y_plane, u_plane, v_plane):
    """(H, W, 3) uint8 RGB of yuv420p planes, bit-exact with OpenCV's COLOR_YUV2RGB_I420."""
    y = np.maximum(np.asarray(y_plane, np.int64) - 16, 0) * _CV_Y
    u = np.repeat(np.repeat(np.asarray(u_plane, np.int64) - 128, 2, 0), 2, 1)[:y.shape[0], :y.shape[1]]
    v = np.repeat(np.repeat(np.asarray(v_plane, np.int64) - 128, 2, 0), 2, 1)[:y.shape[0], :y.shape[1]]
    half = 1 << (_CV_SHIFT - 1)
    channels = (y + half + _CV_VR * v, y + half + _CV_VG * v + _CV_UG * u, y + half + _CV_UB * u)
    return np.stack([np.clip(c >> _CV_SHIFT, 0, 255) for c in channels], -1).astype(np.uint8)


def yuv420_round_trip(rgb_u8):
    """RGB → yuv420p (ffmpeg) → RGB (OpenCV): the frames VFIBenchmark's FloLPIPS sees."""
    return yuv420p_to_rgb(*rgb_to_yuv420p(rgb_u8))
