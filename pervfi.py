"""PerVFI (Wu et al., CVPR 2024): perception-oriented frame interpolation with asymmetric blending.

This is the authors' released generator (mulns/PerVFI, `PFlowVFI_V0.Network(dilate_size=9)`, the
network of their v00 checkpoint): the same module tree, parameter names, shapes and arithmetic,
so their checkpoint loads with `strict=True` (`load_official_state_dict`) and the outputs match.
`width` scales every channel count for small CPU experiments; width 1.0 is the official network.

Pipeline for frames I0, I1 in [0, 1] (mapped to [-1, 1] inside), flows F0->1, F1->0 in pixels and a
time t in (0, 1):

1. Feature pyramid (softmax splatting's encoder): level 0 = [image, 32 ch] at full size, 64 ch at
   1/2, 96 ch at 1/4. A GridNet-style metric network scores every frame-0 pixel by brightness
   constancy along the flow; the metric is scaled by 2t (2(1-t) for frame 1) and NEGATED before
   softmax splatting (the authors' convention: a low score wins).
2. Frame 0 (the primary side) is softmax-splatted to t at every level (flows and metrics are
   bilinearly resized level to level); a hole mask marks pixels no frame-0 pixel reached. Frame 1
   is not splatted: the flow t->1 is obtained by splatting (1-t)F1->0 and negating it.
3. Frame 1's features are aligned to t, coarse to fine, by modulated deformable convolutions whose
   offsets are learned from [splatted f0, f1, hole mask, flow t->1] (the flow is an input, not the
   offset's starting point), and merged with the splatted frame-0 features.
4. Asymmetric soft-binary blending per level, f0 (1 - m) + f1' m with m = tanh(|x|); x comes from
   the hole mask (9x9 conv) gated by channel attention, so m ~ 0 (frame 0) away from holes.
5. An HRNet-style fusion turns the blended pyramid into conditions at 1/2, 1/4, 1/8.
6. A conditional Glow (3 blocks x K = 16 steps: ActNorm with data-dependent initialisation, dense
   invertible 1x1 conv, affine coupling log-scale = scale*tanh(.) + scale_shift conditioned on the
   level's condition) maps the target frame itself to latents. The priors do not see the
   condition; the last block's prior is a learned constant. Sampling treats the given latents as
   standard-normal noise: z = mean + sd * eps, eps ~ heat * N(0, 1).

Modules: `pervfi_features.py` (splatting, encoder, metric; steps 1-2), `dcn.py` (the deformable
convolution), `pervfi_blend.py` (steps 3-5), `pervfi_glow.py` (step 6 and the NLL); this file holds
the network, its config, the authors' checkpoint format and the Laplacian loss, and re-exports the
public names of the others.

The flow estimator is not a registered submodule: it is frozen, kept out of `state_dict()` and of
`parameters()` (so the optimizer never sees it), and still follows `.to(device)`.

Official training recipe (src/train): loss = NLL (`official_nll`) + 0.1 * `losses.pervfi_laplacian_loss` + 0.2 * VGG
on a sample drawn at heat = std of the encoded latents (`training_heat`).
"""
import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

import checkpoints
import flow as flowlib
import weights
from checkpoints import CheckpointError
from dcn import DCNPack, DeformConv2d, deform_conv2d, offset_groups  # noqa: F401  (public names)
from pervfi_blend import (BLEND_DILATION, MASK_JITTER, AttentionMerge, DeformableAlign,  # noqa: F401
                          MultiscaleFuse, SoftBinary)
from pervfi_features import (HOLE_LEVEL, METRIC_CLIP, SPLAT_EPS, FeaturePyramid,  # noqa: F401
                             binary_hole, softsplat, splat_pyramid, splat_sum)
from pervfi_glow import (DEQUANT_LEVELS, GLOW_BLOCKS, ActNorm, CondFlowNet, FlowStep,  # noqa: F401
                         bits_per_dim, latent_shapes, official_nll, squeeze2d, unsqueeze2d)
