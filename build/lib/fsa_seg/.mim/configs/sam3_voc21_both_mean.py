# Ablation (SAM3, VOC21): the mean of the semantic and instance maps instead of their max.
# Any benchmark: --cfg-options model.both_reduce=mean
_base_ = ['./sam3_voc21.py']

model = dict(both_reduce='mean')
