"""Prepare COCO-Stuff164k (Caesar et al., CVPR 2018) for the ``coco_stuff164k`` config.

    python tools/dataset_converters/coco_stuff164k.py --help

The converter is ``fsa_seg.converters.coco_stuff164k`` (this file is its command line).
"""
from fsa_seg.converters.coco_stuff164k import main

if __name__ == "__main__":
    main()
