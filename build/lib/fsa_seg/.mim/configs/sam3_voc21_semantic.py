# Ablation (SAM3, VOC21): the semantic head alone (times presence) instead of SegEarth-OV-3's max of the semantic
# and instance maps. Any benchmark: --cfg-options model.score_source=semantic
_base_ = ['./sam3_voc21.py']

model = dict(score_source='semantic')
