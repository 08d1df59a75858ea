"""Class-name files: builtin sets, parsing semantics and every error path."""
from pathlib import Path

import pytest

from fsa_seg.class_names import (CLASS_NAME_DIR, list_class_name_files, load_class_names,
                                 num_classes, parse_class_names)

EXPECTED_CLASSES = {
    'voc21': 21, 'voc20': 20, 'context60': 60, 'context59': 59, 'coco_object': 81,
    'coco_stuff': 171, 'cityscapes': 19, 'ade20k': 150,
}


# SAM3's own prompts for the same benchmarks (tests/test_sam3_scores.py checks their rules).
SAM3_SETS = {f'sam3_{name}': count for name, count in EXPECTED_CLASSES.items()}


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
