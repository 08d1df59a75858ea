"""Check PASCAL VOC 2012 (Everingham et al., IJCV 2010) for the ``voc21``/``voc20`` configs.

    python tools/dataset_converters/voc.py --help

The converter is ``fsa_seg.converters.voc`` (this file is its command line).
"""
from fsa_seg.converters.voc import main

if __name__ == "__main__":
    main()
