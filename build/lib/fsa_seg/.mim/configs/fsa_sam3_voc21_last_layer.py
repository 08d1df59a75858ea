# Ablation (SAM3 + FSA, VOC21): the ensemble in the self-attention of the last DETR-encoder layer instead of
# on the encoder output. Any benchmark: --cfg-options model.fsa_placement=last_layer
_base_ = ['./fsa_sam3_voc21.py']

model = dict(fsa_placement='last_layer')
