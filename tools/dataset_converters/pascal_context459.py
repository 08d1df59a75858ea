"""Prepare PASCAL-Context with its 459 labels (Mottaghi et al., CVPR 2014) for the ``context459`` config.

    python tools/dataset_converters/pascal_context459.py --help

The converter is ``fsa_seg.converters.pascal_context459`` (this file is its command line).
"""
from fsa_seg.converters.pascal_context459 import main

if __name__ == "__main__":
    main()
