"""Flux networks: architecture (config), the network (net), resolution-aware scaling (similarity),
one grid spacing for the stencils on every grid (view), export to plain torch (export), storage with
model cards (store) and the one inference path (predictor)."""

from roteq_param.models.config import ModelConfig
from roteq_param.models.export import ExportedFluxNet, time_inference
from roteq_param.models.net import FluxNet, build_model
from roteq_param.models.predictor import Predictor
from roteq_param.models.store import (DEFAULT_MODEL, MODEL_FORMAT, TRAINED_MODELS_DIR, ModelFileError, derive_model,
                                      load_card, load_model, model_dir, save_model, sha256_file)

__all__ = ["ModelConfig", "FluxNet", "ExportedFluxNet", "Predictor", "ModelFileError", "build_model",
           "save_model", "load_model", "load_card", "model_dir", "TRAINED_MODELS_DIR", "DEFAULT_MODEL", "MODEL_FORMAT",
           "sha256_file", "time_inference", "derive_model"]
