"""A numpy evaluator of saved Core ML ML programs (Core ML itself cannot run on Linux)."""
