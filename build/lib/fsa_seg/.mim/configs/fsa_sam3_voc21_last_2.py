# Ablation (SAM3 + FSA, VOC21): the ensemble in the self-attention of the last two DETR-encoder layers.
# Any benchmark: --cfg-options model.fsa_placement=last_k model.fsa_layers=2
_base_ = ['./fsa_sam3_voc21.py']

model = dict(fsa_placement='last_k', fsa_layers=2)
