"""Trainable parameter counts: the default models by top-level module, then the variants table.

The table is the one BENCHMARKS.md shows (the test suite checks that the two agree).

    python tools.py params                   # PerVFI (without its frozen flow estimator) and ASVFI
    python tools.py params --models pervfi   # one model only, and the table

The published PerVFI has about 8.7M parameters without its flow estimator.
"""
import argparse

import raft
import registry

TRAINED = ("pervfi", "asvfi")
VARIANTS = (  # (row label, model, config overrides)
    ("ASVFI 2x, unet_18, width 1.0, audio", "asvfi", {}),
    ("ASVFI 4x", "asvfi", {"scale": 4}),
    ("ASVFI 8x", "asvfi", {"scale": 8}),
    ("ASVFI 2x, unet_34", "asvfi", {"depth": "unet_34"}),
    ("ASVFI 2x, `--audio none` (FLAVR's network)", "asvfi", {"audio": "none"}),
    ("PerVFI default (without its flow estimator; published: about 8.7 M)", "pervfi", {}),
)
TABLE_HEADER = ("| model | trainable parameters |", "|---|---|")


def count_trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_lines(name):
    """Total and per-top-level-module trainable parameters of a model's default config."""
    network = registry.build_model(registry.default_config(name))
    lines = [f"{name} (default config): {count_trainable(network):,} trainable parameters"]
    for child_name, child in network.named_children():
        lines.append(f"  {child_name:<16} {count_trainable(child):>12,}")
    return lines


def variant_table():
    """The markdown table of BENCHMARKS.md: each variant's count, and RAFT (PerVFI's flow estimator)."""
    rows = [(label, count_trainable(registry.build_model(registry.default_config(name, **overrides))))
            for label, name, overrides in VARIANTS]
    rows.append(("RAFT (PerVFI's frozen flow estimator)", sum(p.numel() for p in raft.RAFT().parameters())))
    return [*TABLE_HEADER, *(f"| {label} | {count:,} |" for label, count in rows)]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tools.py params", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=TRAINED, default=list(TRAINED))
    args = parser.parse_args(argv)
    for name in args.models:
        print("\n".join(parameter_lines(name)))
    print("\n".join(["", *variant_table()]))
    return 0
