# SAM3 + FSA on PASCAL VOC 2012 val without background, 20 classes.
# The feedback attention from SAM3's own score maps is ensembled with the last DETR-encoder layer's
# self-attention; that layer and the heads are re-run (see README, "FSA on SAM3").
_base_ = ['./sam3_voc20.py']

model = dict(fsa=True, fsa_mode='attention')
