"""fsa-seg: Feedback-driven Self-adaptive Attention (ICCV 2025) for training-free open-vocabulary
segmentation, as an MMSegmentation plugin.

Importing the package loads nothing heavy. The pieces, by what they need:

* plain torch (+ open_clip, timm, segment-anything): :mod:`fsa_seg.fsa` (the FSA core),
  :mod:`fsa_seg.last_block`, :mod:`fsa_seg.clip_backbone`, :mod:`fsa_seg.vfm`, :mod:`fsa_seg.clip_model`,
  :mod:`fsa_seg.perf` and :mod:`fsa_seg.perf.gpu_check` (the prepared GPU check);
* + transformers: :mod:`fsa_seg.sam3`;
* + mmseg/mmcv: :mod:`fsa_seg.plugin` (the registered segmentors, datasets and metric that configs import)
  and :mod:`fsa_seg.apis` (initialise a segmentor from a config, segment an image, evaluate, sweep).
"""
__version__ = "0.1.0"
