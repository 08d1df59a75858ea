"""Prepare Cityscapes (Cordts et al., CVPR 2016) for the ``cityscapes`` config.

    python tools/dataset_converters/cityscapes.py --help

The converter is ``fsa_seg.converters.cityscapes`` (this file is its command line).
"""
from fsa_seg.converters.cityscapes import main

if __name__ == "__main__":
    main()
