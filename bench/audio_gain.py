"""How soon does the audio branch learn? Gradient reaching it in the first steps, per fusion init.

    python tools.py audio_gain --data-root ../data_tiny           # the 64x48 demo, full frames
    python tools.py audio_gain --data-root ../data --crop 96      # the 320x240 demo, 96-px crops

A fresh small ASVFI (width 0.125, seed 12345) takes the same demo training batches under each
scheme: zero output projections (`--fusion-init zero_out`), zero gates at the same learning rate,
and zero gates at 10x the learning rate (`--gate-lr-mult 10`, the default). After each AdamW
step the table reports the gradient norm reaching the audio branch *upstream* of its gates and
output projections (encoder, queries, keys, values, time slopes, norms, the no-audio token): the
part that must learn to read the sound. It is zero for a fresh model under every scheme.
"""
import argparse
import sys

import torch
from torch.utils.data import DataLoader

import losses
import main as train_entry
import optimisation
import runtime
import train

SCHEMES = (("zero_out", 1.0, "zero output projections"), ("zero_gate", 1.0, "zero gates"),
           ("zero_gate", 10.0, "zero gates, --gate-lr-mult 10 (default)"))


def parse_args(argv):
    p = argparse.ArgumentParser(prog="tools.py audio_gain", description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../data")
    p.add_argument("--crop", type=int, default=0, help="random training crop; 0 = full frames")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", default="2e-3")
    p.add_argument("--steps", type=int, default=5)
    return p.parse_args(argv)


def training_args(args, fusion_init, gate_lr_mult):
    return train_entry.parse_args([
        "--dataset", "demo", "--data-root", args.data_root, "--width", "0.125", "--crop", str(args.crop),
        "--batch-size", str(args.batch_size), "--lr", args.lr, "--fusion-init", fusion_init,
        "--gate-lr-mult", str(gate_lr_mult), "--windows-per-video", "8", "--workers", "0"])


def is_upstream(name):
    """Audio-branch parameters that learn only through the gates and output projections."""
    return not (name.endswith(".gate") or ".out." in name)


def upstream_gradient_norms(targs, steps):
    """Upstream audio gradient norm after 0, 1, ..., steps AdamW updates of a fresh model."""
    train.seed_everything(targs.random_seed)
    network = train.build_network(targs, train.model_config(targs), torch.device("cpu"))
    optimizer = optimisation.build_optimizer(targs, network)
    criterion = losses.build_criterion(targs.loss)
    train_set, _ = train.build_datasets(targs, runtime.Processes())
    batches = iter(DataLoader(train_set, batch_size=targs.batch_size, shuffle=False))
    norms = []
    for _ in range(steps + 1):
        batch = train.to_device(next(batches), torch.device("cpu"))
        loss, _ = criterion(train.predict(network, batch, None, torch.device("cpu")), batch["targets"])
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        grads = [p.grad.flatten() for n, p in network.audio.named_parameters() if is_upstream(n)]
        norms.append(float(torch.cat(grads).norm()))
        optimizer.step()
    return norms


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    rows = [(label, upstream_gradient_norms(training_args(args, init, mult), args.steps))
            for init, mult, label in SCHEMES]
    header = "| scheme | " + " | ".join(f"after {k}" for k in range(args.steps + 1)) + " |"
    lines = [header, "|---|" + "---:|" * (args.steps + 1)]
    lines += [f"| {label} | " + " | ".join(f"{v:.2e}" for v in norms) + " |" for label, norms in rows]
    print("Gradient norm reaching the audio branch upstream of its gates / output projections, "
          "after N AdamW steps of a fresh model:\n" + "\n".join(lines))
    return 0

