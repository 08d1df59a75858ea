# SAM3 on Cityscapes val, 19 classes (training-free OVSS; see README, "FSA on SAM3").
# FSA variant: configs/fsa_sam3_cityscapes.py.
# Local weights: --cfg-options model.checkpoint=/path/to/sam3 for a local folder.
_base_ = ['./_base_/datasets/cityscapes.py', './_base_/models/sam3.py']

custom_imports = _base_.sam3_custom_imports

# Replaces the dataset config's CLIP segmentor; keeps its class names.
model = dict(
    _base_.sam3_model,
    _delete_=True,
    name_path=_base_.model.name_path,
    # No background class: every pixel takes its most probable class.
    prob_thd=0.0,
    # 2:1 images: sliding 1008 x 1008 windows (stride 504) over the 1008-pixel-high image
    # instead of squashing it into SAM3's square input.
    slide_crop=1008,
    slide_stride=504,
)

test_pipeline = [_base_.sam3_resize if step.type == 'Resize' else step for step in _base_.test_pipeline]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
