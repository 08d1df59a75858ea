"""Figures of what FSA does, and their numbers.

* :mod:`.drawing` - class palette, colour blends, panels, legends, attention heat maps and the banner every figure
  made with random weights carries (:data:`~.drawing.BANNER_TEXT`);
* :mod:`.output` - writing figures (PNG and PDF), their numbers (CSV and JSON) and label maps (palette PNGs);
  :func:`~.output.random_weights_used`;
* :mod:`.compare` - base vs base + FSA on one image from one backbone pass (``tools/demo.py --compare``);
* :mod:`.show_dir` - the ``tools/test.py --show-dir`` hook (imports mmseg; import it explicitly);
* :mod:`.analysis` - dataset and folder figures (``tools/analyze.py``);
* :mod:`.explorer` - the explorer page (``tools/explore.py``; Gradio, an optional extra, imported only when the
  page is built).

Figures use matplotlib's Agg canvas (no display needed).
"""
from .compare import BASE_VS_FSA, Comparison, compare_image, comparison_figure, segment_variants, write_comparison
from .drawing import BANNER_RGB, BANNER_TEXT, palette
from .output import random_weights_used, save_figure, save_labels, write_table

__all__ = ["BANNER_RGB", "BANNER_TEXT", "BASE_VS_FSA", "Comparison", "compare_image", "comparison_figure",
           "palette", "random_weights_used", "save_figure", "save_labels", "segment_variants", "write_comparison",
           "write_table"]
