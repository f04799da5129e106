"""Optical flow and warping shared by PerVFI and FloLPIPS.

Flows are (B, 2, H, W) tensors in pixels: channel 0 is the horizontal displacement, channel 1 the
vertical one. `flow[:, :, y, x]` moves the pixel at (x, y) of the source frame to
(x + u, y + v) of the target frame.
"""
import torch
import torch.nn.functional as F


def pixel_grid(height, width, device=None, dtype=torch.float32):
    """(1, 2, H, W) pixel coordinates (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                            torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys])[None]


def backward_warp(image, flow, padding_mode="border"):
    """Sample `image` at p + flow(p) (bilinear): the warp that pulls pixels along `flow`."""
    _, _, height, width = image.shape
    coords = pixel_grid(height, width, image.device, flow.dtype) + flow
    grid = torch.stack([2 * coords[:, 0] / max(width - 1, 1) - 1,
                        2 * coords[:, 1] / max(height - 1, 1) - 1], dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode=padding_mode,
                         align_corners=True)


def forward_splat(values, flow):
    """Summation splatting: every source pixel adds its value bilinearly at p + flow(p).

    Pure torch (scatter-add), differentiable w.r.t. `values` and `flow`, CPU and CUDA.
    """
    batch, channels, height, width = values.shape
    target = pixel_grid(height, width, values.device, flow.dtype) + flow
    x0 = torch.floor(target[:, 0])
    y0 = torch.floor(target[:, 1])
    out = values.new_zeros(batch, channels, height * width)
    flat_values = values.reshape(batch, channels, -1)
    for dx in (0, 1):
        for dy in (0, 1):
            xs, ys = x0 + dx, y0 + dy
            weight = (1 - (target[:, 0] - xs).abs()) * (1 - (target[:, 1] - ys).abs())
            inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
            weight = (weight * inside).reshape(batch, 1, -1).to(values.dtype)
            index = (ys.clamp(0, height - 1) * width + xs.clamp(0, width - 1)).long().reshape(batch, 1, -1)
            out = out.scatter_add(2, index.expand(-1, channels, -1), flat_values * weight)
    return out.reshape(batch, channels, height, width)


def softmax_splat(values, flow, metric, eps=1e-7):
    """Softmax splatting (Niklaus & Liu, CVPR 2020): Σ exp(Z)·x / Σ exp(Z) at the target.

    Returns the splatted values and the splatted weight mass (B, 1, H, W); a mass near zero marks
    a hole that no source pixel reached. `metric` Z is (B, 1, H, W); it is shifted by its maximum
    per sample before the exponential, which leaves the ratio unchanged and avoids overflow.
    """
    metric = metric - metric.amax(dim=(1, 2, 3), keepdim=True).detach()
    weights = metric.exp()
    splatted = forward_splat(torch.cat([values * weights, weights], 1), flow)
    numerator, mass = splatted[:, :-1], splatted[:, -1:]
    return numerator / (mass + eps), mass
