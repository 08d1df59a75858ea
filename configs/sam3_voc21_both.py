# Ablation (SAM3, VOC21): mean of the semantic-head and instance maps (both_reduce='max' for their max).
# Any benchmark: --cfg-options model.score_source=both model.both_reduce=mean
_base_ = ['./sam3_voc21.py']

model = dict(score_source='both', both_reduce='mean')
