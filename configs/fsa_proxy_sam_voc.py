# FSA-ProxyCLIP, SAM ViT-B proxy, OpenAI ViT-B/16, Pascal VOC 21 (with background).
_base_ = ['./_base_/datasets/voc21.py']
model = dict(base_method='proxyclip', vfm='sam', fsa=True)
