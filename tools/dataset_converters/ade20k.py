"""Check ADE20K / ADEChallengeData2016 (Zhou et al., CVPR 2017) for the ``ade20k`` config.

    python tools/dataset_converters/ade20k.py --help

The converter is ``fsa_seg.converters.ade20k`` (this file is its command line).
"""
from fsa_seg.converters.ade20k import main

if __name__ == "__main__":
    main()
