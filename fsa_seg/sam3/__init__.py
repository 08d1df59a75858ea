"""SAM3 (transformers ``Sam3Model``) as a training-free open-vocabulary segmentor, with FSA feedback.

Importing this package registers ``SAM3Segmentor`` in mmseg's ``MODELS``.
"""
from .feedback import Sam3FeedbackParams, sam3_feedback_attention  # noqa: F401
from .loading import build_sam3, tiny_sam3_config  # noqa: F401
from .segmentor import SAM3Segmentor  # noqa: F401

__all__ = ["SAM3Segmentor", "Sam3FeedbackParams", "sam3_feedback_attention", "build_sam3", "tiny_sam3_config"]
