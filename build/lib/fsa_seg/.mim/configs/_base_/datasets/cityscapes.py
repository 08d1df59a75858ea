# Cityscapes val (500 images), 19 classes, masks from
# tools/dataset_converters/cityscapes.py (*_gtFine_labelTrainIds.png).
# The dataset only: the model and the per-benchmark model keys come from a model base and a protocol
# base (configs/_base_/models/, configs/_base_/protocols/), composed by each config.
dataset_type = 'CityscapesDataset'
# Relative to the working directory (the repository root): see data/README.md, or override
# with --cfg-options test_dataloader.dataset.data_root=/path/to/cityscapes
data_root = 'data/cityscapes'

test_pipeline = [
    # color_type='color' decodes grayscale, palette and RGBA images as 3-channel BGR.
    dict(type='LoadImageFromFile', color_type='color'),
    # Short side to 448 (long side at most 2048), aspect ratio kept: the released FSA protocol's resize.
    dict(type='Resize', scale=(2048, 448), keep_ratio=True),
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
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline,
    ),
)
test_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
