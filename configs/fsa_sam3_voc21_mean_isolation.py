# Ablation (SAM3 + FSA, VOC21): isolation by each present prompt's token mean of the log-odds at the feedback scale,
# an approximation of the default (the log-odds of the placement run with uniform attention, i.e. of the mean
# value, at the released 35:20 ratio) that needs no uniform-attention pass.
# Any benchmark: --cfg-options model.isolation=mean model.isolation_scale=1.0
_base_ = ['./fsa_sam3_voc21.py']

model = dict(isolation='mean', isolation_scale=1.0)
