"""Class-name files: builtin sets, parsing semantics and every error path."""
from pathlib import Path

import pytest

from fsa_seg.class_names import (CLASS_NAME_DIR, CLASS_NAME_SOURCES, list_class_name_files,
                                 load_class_names, num_classes, parse_class_names)

EXPECTED_CLASSES = {
    'voc21': 21, 'voc20': 20, 'context60': 60, 'context59': 59, 'coco_object': 81,
    'coco_stuff': 171, 'cityscapes': 19, 'ade20k': 150, 'ade847': 847, 'context459': 459,
    'sclip_voc21': 21, 'sclip_voc20': 20, 'sclip_coco_object': 81,
    'naclip_voc21': 21, 'naclip_voc20': 20, 'naclip_coco_object': 81,
    'clearclip_voc21': 21, 'clearclip_coco_object': 81,
}
# Number of text queries (synonyms) per file, as the released loaders split them.
EXPECTED_QUERIES = {
    'voc21': 46, 'voc20': 20, 'coco_object': 97, 'ade847': 847, 'context459': 459,
    'sclip_voc21': 56, 'sclip_voc20': 30, 'sclip_coco_object': 113,
    'naclip_voc21': 56, 'naclip_voc20': 30, 'naclip_coco_object': 113,
    'clearclip_voc21': 21, 'clearclip_coco_object': 81,
}
PERSON = ['person', 'person in shirt', 'person in jeans', 'person in dress', 'person in sweater',
          'person in skirt', 'person in jacket']
TVMONITOR = ['television monitor', 'tv monitor', 'monitor', 'television', 'screen']


# SAM3's own prompts for the ten benchmarks (tests/test_sam3_scores.py checks their rules).
SAM3_SETS = {f'sam3_{name}': EXPECTED_CLASSES[name] for name in
             ('voc21', 'voc20', 'context60', 'context59', 'coco_object', 'coco_stuff', 'cityscapes', 'ade20k',
              'ade847', 'context459')}


def test_builtin_sets_are_listed():
    assert list_class_name_files() == sorted({**EXPECTED_CLASSES, **SAM3_SETS})


@pytest.mark.parametrize('name', sorted({**EXPECTED_CLASSES, **SAM3_SETS}))
def test_builtin_class_counts(name):
    words, idx = load_class_names(name)
    expected = {**EXPECTED_CLASSES, **SAM3_SETS}[name]
    assert max(idx) + 1 == expected == num_classes(name)
    assert idx == sorted(idx) and set(idx) == set(range(expected))
    assert all(w and w == w.strip() for w in words)


@pytest.mark.parametrize('name', sorted(EXPECTED_CLASSES))
def test_same_words_as_released_splitting(name):
    # The released loader: readlines(), split('; '), drop '\n' (no strip).
    text = (CLASS_NAME_DIR / f'{name}.txt').read_text(encoding='utf-8')
    released_words, released_idx = [], []
    for i, line in enumerate(text.splitlines(keepends=True)):
        parts = [p.replace('\n', '') for p in line.split('; ')]
        released_words += parts
        released_idx += [i] * len(parts)
    assert load_class_names(name) == (released_words, released_idx)


def test_voc21_background_synonyms():
    words, idx = load_class_names('voc21')
    background = [w for w, i in zip(words, idx) if i == 0]
    assert background[:3] == ['sky', 'wall', 'tree'] and len(background) == 26
    assert words[26:28] == ['aeroplane', 'bicycle'] and idx[26:28] == [1, 2]
    assert words[-1] == 'tvmonitor' and idx[-1] == 20


def test_coco_object_background_line():
    words, idx = load_class_names('coco_object')
    assert idx.count(0) == 17 and words[17] == 'person' and idx[17] == 1
    assert words[-1] == 'toothbrush' and idx[-1] == 80


def test_file_path_and_synonyms(tmp_path):
    path = tmp_path / 'mine.txt'
    path.write_text('cat; kitty\ndog\n', encoding='utf-8')
    assert load_class_names(path) == (['cat', 'kitty', 'dog'], [0, 0, 1])
    assert load_class_names(str(path)) == (['cat', 'kitty', 'dog'], [0, 0, 1])


def test_semicolon_without_space_and_whitespace_are_stripped():
    assert parse_class_names('  cat ;kitty\t\n dog  ') == (['cat', 'kitty', 'dog'], [0, 0, 1])


def test_windows_line_endings_bom_and_trailing_blank_lines(tmp_path):
    path = tmp_path / 'win.txt'
    path.write_bytes('\ufeffcat; kitty\r\ndog\r\n\r\n'.encode('utf-8'))
    assert load_class_names(path) == (['cat', 'kitty', 'dog'], [0, 0, 1])


def test_path_with_separator_is_not_a_builtin(tmp_path):
    path = tmp_path / 'voc21'  # same stem as a builtin, but a path
    path.write_text('a\nb\n', encoding='utf-8')
    assert load_class_names(str(path)) == (['a', 'b'], [0, 1])


