"""The metrics evaluate.py can run, by name: what each scores, its CSV column, its weights.

    built, unavailable = build_metrics(["psnr", "ssim", "lpips"], device, weights_dir, protocol="flavr")

`build_metrics` returns a streaming scorer (metrics.py) for every metric it could build and a reason
for each one it could not (weights missing offline, a corrupt file named); a metric the protocol
does not define is refused. Each built metric says how its pretrained files were checked.
"""
from dataclasses import dataclass, field

import flow
import protocols
import vfips
import weights
from fvd import load_i3d
from lpips_parts import load_lpips
from metrics import FloLPIPSPairs, FrameMean, FVDClips, VFIPSWindows, protocol_psnr, protocol_ssim
from utils import ASVFIError

@dataclass
class Metric:
    """A metric evaluate.py can run.

    scope: "generated" (averaged over generated frames), "sequence" (the whole video) or "set"
    (FVD: per-video clip features, one number for the whole set). `scorer()` makes a fresh
    streaming accumulator for one video; `column` is its CSV column; `about` says what was used.
    """
    name: str
    scope: str
    scorer: object
    column: str
    about: str = ""
    info: dict = field(default_factory=dict)


METRIC_NAMES = ("psnr", "ssim", "lpips", "flolpips", "vfips", "fvd")
FRAME_METRICS = ("psnr", "ssim", "lpips")  # the ones an image test set (one target per sample) can have
FLOW_NAMES = {"pwc": "PWC-Net", "dis": "OpenCV DIS"}
# The pretrained files (weights.py registry names) behind each learned metric, for the report's
# statement of how sure we are that they are the authors' files.
METRIC_WEIGHTS = {"lpips": ("alexnet", "lpips_alex"), "vfips": ("vfips",), "fvd": ("i3d",)}
FLOW_WEIGHTS = {"pwc": ("pwcnet",), "dis": ()}


def metric_files(name, flow_name="pwc"):
    """The registered weight files a metric needs (FloLPIPS: LPIPS's and its flow estimator's)."""
    return METRIC_WEIGHTS["lpips"] + FLOW_WEIGHTS[flow_name] if name == "flolpips" else METRIC_WEIGHTS.get(name, ())


def weights_provenance(name, flow_name="pwc"):
    """'alexnet: sha256-prefix, lpips_alex: sha256' for a metric's files ('' when it has none)."""
    return ", ".join(f"{file}: {weights.verification(file)}" for file in metric_files(name, flow_name))


def unavailable_reason(error, files, weights_dir):
    """The error, and the metric's other files that are not on disk either, so that one trip fetches all."""
    others = [weights.REGISTRY[f] for f in files
              if weights.REGISTRY[f].filename not in str(error) and not weights.on_disk(f, weights_dir)]
    return "; ".join([str(error)] + [f"it also needs {spec.filename} ({spec.about}) from {spec.url}" for spec in others])


def metric_column(name, flow_name="pwc"):
    """CSV column of a metric. FloLPIPS with DIS flow gets its own column so that it never mixes
    with PWC-Net FloLPIPS; FVD is set-level, so a video's row holds its number of clips."""
    if name == "flolpips" and flow_name == "dis":
        return "flolpips_dis"
    return "fvd_clips" if name == "fvd" else name


@dataclass(frozen=True)
class MetricSource:
    """Where the metrics' networks come from and which protocol they follow."""
    device: object = None
    weights_dir: object = None
    allow_download: bool = True
    flow_name: str = "pwc"
    protocol: object = "asvfi"


def _build_one(name, source, shared):
    def lpips_net():
        if "lpips" not in shared:
            shared["lpips"] = load_lpips(source.weights_dir, source.allow_download, source.device)
        return shared["lpips"]

    protocol = protocols.get_protocol(source.protocol)
    column = metric_column(name, source.flow_name)
    if name == "psnr":
        fn = protocol_psnr(protocol)
        return Metric(name, "generated", lambda: FrameMean(lambda ref, pred: fn(pred, ref)), column,
                      "dB, higher is better")
    if name == "ssim":
        fn = protocol_ssim(protocol)
        return Metric(name, "generated", lambda: FrameMean(lambda ref, pred: fn(pred, ref)), column,
                      f"{protocol.ssim} SSIM, higher is better")
    if name == "lpips":
        net = lpips_net()
        return Metric(name, "generated", lambda: FrameMean(net), column, "v0.1 AlexNet, lower is better")
    if name == "flolpips":
        net = lpips_net()
        flow_fn = flow.build_flow_estimator(source.flow_name, weights_dir=source.weights_dir,
                                            allow_download=source.allow_download, device=source.device)
        return Metric(name, "sequence", lambda: FloLPIPSPairs(net, flow_fn, protocol=protocol), column,
                      f"{FLOW_NAMES[source.flow_name]} flow, lower is better", {"flow": source.flow_name})
    if name == "vfips":
        net = vfips.load_vfips(weights_dir=source.weights_dir, allow_download=source.allow_download,
                               device=source.device)
        return Metric(name, "sequence", lambda: VFIPSWindows(net, protocol), column,
                      "multiscale_v33, 12-frame windows, lower is better (can be negative)")
    if name == "fvd":
        detector = load_i3d(source.weights_dir, source.allow_download, source.device)
        return Metric(name, "set", lambda: FVDClips(detector, detector_input=protocol.fvd_detector_input), column,
                      f"I3D, {protocols.FVD_CLIP_FRAMES}-frame clips, lower is better")
    raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRIC_NAMES)}")


def build_metrics(names, device=None, weights_dir=None, allow_download=True, flow_name="pwc", protocol="asvfi"):
    """Build the requested metrics: ({name: Metric}, {name: reason it is unavailable}).

    Missing or corrupt weights (any project error of weights/checkpoint loading, whose message
    names the file) make that metric unavailable with the reason; the others are still built.
    Unknown names or flows, or a metric the protocol does not define, raise at once.
    """
    protocol = protocols.get_protocol(protocol)
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown or flow_name not in FLOW_NAMES:
        raise ValueError(f"unknown metric(s) {unknown} or flow {flow_name!r}; metrics: "
                         f"{', '.join(METRIC_NAMES)}; flows: {', '.join(FLOW_NAMES)}")
    refused = [n for n in names if not protocol.covers(n)]
    if refused:
        raise ASVFIError(f"protocol {protocol.name!r} does not define {', '.join(refused)} (it reproduces "
                         f"{', '.join(protocol.metrics)} of {protocol.reproduces.split(':')[0]}); drop them "
                         f"from --metrics or use --protocol asvfi")
    source = MetricSource(device, weights_dir, allow_download, flow_name, protocol)
    built, unavailable, shared = {}, {}, {}
    for name in names:
        try:
            built[name] = _build_one(name, source, shared)
            provenance = weights_provenance(name, flow_name)
            if provenance:
                built[name].info["weights"] = provenance
        except ASVFIError as err:
            unavailable[name] = unavailable_reason(err, metric_files(name, flow_name), weights_dir)
    return built, unavailable
