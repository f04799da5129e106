"""ASVFI: FLAVR's 3D U-Net guided by the soundtrack through cross-attention.

    config = default_config(scale=2, width=0.125)
    model = ASVFI(config)            # or registry.build_model(config), as the scripts do
    out = model(inputs, audio=audio, audio_times=audio_times, has_audio=has_audio)  # out["pred"]

Video branch: `UNet.VideoUNet` (FLAVR `UNet_3D_3D`, checkpoint-compatible). Audio branch: log-mel
front-end (VGGish definition, computed in torch on the model's device) -> small 1-D conv encoder
-> audio tokens, each stamped with its time in target-interval units (0 = input frame 1, 1 = input
frame 2, target k of scale s at k/s). Fusion: video features (queries, with space-time position
encodings; the four input frames sit at times -1, 0, 1, 2) attend to the audio tokens once per
target time k/s, with a per-head bias that favours audio close to that target time; the result is
added through zero-initialised gates (default) or a zero-initialised output projection (for
ablations), so a fresh model computes exactly what FLAVR computes. A learned
"no audio" token replaces the tokens of clips without sound.

Every architecture choice lives in the config dict (plain types, stored in checkpoints).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import checkpoints
from resnet_3D import ENCODER_CHANNELS, ENCODER_LAYERS, scaled_channels
from UNet import N_INPUT_FRAMES, VideoUNet
from utils import AUDIO_RATE, MEL_BANDS, MEL_HOP, ASVFIError

AUDIO_MODES = ("mel", "none")
# How a fresh fusion block adds nothing: "zero_gate" zeroes its gates (at the first step only they
# learn, after it the whole branch; with a 10x gate learning rate the fastest measured), "zero_out"
# zeroes its output projection and opens the gates (slower on the demo; kept for ablations).
FUSION_INITS = ("zero_gate", "zero_out")
# The gate value under "zero_out": open from the start, so the gate does not hold the branch back.
OPEN_GATE = 1.0
# Times of the four input frames in target-interval units (the targets lie between 0 and 1).
INPUT_FRAME_TIMES = (-1.0, 0.0, 1.0, 2.0)
# Top-level modules of the FLAVR video branch; everything else belongs to the audio branch.
VIDEO_BRANCH_MODULES = ("encoder", "decoder", "feature_fuse", "outconv")


# ----------------------------------------------------------------------------- config
def default_config(**overrides):
    """The model config: FLAVR's sizes with the audio branch on; overrides replace single keys.

    Keys: model, scale (2/4/8: n_out = scale - 1), depth ("unet_18"|"unet_34"), width (channel
    multiplier, 1.0 = FLAVR), audio ("mel"|"none"), encoder_bias (None = FLAVR's rule: no bias
    at 2x, biases at 4x/8x), fuse_decoder (also fuse at the H/2 decoder scale, not only at the
    bottleneck), audio_dim (token and bottleneck attention width), decoder_fusion_dim
    (attention width at the decoder scale, small because it runs on H/2 x W/2 x 4 positions),
    audio_heads, audio_stride (mel frames per token; 1 keeps 10 ms resolution, which click
    timing needs), fusion_init ("zero_out"|"zero_gate", see FUSION_INITS).
    """
    config = {
        "model": "asvfi",
        "scale": 2,
        "depth": "unet_18",
        "width": 1.0,
        "audio": "mel",
        "encoder_bias": None,
        "fuse_decoder": True,
        "audio_dim": 128,
        "decoder_fusion_dim": 32,
        "audio_heads": 4,
        "audio_stride": 1,
        "fusion_init": "zero_gate",
    }
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ASVFIError(f"unknown ASVFI config keys {unknown}; known keys: {sorted(config)}")
    config.update(overrides)
    validate_config(config)
    return config


def validate_config(config):
    """Raise a clear error for values the ASVFI network cannot be built from."""
    if config["model"] != "asvfi":
        raise ASVFIError(f"model.py builds ASVFI, not {config['model']!r} (registry.build_model picks the model)")
    if int(config["scale"]) != config["scale"] or config["scale"] < 2:
        raise ASVFIError(f"scale must be an integer >= 2 (n_out = scale - 1), got {config['scale']!r}")
    if config["depth"] not in ENCODER_LAYERS:
        raise ASVFIError(f"unknown depth {config['depth']!r}; choose one of {sorted(ENCODER_LAYERS)}")
    if config["audio"] not in AUDIO_MODES:
        raise ASVFIError(f"unknown audio mode {config['audio']!r}; choose one of {list(AUDIO_MODES)}")
    if config["fusion_init"] not in FUSION_INITS:
        raise ASVFIError(f"unknown fusion_init {config['fusion_init']!r}; choose one of {list(FUSION_INITS)}")
    if not config["width"] > 0:
        raise ASVFIError(f"width must be positive, got {config['width']!r}")
    for key in ("audio_dim", "decoder_fusion_dim"):
        if config[key] % config["audio_heads"]:
            raise ASVFIError(f"{key} {config[key]} must be a multiple of audio_heads {config['audio_heads']}")


def encoder_bias(config):
    """FLAVR's rule unless the config says otherwise: 2x has no encoder biases, 4x/8x have them."""
    return config["scale"] != 2 if config["encoder_bias"] is None else bool(config["encoder_bias"])


