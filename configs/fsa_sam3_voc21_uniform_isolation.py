# Ablation (SAM3 + FSA, VOC21): isolation by the placement run with uniform attention (the default) at the feedback
# scale (1:1, feedback_scale=1.0) instead of the released ratio (35:20, isolation_scale=1.75).
# Any benchmark: --cfg-options model.isolation=uniform model.isolation_scale=1.0
_base_ = ['./fsa_sam3_voc21.py']

model = dict(isolation='uniform', isolation_scale=1.0)
