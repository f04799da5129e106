"""Trainable parameter counts of the default models.

    python tools.py params                   # PerVFI (without its frozen flow estimator) and ASVFI
    python tools.py params --models pervfi   # one model only

The published PerVFI has about 8.7M parameters without its flow estimator. ASVFI comes from
model.build_model(model.default_config()); if model.py is not ready the line says so.
"""
import argparse


def count_trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def pervfi_lines():
    import pervfi

    model = pervfi.build_pervfi(pervfi.default_pervfi_config())
    lines = [f"PerVFI (default config, without flow estimator): {count_trainable(model):,} trainable parameters"]
    for name, child in model.named_children():
        lines.append(f"  {name:<10} {count_trainable(child):>12,}")
    return lines


def asvfi_lines():
    try:
        import model as asvfi_model

        network = asvfi_model.build_model(asvfi_model.default_config())
    except (ImportError, AttributeError, NotImplementedError) as error:
        return [f"ASVFI: skipped, model.py is not ready ({type(error).__name__}: {error})"]
    return [f"ASVFI (default config): {count_trainable(network):,} trainable parameters"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tools.py params", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=["pervfi", "asvfi"], default=["pervfi", "asvfi"])
    args = parser.parse_args(argv)
    builders = {"pervfi": pervfi_lines, "asvfi": asvfi_lines}
    for name in args.models:
        print("\n".join(builders[name]()))
    return 0