def test_missing_file_lists_builtins(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_class_names(tmp_path / 'nope.txt')
    message = str(err.value)
    assert 'nope.txt' in message and 'voc21' in message and 'ade20k' in message
    with pytest.raises(FileNotFoundError, match='builtin name'):
        load_class_names('voc22')


@pytest.mark.parametrize('content', ['', '\n', '  \n\n \r\n'])
def test_empty_file(tmp_path, content):
    path = tmp_path / 'empty.txt'
    path.write_text(content, encoding='utf-8')
    with pytest.raises(ValueError, match='no classes'):
        load_class_names(path)


@pytest.mark.parametrize('content, line, what', [
    ('cat\n\ndog\n', 2, 'empty line'),
    ('cat\n   \ndog', 2, 'empty line'),
    ('cat; ; dog\n', 1, 'empty synonym'),
    ('cat\ndog;\n', 2, 'empty synonym'),
    ('; cat\n', 1, 'empty synonym'),
    ('cat;;dog\n', 1, 'empty synonym'),
])
def test_empty_line_or_synonym(tmp_path, content, line, what):
    path = tmp_path / 'bad.txt'
    path.write_text(content, encoding='utf-8')
    with pytest.raises(ValueError, match=f'line {line}: {what}') as err:
        load_class_names(path)
    assert str(path) in str(err.value)


def test_non_utf8(tmp_path):
    path = tmp_path / 'latin1.txt'
    path.write_bytes('caf\xe9\ndog\n'.encode('latin-1'))
    with pytest.raises(ValueError, match='not valid UTF-8'):
        load_class_names(path)


def test_packaged_files_end_with_newline_and_no_trailing_spaces():
    for path in Path(CLASS_NAME_DIR).glob('*.txt'):
        text = path.read_text(encoding='utf-8')
        assert text.endswith('\n') and not text.endswith('\n\n'), path.name
        assert all(line == line.rstrip() for line in text.splitlines()), path.name


def _classes(name):
    """Class index -> its list of queries."""
    words, idx = load_class_names(name)
    out = {}
    for w, i in zip(words, idx):
        out.setdefault(i, []).append(w)
    return out


def test_every_packaged_file_names_its_source():
    assert sorted(CLASS_NAME_SOURCES) == list_class_name_files()
    for name, source in CLASS_NAME_SOURCES.items():
        if name.startswith('sam3_'):  # the package's own prompts, derived from FSA's file of the benchmark
            assert source.startswith(f'fsa-seg, derived from {name[5:]}.txt'), name
            continue
        assert 'github.com/' in source and ' @ ' in source and 'configs/cls_' in source, name


@pytest.mark.parametrize('name', sorted(EXPECTED_QUERIES))
def test_query_counts(name):
    words, _ = load_class_names(name)
    assert len(words) == EXPECTED_QUERIES[name]


@pytest.mark.parametrize('method', ['sclip', 'naclip'])
def test_sclip_and_naclip_voc_files_differ_from_fsa_only_in_person_and_tvmonitor(method):
    for bench, person, tv in (('voc21', 15, 20), ('voc20', 14, 19)):
        ours, fsa = _classes(f'{method}_{bench}'), _classes(bench)
        assert ours[person] == PERSON and fsa[person] == ['person']
        assert ours[tv] == TVMONITOR and fsa[tv] == ['tvmonitor']
        assert {i for i in fsa if ours[i] != fsa[i]} == {person, tv}


@pytest.mark.parametrize('method', ['sclip', 'naclip'])
def test_sclip_and_naclip_coco_object_file(method):
    ours, fsa, voc = _classes(f'{method}_coco_object'), _classes('coco_object'), _classes('voc21')
    assert ours[1] == PERSON + ['body'] and fsa[1] == ['person']
    # Background: the 26 VOC background words instead of FSA's 17.
    assert ours[0] == voc[0] and len(ours[0]) == 26 and len(fsa[0]) == 17
    assert {i for i in fsa if ours[i] != fsa[i]} == {0, 1}


def test_clearclip_uses_a_single_background_query():
    for bench in ('voc21', 'coco_object'):
        ours, fsa = _classes(f'clearclip_{bench}'), _classes(bench)
        assert ours[0] == ['background'] and len(fsa[0]) > 1
        assert {i for i in fsa if ours[i] != fsa[i]} == {0}


def test_full_label_sets_are_one_query_per_class():
    words, idx = load_class_names('ade847')
    assert idx == list(range(847)) and words[:3] == ['wall', 'building, edifice', 'sky']
    assert words[-1] == 'adding machine, totalizer, totaliser'
    words, idx = load_class_names('context459')
    assert idx == list(range(459)) and words[:3] == ['accordion', 'aeroplane', 'air conditioner']
    assert words[-1] == 'wool'


def test_context459_order_is_the_label_order_of_context59():
    # PASCAL-Context's 459 label ids (1-based) of the 59 classes: line id - 1 of context459.txt is that class.
    from fsa_seg.converters.pascal_context import CONTEXT59_LABEL_IDS
    words, _ = load_class_names('context459')
    for name, label_id in CONTEXT59_LABEL_IDS.items():
        assert words[label_id - 1].replace(' ', '') == name, name
