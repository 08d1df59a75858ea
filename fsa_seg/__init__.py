"""fsa-seg: Feedback-driven Self-adaptive Attention (ICCV 2025) for training-free open-vocabulary
segmentation, as an MMSegmentation plugin. Importing the package registers its datasets and models."""
__version__ = "0.1.0"

from . import datasets, evaluation, sam3  # noqa: F401,E402  (registers datasets, metric, SAM3)
from .fsa import FeedbackSelfAdaptiveAttention, FSAParams, feedback_attention  # noqa: F401,E402
from .last_block import list_base_methods  # noqa: F401,E402
from .segmentor import FSAProxySegmentation, FSASegmentor  # noqa: F401,E402
from .vfm import list_vfms  # noqa: F401,E402
