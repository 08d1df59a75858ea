"""Prepare PASCAL-Context (Mottaghi et al., CVPR 2014) for the ``context60``/``context59`` configs.

    python tools/dataset_converters/pascal_context.py --help

The converter is ``fsa_seg.converters.pascal_context`` (this file is its command line).
"""
from fsa_seg.converters.pascal_context import main

if __name__ == "__main__":
    main()