from resnet_3D import scaled_channels

OFFICIAL_ROOT = "featurePyramid."  # every key of the authors' generator file starts with a known root
INFERENCE_FLOW_ESTIMATOR = "raft_sintel"  # the authors' inference: RAFT, Sintel weights, 12 iterations
OFFLINE_FLOW_ESTIMATOR = "dis"  # used, with a warning, when a learned estimator's weights are unavailable


def default_pervfi_config(**overrides):
    """The default PerVFI configuration (plain types only, stored in checkpoints).

    width scales every channel count (1.0 = the official network, 8,667,545 parameters without the
    flow estimator); steps_per_level is K, the flow steps per Glow block (16 official); heat is
    the sampling temperature at inference (0.3 in the released inference code); train_heat is the
    temperature of the sample returned during training for the Lap/perceptual terms
    ("latent_std" = the std of the encoded latents, as in the official training code, or a float).
    flow_estimator names a flow.py estimator; the authors ran RAFT with its Sintel weights (their
    training used flows precomputed by RAFT or GMFlow); "dis" needs no downloaded weights.
    """
    config = dict(model="pervfi", scale=2, width=1.0, flow_estimator="dis", steps_per_level=16,
                  heat=0.3, train_heat="latent_std")
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"pervfi.py: unknown PerVFI config keys {unknown}; known: {sorted(config)}")
    config.update(overrides)
    return config


def build_pervfi(config, flow_estimator=None):
    """PerVFI from a config dict: the keys of `default_pervfi_config` are used, others are ignored;
    `.config` keeps PerVFI's.

    `flow_estimator` (an nn.Module: forward(img0, img1) -> (B, 2, H, W)) replaces the one named in
    the config; otherwise `flow.build_flow_estimator(config["flow_estimator"])` is built on first
    use (or call `model.set_flow_estimator(name, weights_dir=...)`).
    """
    if config.get("model", "pervfi") != "pervfi":
        raise ValueError(f"pervfi.py: build_pervfi got model={config['model']!r}, expected 'pervfi'")
    known = {k: v for k, v in config.items() if k in default_pervfi_config()}
    model = PerVFI(default_pervfi_config(**known))
    if flow_estimator is not None:
        model.set_flow_estimator(flow_estimator)
    return model


# ----------------------------------------------------------------------------------------------
# The authors' checkpoint
# ----------------------------------------------------------------------------------------------

def official_state_dict(checkpoint):
    """The generator's state dict from what `torch.load` returns for the authors' v00 file.

    Their file is the generator's plain state_dict, possibly with DDP's `module.` (their loader
    strips it: `k.replace("module.", "")`); a dict wrapping it under "state_dict" / "model" /
    "netG" is accepted too.
    """
    state = checkpoint
    while isinstance(state, dict) and not any(torch.is_tensor(v) for v in state.values()):
        wrapped = [state[k] for k in ("state_dict", "model", "netG", "generator") if isinstance(state.get(k), dict)]
        if len(wrapped) != 1:
            raise ValueError(f"pervfi.py: no PerVFI state dict in this checkpoint (keys {sorted(state)[:8]})")
        state = wrapped[0]
    if not isinstance(state, dict):
        raise ValueError(f"pervfi.py: expected a state dict, got {type(state).__name__}")
    return {".".join(part for part in key.split(".") if part != "module"): value for key, value in state.items()}


def load_official_state_dict(model, checkpoint, strict=True):
    """Load the authors' weights (a path or a loaded object, see `official_state_dict`) into
    `model` (a width-1.0 PerVFI) with strict key checking; returns the model."""
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(official_state_dict(checkpoint), strict=strict)
    return model


def is_official_checkpoint(obj):
    """True for what torch.load gives for the authors' file: PerVFI's keys and none of our config."""
    if not isinstance(obj, dict) or "config" in obj:
        return False
    try:
        state = official_state_dict(obj)
    except ValueError:
        return False
    return any(key.startswith(OFFICIAL_ROOT) for key in state)


