# Ablation (SAM3 + FSA, VOC21): no isolation; the image-global response is not subtracted from the feedback.
# Any benchmark: --cfg-options model.isolation=False
_base_ = ['./fsa_sam3_voc21.py']

model = dict(isolation=False)