def fit_hint(config):
    """What to check when weights do not fit an ASVFI of this config (registry.load_model adds it)."""
    return (f"The model: scale {config['scale']}, depth {config['depth']}, width {config['width']}, encoder "
            f"biases {encoder_bias(config)}, audio {config['audio']}. FLAVR 2x checkpoints have no encoder "
            "biases and 4x/8x ones have them; check --scale / encoder_bias. ASVFI checkpoints with "
            "audio.*.value_norm keys come from an earlier version that normalised the attention values; "
            "train them again.")


# ----------------------------------------------------------------------------- audio front-end
def hertz_to_mel(frequency):
    """HTK mel scale, as VGGish uses."""
    return 1127.0 * torch.log1p(frequency / 700.0)


def mel_filterbank(n_fft, sample_rate, n_mels, f_min, f_max):
    """(n_fft // 2 + 1, n_mels) triangular filters, VGGish definition.

    Triangles are built in the mel domain over equally spaced band edges; each FFT bin weight
    is min(rising slope, falling slope) clipped at 0; the DC bin gets no weight.
    """
    n_bins = n_fft // 2 + 1
    bin_mel = hertz_to_mel(torch.linspace(0.0, sample_rate / 2.0, n_bins, dtype=torch.float64))
    edges = hertz_to_mel(torch.linspace(f_min, f_max, 2, dtype=torch.float64))
    edges = edges[0] + (edges[1] - edges[0]) * torch.linspace(0.0, 1.0, n_mels + 2, dtype=torch.float64)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bin_mel[:, None]) / (upper - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights[0] = 0.0
    return weights.float()


class LogMel(nn.Module):
    """VGGish-style log-mel spectrogram: 25 ms periodic-Hann frames every 10 ms (no centring),
    |FFT| (512 points), 64 HTK mel bands over 125-7500 Hz, log(mel + 0.01).

    Frame m covers samples [m * hop, m * hop + window); clips shorter than one window are
    zero-padded to one frame. The window and filterbank are non-persistent buffers, rebuilt
    from the arguments, so they never enter checkpoints.
    """

    def __init__(self, sample_rate=AUDIO_RATE, window=400, hop=MEL_HOP, n_mels=MEL_BANDS, f_min=125.0, f_max=7500.0,
                 log_offset=0.01):
        super().__init__()
        self.window_length, self.hop, self.log_offset = window, hop, log_offset
        self.n_fft = 2 ** math.ceil(math.log2(window))
        periodic_hann = 0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(window, dtype=torch.float64) / window)
        self.register_buffer("window", periodic_hann.float(), persistent=False)
        self.register_buffer("filterbank", mel_filterbank(self.n_fft, sample_rate, n_mels, f_min, f_max),
                             persistent=False)

    def n_frames(self, n_samples):
        return 1 + max(n_samples - self.window_length, 0) // self.hop

    def frame_centres(self, n_frames):
        """Sample index at the centre of each frame."""
        return torch.arange(n_frames) * self.hop + self.window_length // 2

    def forward(self, audio):
        """(B, A) waveform -> (B, n_mels, n_frames) log-mel, always float32."""
        with torch.autocast(device_type=audio.device.type, enabled=False):
            audio = audio.float()
            if audio.shape[-1] < self.window_length:
                audio = F.pad(audio, (0, self.window_length - audio.shape[-1]))
            frames = audio.unfold(-1, self.window_length, self.hop) * self.window
            magnitude = torch.fft.rfft(frames, n=self.n_fft).abs()
            return torch.log(magnitude @ self.filterbank + self.log_offset).transpose(1, 2)


