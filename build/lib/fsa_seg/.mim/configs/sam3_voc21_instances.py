# Ablation (SAM3, VOC21): the kept instances alone (max over instances of mask x score x presence, times
# presence) instead of their max with the semantic map. Any benchmark: --cfg-options model.score_source=instances
_base_ = ['./sam3_voc21.py']

model = dict(score_source='instances')
