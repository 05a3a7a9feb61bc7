"""Host generation over any target's Session."""
from edgekit.runtime.generate import GenerationConfig, GenerationResult, generate, generate_text
from edgekit.runtime.session import EagerSession
from edgekit.runtime.think import ThinkSplitter

__all__ = ["EagerSession", "GenerationConfig", "GenerationResult", "ThinkSplitter", "generate", "generate_text"]
