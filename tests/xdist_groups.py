"""pytest plugin: the xdist scheduling for `make test` (registered by tests/conftest.py via pytest_plugins)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    ("coreml", {"coreml_export", "smollm2_coreml", "mil_function", "coreml_gemma3"}),
)
HEAVY_FIRST = ("et-smollm2", "tests/e2e/test_demo.py", "smollm2-bundles", "tests/executorch/test_et_gemma3.py",
               "tests/kernels/test_e2e_executorch.py",
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
