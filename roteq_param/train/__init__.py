from roteq_param.train.loop import *  # noqa: F401,F403  (temporary during the split)
from roteq_param.train.loop import __all__, CHECKPOINT, METRICS_CSV  # noqa: F401
