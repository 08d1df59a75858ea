"""SAM3 (transformers ``Sam3Model``) as a training-free open-vocabulary segmentation model, with FSA.

Plain torch and transformers; the mmseg segmentor ``SAM3Segmentor`` lives in ``fsa_seg.plugin``.
"""
from .feedback import LogOddsFeedback, log_odds_feedback_attention  # noqa: F401
from .loading import build_sam3, tiny_sam3_config  # noqa: F401
from .model import SAM3SegModel  # noqa: F401
from .scores import ScoreRecipe  # noqa: F401

__all__ = ["SAM3SegModel", "LogOddsFeedback", "log_odds_feedback_attention", "ScoreRecipe", "build_sam3",
           "tiny_sam3_config"]