def load_official_checkpoint(obj, path, overrides=None, weights_dir=None):
    """(network, checkpoint record) for the authors' file at `path` (`obj` = its torch.load), run as
    their inference pipeline: RAFT with the Sintel weights as flow estimator (unless `overrides`
    name another), DIS with a warning when those weights cannot be had."""
    config = default_pervfi_config(**{"flow_estimator": INFERENCE_FLOW_ESTIMATOR, **(overrides or {})})
    if config["width"] != 1.0 or config["steps_per_level"] != 16:
        raise CheckpointError(f"{path}: the authors' PerVFI checkpoint needs width 1.0 and steps_per_level 16")
    network = PerVFI(config)
    state = official_state_dict(obj)
    checkpoints.load_strict(network, state, path, hint="Expected the authors' PerVFI v00 generator.")
    network.set_flow_estimator(weights_dir=weights_dir)
    return network, {"model": "pervfi", "config": config, "format": "official", "state_dict": state}


def build_official_pervfi(checkpoint, flow_estimator=None, **overrides):
    """A width-1.0 PerVFI carrying the authors' weights (`checkpoint`: path or loaded object)."""
    config = default_pervfi_config(**overrides)
    if config["width"] != 1.0 or config["steps_per_level"] != 16:
        raise ValueError("pervfi.py: the official checkpoint needs width=1.0 and steps_per_level=16")
    return load_official_state_dict(build_pervfi(config, flow_estimator), checkpoint)


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

def standard_normal(shape, like, generator=None):
    """N(0, 1) noise of `shape` in `like`'s device and dtype (see `drawn` for `generator`)."""
    return drawn(torch.randn, shape, like, generator)


def standard_uniform(like, generator=None):
    """U(0, 1) noise shaped like `like` (see `drawn` for `generator`)."""
    return drawn(torch.rand, like.shape, like, generator)


