# Ablation (SAM3, VOC21): per-class maps from the instance masks (each weighted by its instance score, max over
# instances) instead of the semantic head. Any benchmark: --cfg-options model.score_source=instances
_base_ = ['./sam3_voc21.py']

model = dict(score_source='instances')
