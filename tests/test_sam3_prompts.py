"""Every prompt of every SAM3 class file fits SAM3's text length (32 tokens with the start and end tokens), by the
CLIP BPE tokenizer the segmentor uses offline (open_clip's copy of the vocabulary SAM3's checkpoint ships; tests/
test_sam3_parity.py checks it gives the reference tokenizer's ids); and the ADE-847 and Context-459 files split
synonyms into prompts and joined words into words. (tests/test_sam3_scores.py checks the rules all SAM3 files
share: one line per class in the benchmark's order, unique lowercase prompts.)"""
from __future__ import annotations

import pytest
from open_clip.tokenizer import SimpleTokenizer

from fsa_seg.class_names import CLASS_NAME_DIR, list_class_name_files, load_class_names, parse_class_names
from fsa_seg.sam3.loading import TEXT_LENGTH, build_tokenizer

SAM3_FILES = [name for name in list_class_name_files() if name.startswith("sam3_")]


@pytest.fixture(scope="module")
def bpe() -> SimpleTokenizer:
    return SimpleTokenizer(context_length=TEXT_LENGTH)


def too_long(words, bpe) -> list:
    """The prompts whose tokens, with the start and end tokens, exceed SAM3's text length (they would be cut)."""
    return [w for w in words if len(bpe.encode(w)) + 2 > TEXT_LENGTH]


def test_every_benchmark_has_a_sam3_file():
    assert sorted(SAM3_FILES) == sorted(f"sam3_{name}" for name in (
        "voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff", "cityscapes", "ade20k", "ade847",
        "context459"))


@pytest.mark.parametrize("name", SAM3_FILES)
def test_every_prompt_fits_the_text_length(name, bpe):
    words, _ = load_class_names(name)
    assert not too_long(words, bpe), too_long(words, bpe)
    # the segmentor's tokenizer (random weights or a checkpoint without tokenizer files): whole prompts, each
    # ending in the end token
    ids, mask = build_tokenizer(None, True)(words)
    lengths = mask.sum(dim=1)
    assert lengths.tolist() == [len(bpe.encode(w)) + 2 for w in words]
    assert (ids[range(len(words)), lengths - 1] == bpe.eot_token_id).all()


def test_the_length_check_has_the_right_boundary(bpe):
    # ADE-847's CLIP-style file holds comma-separated synonym lists as one query; its longest reaches the limit
    words, _ = load_class_names("ade847")
    longest = max(words, key=lambda w: len(bpe.encode(w)))
    assert len(bpe.encode(longest)) + 2 == TEXT_LENGTH and not too_long([longest], bpe)
    # one more word is cut by the segmentor's tokenizer, and the check says so
    longer = longest + ", bin"
    assert too_long([longer], bpe) == [longer]
    _, mask = build_tokenizer(None, True)([longer])
    assert int(mask.sum()) == TEXT_LENGTH < len(bpe.encode(longer)) + 2


@pytest.mark.parametrize("benchmark", ["ade847", "context459"])
def test_synonyms_are_separate_prompts_and_words_are_not_joined(benchmark):
    words, classes = parse_class_names((CLASS_NAME_DIR / f"sam3_{benchmark}.txt").read_text(), benchmark)
    source, _ = load_class_names(benchmark)
    assert not any("," in w or "-" in w for w in words)
    for joined in ("pottedplant", "tvmonitor", "diningtable", "crabstick", "wineglass", "hydrovalve"):
        assert joined not in words
    if benchmark == "ade847":
        # "building, edifice": two prompts of class 1; "person, individual, ...": the first stays the first
        assert [w for w, c in zip(words, classes) if c == 1] == ["building", "edifice"]
        assert words[classes.index(source.index("person, individual, someone, somebody, mortal, soul"))] == "person"
        assert len(words) > len(source)
    else:
        assert "potted plant" in words and "tv monitor" in words and len(words) == len(source)
