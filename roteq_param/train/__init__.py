"""Offline training: the dataset in memory (data), skill metrics (metrics), the loop (loop)."""

from roteq_param.train.data import QGData, field_scales, load_dataset, pv_forcing
from roteq_param.train.loop import CHECKPOINT, METRICS_CSV, TrainOptions, offline_losses, s_scales, train
from roteq_param.train.metrics import evaluate, r2_scores

__all__ = ["QGData", "load_dataset", "field_scales", "pv_forcing", "TrainOptions", "train", "offline_losses",
           "s_scales", "r2_scores", "evaluate", "CHECKPOINT", "METRICS_CSV"]
