"""Prepare COCO-Object (GroupViT/TCL protocol, used by FSA) from COCO-Stuff164k.

    python tools/dataset_converters/coco_object.py --help

The converter is ``fsa_seg.converters.coco_object`` (this file is its command line).
"""
from fsa_seg.converters.coco_object import main

if __name__ == "__main__":
    main()
