from edgekit.model.config import ModelConfig
from edgekit.model.edge_model import EdgeModel
from edgekit.model.load import load

__all__ = ["EdgeModel", "ModelConfig", "load"]
