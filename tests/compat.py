"""Helpers for the compatibility fixtures in tests/fixtures (see its README).

Every fixture fills its network's state_dict by one recipe: entry i of the FULL key list gets
seed 1000 + i; >= 2-D tensors are randn / sqrt(fan-in), others 0.1 * randn. Fixtures with a
`fill_plan` add special cases: constants (not drawn), kept non-float buffers, abs() on LPIPS-style
lin weights, and aliases of another entry.
"""
import math
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_fixture(name):
    return torch.load(FIXTURES / name, weights_only=True)


def recipe_tensor(index, shape):
    generator = torch.Generator().manual_seed(1000 + index)
    shape = tuple(shape)
    if len(shape) >= 2:
        return torch.randn(shape, generator=generator, dtype=torch.float32) / math.sqrt(math.prod(shape[1:]))
    return 0.1 * torch.randn(shape, generator=generator, dtype=torch.float32)


def recipe_state(fixture, model=None, keys=None):
    """The state dict the fixture's recipe describes (`keys` overrides fixture["keys"], e.g. FLAVR's keys_2x)."""
    keys = fixture["keys"] if keys is None else keys
    plan = {name: mode for _, name, _, _, mode in fixture.get("fill_plan", [])}
    current = model.state_dict() if model is not None else {}
    filled = {}
    for index, (name, shape) in enumerate(keys):
        mode = plan.get(name, "randn_over_sqrt_fanin")
        if mode == "constant_skip":
            filled[name] = fixture["constants"][name]
        elif mode == "keep_nonfloat":
            filled[name] = current[name].clone()
        elif not mode.startswith("alias_of:"):
            value = recipe_tensor(index, shape)
            filled[name] = value.abs() if mode == "abs_randn_over_sqrt_fanin" else value
    for name, mode in plan.items():
        if mode.startswith("alias_of:"):
            filled[name] = filled[mode.split(":", 1)[1]]
    return {name: filled[name] for name, _ in keys}
