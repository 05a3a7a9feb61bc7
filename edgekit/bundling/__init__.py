"""App-ready bundles: manifest schema, atomic writer, zip reader/writer, verifier, the Bundle class."""
from edgekit.bundling.build import bundle
from edgekit.bundling.manifest import MANIFEST, SCHEMA_V1, SCHEMA_VERSION, check_schema
from edgekit.bundling.reader import Bundle
from edgekit.bundling.verify import verify_folder

__all__ = ["MANIFEST", "SCHEMA_V1", "SCHEMA_VERSION", "Bundle", "bundle", "check_schema", "verify_folder"]
