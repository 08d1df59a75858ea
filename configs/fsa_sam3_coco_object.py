# SAM3 + FSA on COCO-Object val, 80 objects + background.
# The feedback attention from SAM3's own score maps is ensembled with the last DETR-encoder layer's
# self-attention; that layer and the heads are re-run (see README, "FSA on SAM3").
_base_ = ['./sam3_coco_object.py']

model = dict(fsa=True, fsa_mode='attention')
