# Ablation (SAM3 + FSA, VOC21): no presence-based pruning; every prompt enters the feedback distributions.
# Any benchmark: --cfg-options model.presence_pruning=False
_base_ = ['./fsa_sam3_voc21.py']

model = dict(presence_pruning=False)