def drawn(draw, shape, like, generator):
    """`draw` (torch.randn or torch.rand) in float32 on the generator's device (a CPU generator
    gives the same numbers whatever device the network runs on), moved to `like`'s device and dtype.

    `generator` may be a list, one per sample: the leading dimension (samples, or sample-major
    items) is then split into equal blocks, block i drawn from generator i, so that a sample's
    noise does not depend on which other samples share its batch.
    """
    if isinstance(generator, (list, tuple)):
        if not generator or shape[0] % len(generator):
            raise ValueError(f"pervfi.py: {len(generator)} generators for a batch of {shape[0]}")
        block = (shape[0] // len(generator), *shape[1:])
        return torch.cat([drawn(draw, block, like, one) for one in generator])
    device = like.device if generator is None else generator.device
    noise = draw(shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


class PerVFI(nn.Module):
    """PerVFI with the shared model interface: forward(inputs, ts, target) -> {"pred", and "nll" with a
    target} (see the module docstring); the audio arguments of ASVFI's interface are not taken,
    since `registry.consumes` says PerVFI reads no sound."""

    uses_audio = False
    arbitrary_t = True  # any t in (0, 1) in one pass: 4x/8x need no recursion

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        width = config["width"]
        features = [scaled_channels(c, width) for c in (32, 64, 96)]
        levels = [features[0] + 3] + features[1:]
        hidden = scaled_channels(64, width, minimum=8)
        self.multiple = 2 ** GLOW_BLOCKS
        self.featurePyramid = FeaturePyramid(features, [scaled_channels(c, width) for c in (16, 32, 64, 96)])
        self.deformableAlign = DeformableAlign(levels)
        self.attentionMerge = AttentionMerge(levels, hidden)
        self.multiscaleFuse = MultiscaleFuse(levels, stem=hidden,
                                             branches=[scaled_channels(c, width) for c in (32, 64, 96)])
        self.condFLownet = CondFlowNet(levels, config["steps_per_level"], hidden)
        object.__setattr__(self, "flow_estimator", None)
        self.flow_estimator_used, self.flow_estimator_note = None, ""  # set with the estimator

    # --- flow estimator (frozen, outside state_dict / parameters) ---------------------------

    def set_flow_estimator(self, estimator=None, weights_dir=None, allow_download=True):
        """Use `estimator` (a module or a flow.py name; default: the config's) frozen and in eval mode.

        A named learned estimator whose weights cannot be had is replaced by OpenCV DIS with a
        warning; `flow_estimator_used` says which one runs (for reports), `flow_estimator_note` why.
        """
        if estimator is None or isinstance(estimator, str):
            name = estimator or self.config["flow_estimator"]
            estimator, self.flow_estimator_used, self.flow_estimator_note = self._build_estimator(
                name, weights_dir, allow_download)
        else:
            self.flow_estimator_used, self.flow_estimator_note = type(estimator).__name__, "given module"
        estimator.requires_grad_(False)
        estimator.eval()
        object.__setattr__(self, "flow_estimator", estimator.to(self.device))
        return estimator

    def _build_estimator(self, name, weights_dir, allow_download):
        """(estimator, name used, note): `name`, or DIS when its weights are unavailable."""
        try:
            return flowlib.build_flow_estimator(name, weights_dir=weights_dir, allow_download=allow_download,
                                                device=self.device), name, ""
        except weights.WeightsUnavailable as error:
            if name == OFFLINE_FLOW_ESTIMATOR:
                raise
            note = (f"{OFFLINE_FLOW_ESTIMATOR} instead of {name}: {error}. Results differ from the published "
                    f"pipeline; put the file in --weights-dir to use {name}")
            warnings.warn(f"PerVFI flow estimator: {note}", stacklevel=3)
            return (flowlib.build_flow_estimator(OFFLINE_FLOW_ESTIMATOR, device=self.device),
                    OFFLINE_FLOW_ESTIMATOR, note)

    def _apply(self, fn, *args, **kwargs):
        """Let .to()/.cuda()/.double() also move the (unregistered) flow estimator."""
        super()._apply(fn, *args, **kwargs)
        if self.flow_estimator is not None:
            self.flow_estimator._apply(fn)
        return self

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def glow_dtype(self):
        """The Glow runs in its parameters' dtype (float32 under autocast, float64 after .double())."""
        return self.condFLownet.blocks[0].prior.scale.dtype

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def estimate_flows(self, frame0, frame1):
        """(F0->1, F1->0) from one batched call of the frozen estimator."""
        if self.flow_estimator is None:
            self.set_flow_estimator()
        flows = self.flow_estimator(torch.cat([frame0, frame1]), torch.cat([frame1, frame0]))
        return flows.to(frame0.dtype).chunk(2, dim=0)

    # --- conditions ---------------------------------------------------------------------------

    def conditions(self, frame0, frame1, times, flows=None, mask_noise=None, generator=None, trace=None):
        """Glow conditions for frames (B, 3, H, W) in [0, 1] (H, W multiples of 8) and times (B, n).

        Returns the conditions (level 0 first, in `glow_dtype`) and the soft-binary masks (level 0 first)
        of the B*n items (sample-major). Per-frame work (flow, pyramid, metric) runs once. In
        training mode the masks get (U - 0.5) / 100 with U = `mask_noise` (list, level 0 first)
        or drawn from `generator`. `trace` (a dict) collects the intermediates.
        """
        flow01, flow10 = self.estimate_flows(frame0, frame1) if flows is None else flows
        n = times.shape[1]
        image0, image1 = frame0 * 2 - 1, frame1 * 2 - 1
        encode, metric = self.featurePyramid.netEncode, self.featurePyramid.netSoftmetric
        features0, features1 = encode(image0), encode(image1)
        metric0, metric1 = metric(features0, features1, flow01), metric(features1, features0, flow10)
        if trace is not None:
            trace["enc_frame0"], trace["softmetric_raw"] = features0, [metric0, metric1]
        repeat = lambda x: x.repeat_interleave(n, dim=0)
        flow01, flow10, metric0, metric1 = map(repeat, (flow01, flow10, metric0, metric1))
        features0, features1 = [repeat(f) for f in features0], [repeat(f) for f in features1]
        # t and 1 - t as the official Python floats would give them (1 - t in double, then cast)
        t64 = times.reshape(-1, 1, 1, 1).double()
        t, rest = t64.to(flow01.dtype), (1 - t64).to(flow01.dtype)
        metric0t, flow0t = metric0 * 2 * t, t * flow01
        metric1t, flow1t = metric1 * 2 * rest, rest * flow10
        flow_t1 = -1 * softsplat(flow1t, flow1t, metric1t.neg().clip(-METRIC_CLIP, METRIC_CLIP), "soft")
        splatted0, holes = splat_pyramid(features0, metric0t, flow0t, trace)
        if trace is not None:
            trace["splat_feat0"], trace["holes"], trace["Ft2"] = splatted0, holes, flow_t1
        complementary = self.deformableAlign(splatted0, features1, holes, flow_t1, trace)
        if self.training and mask_noise is None:
            mask_noise = [standard_uniform(h, generator) for h in holes]
        blended, masks = self.attentionMerge(splatted0, complementary, holes,
                                             mask_noise if self.training else None, trace)
        conditions = [c.to(self.glow_dtype) for c in self.multiscaleFuse(blended)]
        if trace is not None:
            trace["conds"] = conditions
        return conditions, masks

    # --- likelihood and sampling --------------------------------------------------------------

    def likelihood(self, target, conditions, gt_noise=None, generator=None):
        """Official NLL terms of target frames (N, 3, H, W) in [0, 1] given their conditions.

        In training mode the target in [-1, 1] gets (U - 0.5) / 255 with U = `gt_noise` or drawn
        from `generator`, and the per-pixel dequantisation constant enters (`official_nll`).
        Returns a dict: nll, log_p, log_det (normalised, (N,)), log_p_raw, log_det_raw (sums) and
        latents (raw z, level 0 first).
        """
        x = target.to(self.glow_dtype) * 2 - 1
        if self.training:
            noise = standard_uniform(x, generator) if gt_noise is None else gt_noise.to(x)
            x = x + (noise - 0.5) / DEQUANT_LEVELS
        log_p_raw, log_det_raw, latents = self.condFLownet.encode(x, conditions)
        nll, log_p, log_det = official_nll(log_p_raw, log_det_raw, x.shape[2] * x.shape[3], self.training)
        return dict(nll=nll, log_p=log_p, log_det=log_det, log_p_raw=log_p_raw, log_det_raw=log_det_raw,
                    latents=latents)

    def draw_eps(self, conditions, heat, generator=None):
        """Sampling noise heat * N(0, 1) for every latent (level 0 first; zeros at heat 0)."""
        shapes = latent_shapes(conditions[0].shape[2] * 2, conditions[0].shape[3] * 2)
        batch, like = conditions[0].shape[0], conditions[0]
        if not torch.is_tensor(heat) and heat == 0:
            return [like.new_zeros(batch, *shape) for shape in shapes]
        return [standard_normal((batch, *shape), like, generator) * heat for shape in shapes]

    def decode(self, conditions, eps=None, latents=None, trace=None):
        """Frames (N, 3, H, W), [0, 1]-ish and not clamped, from noise `eps` (z = mean + sd * eps)
        or from raw `latents` (exact inverse of `likelihood`'s encoding)."""
        return (self.condFLownet.decode(conditions, eps, latents, trace) + 1) / 2

    def training_heat(self, latents):
        heat = self.config["train_heat"]
        if heat == "latent_std":  # the official sqrt(var(all latents)), a tensor (not detached)
            return torch.sqrt(torch.var(torch.cat([z.flatten() for z in latents])))
        return float(heat)

    # --- public API ---------------------------------------------------------------------------

    def forward(self, inputs, ts=None, target=None, heat=None, generator=None, flows=None):
        """inputs (B, 4, 3, H, W) in [0, 1] (uses frames 1 and 2); ts (B, n) in (0, 1) or None
        (k/scale); target (B, n, 3, H, W) adds "nll" (B,): the official NLL (`official_nll`).
        PerVFI reads no sound (registry.consumes says so), so it takes no audio arguments.

        "pred" (B, n, 3, H, W), not clamped: with a target in training mode, a sample at the
        training heat (the official training code's choice for the Lap/perceptual terms);
        otherwise a sample at `heat` (default config["heat"]) drawn with `generator` (one, or a list
        of one per sample: see `drawn`). `flows` =
        (F0->1, F1->0) skips the estimator (cached flows, at the input size). Frames are
        zero-padded to multiples of 8 (as the official inference does) and cropped back.
        """
        if inputs.dim() != 5 or inputs.shape[1] < 3 or inputs.shape[2] != 3:
            raise ValueError(f"pervfi.py: inputs must be (B, 4, 3, H, W), got {tuple(inputs.shape)}")
        batch, _, _, height, width = inputs.shape
        times = self.resolve_times(ts, batch, inputs.device)
        n = times.shape[1]
        frame0, frame1 = self.pad(inputs[:, 1]), self.pad(inputs[:, 2])
        if flows is not None:
            flows = tuple(self.pad(f).to(frame0.dtype) for f in flows)
        conditions, _ = self.conditions(frame0, frame1, times, flows, generator=generator)
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            out = {}
            decode_heat = self.config["heat"] if heat is None else heat
            if target is not None:
                target_frames = self.pad(target.reshape(batch * n, *target.shape[2:]))
                encoded = self.likelihood(target_frames, conditions, generator=generator)
                out["nll"] = encoded["nll"].view(batch, n).mean(dim=1)
                if self.training:
                    decode_heat = self.training_heat(encoded["latents"])
            pred = self.decode(conditions, self.draw_eps(conditions, decode_heat, generator))
        out["pred"] = pred[..., :height, :width].reshape(batch, n, 3, height, width)
        return out

    @torch.no_grad()
    def sample(self, frame0, frame1, t, heat=None, generator=None, seed=None, flows=None):
        """Interpolate (B, 3, H, W) frames at t (float or (B,)) -> (B, 3, H, W) clamped to [0, 1].

        heat 0 is deterministic (the priors' means); a `generator` or `seed` makes samples reproducible.
        """
        if seed is not None:
            if generator is not None:
                raise ValueError("pervfi.py: pass either generator or seed, not both")
            generator = torch.Generator().manual_seed(seed)
        times = torch.as_tensor(t, dtype=torch.float32, device=frame0.device).reshape(-1, 1)
        times = times.expand(frame0.shape[0], 1)
        inputs = torch.stack([frame0, frame0, frame1, frame1], dim=1)
        out = self.forward(inputs, ts=times, heat=heat, generator=generator, flows=flows)
        return out["pred"][:, 0].clamp(0, 1)

    def resolve_times(self, ts, batch, device):
        if ts is None:
            scale = self.config["scale"]
            ts = torch.arange(1, scale, dtype=torch.float32, device=device) / scale
        ts = torch.as_tensor(ts, dtype=torch.float32, device=device)
        if ts.dim() < 2:
            ts = ts.reshape(1, -1)
        ts = ts.expand(batch, -1)
        if ((ts <= 0) | (ts >= 1)).any():
            raise ValueError(f"pervfi.py: interpolation times must lie in (0, 1), got {ts.tolist()}")
        return ts

    def pad(self, x):
        """Zero-pad (.., H, W) on the right/bottom to multiples of 8 (the output is cropped back)."""
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.multiple, (-width) % self.multiple
        if pad_h == 0 and pad_w == 0:
            return x
        return F.pad(x, (0, pad_w, 0, pad_h))