# ----------------------------------------------------------------------------- audio encoder and fusion
def sinusoids(values, n_freqs, lowest_exponent):
    """sin/cos features of `values` at frequencies pi * 2^e, e = lowest_exponent ... (+n_freqs)."""
    exponents = torch.arange(n_freqs, device=values.device, dtype=torch.float32) + lowest_exponent
    angles = values.float().unsqueeze(-1) * (math.pi * 2.0 ** exponents)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def time_features(times):
    """Encoding of times in target-interval units: periods from 8 intervals down to 1/16 interval."""
    return sinusoids(times, n_freqs=8, lowest_exponent=-2)


TIME_FEATURES = 16
SPACE_FEATURES = 8  # 4 frequencies x (sin, cos), for y and for x separately


def normalised_coordinates(size, device):
    """Pixel centres of a feature map axis in [-1, 1], so encodings do not depend on the size."""
    return (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2 - 1


class AudioEncoder(nn.Module):
    """Log-mel (B, n_mels, M) -> audio tokens (B, S, dim) with a 1-D conv stack along time.

    The strided middle convolution (kernel 3, padding 1) centres token j on mel frame
    j * stride, which `token_frames` reports so every token gets the time of its centre.
    The log-mel is shifted so silence (log 0.01) maps to 0 and scaled to about unit range;
    no per-clip normalisation, because loudness itself is information.
    """

    def __init__(self, n_mels, dim, stride=1, log_offset=0.01):
        super().__init__()
        self.stride, self.silence_level = stride, math.log(log_offset)
        self.layers = nn.Sequential(
            nn.Conv1d(n_mels, dim, kernel_size=3, padding=1), nn.GELU(),
            nn.Conv1d(dim, dim, kernel_size=3, stride=stride, padding=1), nn.GELU(),
            nn.Conv1d(dim, dim, kernel_size=3, padding=1),
        )

    def token_frames(self, n_frames):
        return torch.arange(0, n_frames, self.stride)

    def forward(self, log_mel):
        return self.layers((log_mel - self.silence_level) / 5.0).transpose(1, 2)


class AudioFusion(nn.Module):
    """Cross-attention from video features to audio tokens, once per target time, added as zero at init.

    Query of video token (t_j, y, x) for target k: proj(LN(feature)) + proj(encodings of t_j, y,
    x) + proj(encoding of k/s). Keys: LN(audio token + proj(encoding of its time)); values:
    proj(audio token), not normalised, because a token's magnitude carries the loudness (a
    LayerNorm there hid it, and the demo's audio arm then learned to use the sound in some runs
    and not in others). Each head adds -slope_h * |k/s - t_token| to its logits (slopes learned,
    initialised from broad to sharp), so attention can pick the sound at the target instant. The per-target
    results are concatenated (targets stay distinguishable for the output head), projected to the
    feature channels and added as x + tanh(gate) * result. A fresh block adds zero: with init
    "zero_gate" the gates are zero (the first step moves only them, later ones the whole branch);
    with "zero_out" the output projection is zero and the gates open (tanh(1) = 0.76).

    Cost: the position encodings are separable (one small projection per axis, broadcast), and
    the target-time term of q_k = q + e_k enters as e_k . key, a per-(target, token) logit bias,
    so no (video tokens x dim) tensor is built per target outside the attention itself.
    """

    def __init__(self, channels, token_dim, dim, heads, n_targets, init="zero_gate"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} must be a multiple of the number of heads {heads}")
        self.heads, self.n_targets = heads, n_targets
        self.query_norm = nn.LayerNorm(channels)
        self.query = nn.Linear(channels, dim)
        self.query_time = nn.Linear(TIME_FEATURES, dim, bias=False)
        self.query_y = nn.Linear(SPACE_FEATURES, dim, bias=False)
        self.query_x = nn.Linear(SPACE_FEATURES, dim, bias=False)
        self.query_target_time = nn.Linear(TIME_FEATURES, dim, bias=False)
        self.key_time = nn.Linear(TIME_FEATURES, token_dim)
        self.key_norm = nn.LayerNorm(token_dim)
        self.key = nn.Linear(token_dim, dim)
        self.value = nn.Linear(token_dim, dim)
        self.out = nn.Linear(n_targets * dim, channels)
        initial_slopes = torch.logspace(0, math.log10(64.0), heads) if heads > 1 else torch.tensor([8.0])
        self.time_slope = nn.Parameter(torch.log(torch.expm1(initial_slopes)))  # softplus^-1
        self.gate = nn.Parameter(torch.zeros(channels))
        if init == "zero_out":
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
            nn.init.constant_(self.gate, OPEN_GATE)

    def _split_heads(self, x):
        """(..., L, dim) -> (..., heads, L, dim / heads)."""
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def _queries(self, x, frame_times):
        """(B, heads, T*h*w, d_h) queries of the video tokens, in x.permute(0, 2, 3, 4, 1) order."""
        batch, channels, frames, height, width = x.shape
        video = x.permute(0, 2, 3, 4, 1).reshape(batch, -1, channels)
        position = (self.query_time(time_features(frame_times))[:, None, None]
                    + self.query_y(sinusoids(normalised_coordinates(height, x.device), 4, 0))[None, :, None]
                    + self.query_x(sinusoids(normalised_coordinates(width, x.device), 4, 0))[None, None, :])
        query = self.query(self.query_norm(video)) + position.reshape(-1, position.shape[-1]).to(video.dtype)
        return self._split_heads(query)

    def _logit_bias(self, keys, token_times, target_times):
        """(B, n, heads, S): the target-time query term e_k . key plus the time-distance penalty."""
        target = self._split_heads(self.query_target_time(time_features(target_times)))  # (heads, n, d_h)
        content = torch.einsum("hnd,bhsd->bnhs", target.to(keys.dtype), keys) / math.sqrt(keys.shape[-1])
        distance = (target_times.view(1, -1, 1) - token_times.unsqueeze(1)).abs()
        return content - F.softplus(self.time_slope).view(1, 1, -1, 1) * distance.unsqueeze(2)

    def forward(self, x, tokens, token_times, target_times, frame_times):
        batch, channels, frames, height, width = x.shape
        n_targets = len(target_times)
        query = self._queries(x, frame_times)
        timed_tokens = tokens + self.key_time(time_features(token_times)).to(tokens.dtype)
        keys = self._split_heads(self.key(self.key_norm(timed_tokens)))
        values = self._split_heads(self.value(tokens))
        bias = self._logit_bias(keys, token_times, target_times).to(query.dtype)

        def per_target(t):  # (B, ...) -> (B * n, ...); no copy when there is a single target
            return t.unsqueeze(1).expand(-1, n_targets, *t.shape[1:]).flatten(0, 1)

        attended = F.scaled_dot_product_attention(per_target(query), per_target(keys), per_target(values),
                                                  attn_mask=bias.flatten(0, 1).unsqueeze(2))
        attended = attended.unflatten(0, (batch, n_targets)).permute(0, 3, 1, 2, 4).flatten(2)  # (B, L, n*dim)
        fused = self.out(attended).view(batch, frames, height, width, channels).permute(0, 4, 1, 2, 3)
        return x + torch.tanh(self.gate).view(1, -1, 1, 1, 1).to(fused.dtype) * fused


class AudioBranch(nn.Module):
    """Everything audio: front-end, encoder, the "no audio" token and the fusion blocks."""

    def __init__(self, config, bottleneck_channels, decoder_channels):
        super().__init__()
        dim, heads, n_targets = config["audio_dim"], config["audio_heads"], config["scale"] - 1
        self.frontend = LogMel()
        self.encoder = AudioEncoder(n_mels=MEL_BANDS, dim=dim, stride=config["audio_stride"])
        self.no_audio_token = nn.Parameter(0.02 * torch.randn(dim))
        init = config["fusion_init"]
        self.bottleneck_fusion = AudioFusion(bottleneck_channels, dim, dim, heads, n_targets, init)
        self.decoder_fusion = (AudioFusion(decoder_channels, dim, config["decoder_fusion_dim"], heads, n_targets,
                                           init) if config["fuse_decoder"] else None)

    def fusions(self):
        return [fusion for fusion in (self.bottleneck_fusion, self.decoder_fusion) if fusion is not None]

    def gates(self):
        return [fusion.gate for fusion in self.fusions()]

    def tokens(self, audio, audio_times, has_audio, batch, device):
        """(tokens (B, S, dim), token times (B, S)); the "no audio" token where there is no sound."""
        if audio is None:
            return self.no_audio_token.view(1, 1, -1).expand(batch, 1, -1), torch.zeros(batch, 1, device=device)
        if audio_times is None or audio_times.shape != audio.shape:
            raise ValueError("audio needs audio_times of the same shape (B, A): the time of every sample in "
                             f"target-interval units; got audio {tuple(audio.shape)}, audio_times "
                             f"{None if audio_times is None else tuple(audio_times.shape)}")
        log_mel = self.frontend(audio)
        tokens = self.encoder(log_mel)
        frames = self.encoder.token_frames(log_mel.shape[-1])
        centres = self.frontend.frame_centres(log_mel.shape[-1])[frames].clamp(max=audio.shape[-1] - 1)
        token_times = audio_times[:, centres.to(audio_times.device)].float()
        if has_audio is not None:
            sounding = torch.as_tensor(has_audio, device=device).bool().view(-1, 1, 1)
            tokens = torch.where(sounding, tokens, self.no_audio_token.to(tokens.dtype))
        return tokens, token_times


# ----------------------------------------------------------------------------- the model
class ASVFI(VideoUNet):
    """FLAVR video branch (same state_dict keys) + optional audio branch under `audio.*`."""

    def __init__(self, config):
        super().__init__(n_outputs=config["scale"] - 1, depth=config["depth"], width=config["width"],
                         encoder_bias=encoder_bias(config))
        self.config = dict(config)
        self.scale = config["scale"]
        self.uses_audio = config["audio"] != "none"
        self.audio = (AudioBranch(config, self.bottleneck_channels, self.decoder_fusion_channels)
                      if self.uses_audio else None)
        self.register_buffer("target_times", torch.arange(1, self.scale, dtype=torch.float32) / self.scale,
                             persistent=False)
        self.register_buffer("frame_times", torch.tensor(INPUT_FRAME_TIMES), persistent=False)

    def _check_inputs(self, inputs, ts):
        if inputs.dim() != 5 or inputs.shape[1] != N_INPUT_FRAMES or inputs.shape[2] != 3:
            raise ValueError(f"inputs must be (B, {N_INPUT_FRAMES}, 3, H, W), got {tuple(inputs.shape)}")
        if ts is not None:
            native = self.target_times.to(ts.device, ts.dtype).expand_as(ts)
            if ts.shape[-1] != self.scale - 1 or not torch.allclose(ts, native, atol=1e-4):
                raise ValueError(f"ASVFI at scale {self.scale} predicts only t = k/{self.scale}; got ts {ts.tolist()}")

    def _fusion_hooks(self, audio, audio_times, has_audio, batch, device):
        if self.audio is None:
            return None, None
        tokens, token_times = self.audio.tokens(audio, audio_times, has_audio, batch, device)

        def hook(fusion):
            if fusion is None:
                return None
            return lambda x: fusion(x, tokens.to(x.dtype), token_times, self.target_times, self.frame_times)

        return hook(self.audio.bottleneck_fusion), hook(self.audio.decoder_fusion)

    def forward(self, inputs, audio=None, audio_times=None, has_audio=None, ts=None, target=None, frame_mean=None):
        """inputs (B, 4, 3, H, W) in [0, 1], any H, W -> {"pred": (B, scale - 1, 3, H, W)}.

        audio / audio_times (B, A): waveform and per-sample times; has_audio (B,) bool. Without
        audio (or with has_audio False) the learned "no audio" token stands in. `target` is
        accepted for the shared model interface and unused. `frame_mean` (B, 3) centres the frames
        instead of their own mean (inference.py passes the whole frame's mean to each tile).
        """
        self._check_inputs(inputs, ts)
        fuse_bottleneck, fuse_decoder = self._fusion_hooks(audio, audio_times, has_audio, inputs.shape[0],
                                                           inputs.device)
        frames = inputs.transpose(1, 2)
        return {"pred": self.predict(frames, fuse_bottleneck, fuse_decoder, frame_mean)}


# ----------------------------------------------------------------------------- FLAVR weights
def video_branch_keys(model):
    return [k for k in model.state_dict() if k.split(".", 1)[0] in VIDEO_BRANCH_MODULES]


def is_flavr_state_dict(state_dict):
    """A FLAVR release (or our video branch alone): only video-branch keys, the encoder among them."""
    roots = {key.split(".", 1)[0] for key in state_dict}
    return "encoder" in roots and roots <= set(VIDEO_BRANCH_MODULES)


FLAVR_SHAPE_KEYS = ("outconv.1.weight", "encoder.stem.0.weight",
                    *(f"encoder.layer{i}.0.conv1.0.weight" for i in range(1, len(ENCODER_CHANNELS) + 1)))


def flavr_config(state_dict, source):
    """The config of a released FLAVR network, read from its weights: audio off, scale from the
    output channels (3 per generated frame), encoder biases, depth (unet_34 has a third block in
    layer1) and width (the multiplier that gives every encoder stage its channel count)."""
    missing = [key for key in FLAVR_SHAPE_KEYS if key not in state_dict]
    if missing:
        raise checkpoints.CheckpointError(f"{source}: a FLAVR network without {', '.join(missing)}; the file is "
                                          f"incomplete or not a FLAVR release")
    return default_config(scale=state_dict["outconv.1.weight"].shape[0] // 3 + 1,
                          depth="unet_34" if any(k.startswith("encoder.layer1.2.") for k in state_dict) else "unet_18",
                          width=encoder_width(state_dict, source), audio="none",
                          encoder_bias="encoder.stem.0.bias" in state_dict)


def encoder_width(state_dict, source):
    """The width multiplier whose rounded channel counts are every encoder stage's in the weights."""
    found = [state_dict[f"encoder.layer{i}.0.conv1.0.weight"].shape[0] for i in range(1, len(ENCODER_CHANNELS) + 1)]
    for channels, base in sorted(zip(found, ENCODER_CHANNELS), key=lambda pair: -pair[1]):
        width = channels / base
        if [scaled_channels(c, width) for c in ENCODER_CHANNELS] == found:
            return width
    raise checkpoints.CheckpointError(f"{source}: encoder stages of {found} channels fit no width multiplier of "
                                      f"FLAVR's {list(ENCODER_CHANNELS)}")


def load_pretrained(model, path):
    """`--pretrained`: starting weights from a FLAVR release or from a checkpoint main.py wrote.

    Weights of the video network alone (a FLAVR release, bare or under 'state_dict', `module.`
    prefixes stripped; an `--audio none` run) fill the video branch, and the audio branch keeps
    its init; weights with an audio branch (an ASVFI run with audio) fill the whole network.
    Either must match exactly; errors name the file and the offending keys.
    """
    obj = checkpoints.load_file(path)
    held = obj.get("model", "asvfi") if isinstance(obj, dict) and "config" in obj else "asvfi"
    if held != "asvfi":
        raise checkpoints.CheckpointError(f"{path}: holds a checkpoint of {held}; --pretrained takes a FLAVR "
                                          f"release or an ASVFI checkpoint (resume a {held} run with --start_epoch)")
    state_dict = checkpoints.unwrap_state_dict(obj, path)
    keys = set(video_branch_keys(model)) if is_flavr_state_dict(state_dict) else None  # None: all the model's
    stored = obj.get("config") or {} if isinstance(obj, dict) else {}
    differing = [f"--{key} {was} (here {now})"
                 for key, was, now in checkpoints.config_differences(stored, model.config, ("scale", "depth", "width"))]
    hint = (f"The checkpoint was trained with {', '.join(differing)}: start with the same flags."
            if differing else fit_hint(model.config))  # main.py's checkpoint says what it was trained as
    return checkpoints.load_strict(model, state_dict, path, keys=keys, hint=hint)
