"""Prepare ADE20K-847 (ADE20K-full) validation for the ``ade847`` config.

    python tools/dataset_converters/ade847.py --help

The converter is ``fsa_seg.converters.ade847`` (this file is its command line).
"""
from fsa_seg.converters.ade847 import main

if __name__ == "__main__":
    main()
