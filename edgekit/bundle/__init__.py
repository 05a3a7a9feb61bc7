"""App-ready bundles: manifest schema, atomic writer, zip reader/writer, verifier, the Bundle class."""
from edgekit.bundle.build import bundle
from edgekit.bundle.manifest import MANIFEST, SCHEMA_V1, SCHEMA_VERSION, check_schema
from edgekit.bundle.reader import Bundle
from edgekit.bundle.verify import verify_folder

__all__ = ["MANIFEST", "SCHEMA_V1", "SCHEMA_VERSION", "Bundle", "bundle", "check_schema", "verify_folder"]


def _make_callable() -> None:
    """`edgekit.bundle(...)` is the function while `edgekit.bundle.Bundle` is this package: importing the
    subpackage rebinds the name `edgekit.bundle` to the module, so the module itself forwards calls."""
    import sys
    import types

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return bundle(*args, **kwargs)

    sys.modules[__name__].__class__ = _CallableModule


_make_callable()
