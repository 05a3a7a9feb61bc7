"""`edgekit` with the test-only fake target registered: python tests/bundle/edgekit_with_fake.py bundle ..."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import fake_target

fake_target.install()
from edgekit.cli import main

main()
