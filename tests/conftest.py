"""Shared fixtures: a small demo data set made once per test session, deterministic seeds."""
import random
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import prepare

# Small but complete: 2 categories x 4 groups x 1 clip, 48 frames at the real 320x240 / 25 fps.
# Groups g01 → test, g04 → val, g02-g03 → train (prepare.assign_splits), so every split has videos.
DEMO_TEST_SIZE = dict(categories=["PulsingDisc", "BouncingBall"], groups=4, clips=1, frames=48, size=(320, 240))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests run many small ops: on a 2-core CI machine extra intra-op threads cost more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same RNG state, whatever ran before it."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """Data root holding a small demo set: `--dataset demo --data-root <demo_root>` works on it."""
    root = tmp_path_factory.mktemp("demo_data")
    prepare.build_demo(root, seed=0, show_progress=False, **DEMO_TEST_SIZE)
    return root


@pytest.fixture
def one_test_video_root(demo_root, tmp_path):
    """A private copy of the demo data with only its first test video in the split."""
    shutil.copytree(demo_root / "demo", tmp_path / "demo")
    table = pd.read_csv(demo_root / "demo_split.csv")
    first_test = table.index[table["split"] == "test"][0]
    table[(table["split"] != "test") | (table.index == first_test)].to_csv(tmp_path / "demo_split.csv", index=False)
    return tmp_path
