from setuptools import find_packages, setup

setup(
    name="fsa-seg",
    version="0.1.0",
    description="Feedback-driven Self-adaptive Attention (FSA, ICCV 2025) for training-free "
    "open-vocabulary segmentation, as an MMSegmentation plugin.",
    packages=find_packages(include=["fsa_seg", "fsa_seg.*"]),
    package_data={"fsa_seg": ["class_names/*.txt", "model_configs/*.json"]},
    python_requires=">=3.9",
)
