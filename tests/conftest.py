
# Must run before anything imports torch: with torch's default (spinning) OpenMP
# threads, small flow steps on this 2-core CPU stall at random (~1.5 s, 2-100x
# slower); importing bgad_lite first sets a passive wait policy (bgad_lite.runtime).
import bgad_lite  # noqa: F401,E402


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """A small generated brick data set (64 px) for end-to-end runs (tests/test_pipeline.py's tiny_config)."""
    from bgad_lite.data.textures import make_texture_dataset

    root = tmp_path_factory.mktemp("data")
    make_texture_dataset(root, "brick", seed=3, n_train=8, n_test_good=4, n_per_type=3, size=64)
    return root
