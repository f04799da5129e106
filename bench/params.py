"""Trainable parameter counts of the default models.

    python tools.py params                   # PerVFI (without its frozen flow estimator) and ASVFI
    python tools.py params --models pervfi   # one model only

The published PerVFI has about 8.7M parameters without its flow estimator.
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import registry  # noqa: E402

TRAINED = ("pervfi", "asvfi")


def count_trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_lines(name):
    """Total and per-top-level-module trainable parameters of a model's default config."""
    network = registry.build_model(registry.default_config(name))
    lines = [f"{name} (default config): {count_trainable(network):,} trainable parameters"]
    for child_name, child in network.named_children():
        lines.append(f"  {child_name:<16} {count_trainable(child):>12,}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tools.py params", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=TRAINED, default=list(TRAINED))
    args = parser.parse_args(argv)
    for name in args.models:
        print("\n".join(parameter_lines(name)))
    return 0
