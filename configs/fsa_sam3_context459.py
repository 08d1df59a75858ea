# SAM3 + FSA on PASCAL-Context val with its 459 classes.
# The feedback attention from SAM3's own score maps is ensembled with the last DETR-encoder layer's
# self-attention; that layer and the heads are re-run (see README, "FSA on SAM3").
_base_ = ['./sam3_context459.py']

model = dict(fsa=True, fsa_mode='attention')
