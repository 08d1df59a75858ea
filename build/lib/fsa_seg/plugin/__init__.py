"""fsa-seg's MMSegmentation plugin: importing it registers the segmentors, the data preprocessor, the datasets
mmseg lacks, the metric, the resume wrapper, the test loop and the progress hook in mmseg's registries.

Configs import it with ``custom_imports = dict(imports=['fsa_seg.plugin'])`` (``configs/_base_/default_runtime.py``),
as mmseg's ``projects/`` do. The models themselves (``fsa_seg.clip_model``, ``fsa_seg.sam3``) need no mmseg.
"""
from . import datasets, evaluation, hooks, loop, resume, segmentors  # noqa: F401  (registration)
from .segmentors import FSAProxySegmentation, FSASegDataPreProcessor, FSASegmentor, SAM3Segmentor  # noqa: F401

__all__ = ["FSASegmentor", "FSAProxySegmentation", "SAM3Segmentor", "FSASegDataPreProcessor"]
