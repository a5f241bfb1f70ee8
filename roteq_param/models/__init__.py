from roteq_param.models.net import *  # noqa: F401,F403  (temporary during the split)
from roteq_param.models.net import __all__  # noqa: F401
