# COCO-Object val2017 (5000 images): background + 80 things, masks from
# tools/dataset_converters/coco_object.py (<id>_instanceTrainIds.png).
# The dataset only: the model and the per-benchmark model keys come from a model base and a protocol
# base (configs/_base_/models/, configs/_base_/protocols/), composed by each config.
dataset_type = 'COCOObjectDataset'
# Relative to the working directory (the repository root): see data/README.md, or override
# with --cfg-options test_dataloader.dataset.data_root=/path/to/coco_object
data_root = 'data/coco_object'

test_pipeline = [
    # color_type='color' decodes grayscale, palette and RGBA images as 3-channel BGR.
    dict(type='LoadImageFromFile', color_type='color'),
    # Short side to 336 (long side at most 2048), aspect ratio kept: the released FSA protocol's resize.
    dict(type='Resize', scale=(2048, 336), keep_ratio=True),
    # After Resize, so the ground truth keeps its original size for evaluation.
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        reduce_zero_label=False,
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
        pipeline=test_pipeline,
    ),
)
test_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
