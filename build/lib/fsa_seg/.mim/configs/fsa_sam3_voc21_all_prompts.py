# Ablation (SAM3 + FSA, VOC21): every prompt counts as present (enters the feedback and is re-run), i.e. no
# presence-based pruning. Any benchmark: --cfg-options model.presence_thd=0.0
_base_ = ['./fsa_sam3_voc21.py']

model = dict(presence_thd=0.0)
