# Ablation (SAM3 + FSA, VOC21): isolation by the log-odds of the placement run with uniform attention (paper
# Eq. 3 as literally as SAM3 allows; one more semantic-head pass per present prompt) instead of the token mean.
# Any benchmark: --cfg-options model.isolation=uniform
_base_ = ['./fsa_sam3_voc21.py']

model = dict(isolation='uniform')
