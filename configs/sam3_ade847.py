# SAM3 on ADE20K-847 (ADE20K-full) val, 847 classes (training-free OVSS; see README, "FSA on SAM3").
# FSA variant: configs/fsa_sam3_ade847.py.
# Local weights: --cfg-options model.checkpoint=/path/to/sam3 for a local folder.
_base_ = ['./_base_/datasets/ade847.py', './_base_/models/sam3.py']

custom_imports = _base_.sam3_custom_imports

# Replaces the dataset config's CLIP segmentor; keeps its class names.
model = dict(
    _base_.sam3_model,
    _delete_=True,
    name_path=_base_.model.name_path,
    # No background class: every pixel takes its most probable class.
    prob_thd=0.0,
)

test_pipeline = [_base_.sam3_resize if step.type == 'Resize' else step for step in _base_.test_pipeline]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
