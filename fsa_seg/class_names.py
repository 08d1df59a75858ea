"""Class-name files: the text queries of training-free open-vocabulary segmentation.

Format (as released with FSA, ICCV 2025, and its base ProxyCLIP/SCLIP): one line per
class, in label-id order; a line may hold several synonyms separated by ``;`` (the
released files use ``'; '``). Every synonym becomes one text query, and the query's
score counts for the class of its line. VOC21 and COCO-Object put many background
synonyms (sky, wall, ...) on line 1 (class 0, background).

Builtin names (``voc21``, ``ade20k``, ...) resolve to the files packaged in
``fsa_seg/resources/class_names/``; anything else is read as a file path. Each packaged file is a
transcription of a released file, named in :data:`CLASS_NAME_SOURCES`: ``<benchmark>.txt``
are FSA's (and ProxyCLIP's), ``<method>_<benchmark>.txt`` a base method's own file where it
differs from FSA's (SCLIP's, NACLIP's and ClearCLIP's configs use them), ``sam3_<benchmark>.txt`` the
SAM3 prompts of this package. Their separators are
written as ``; `` here: SCLIP's and NACLIP's loaders split on ``', '`` and ClearCLIP's on
``','``, so their synonyms are the same words.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

from .resources import CLASS_NAME_DIR

# Released repositories at the commits the files were transcribed from (the files themselves are older).
_FSA = 'github.com/chi-chi-zx/FSA @ dbd2da587893850feb1a71c901afcd0d3886b6df'
_SCLIP = 'github.com/wangf3014/SCLIP @ b56bd3014b9e8a3ee3450bcfc53700a67d627b7a'
_NACLIP = 'github.com/sinahmr/NACLIP @ 0cac3a651f753b11315ea799cfbfabf79da1bd76'
_CLEARCLIP = 'github.com/mc-lan/ClearCLIP @ ad68a404d55d48d27330b93554eb64a234ff717f'
_SAME_AS_PROXYCLIP = ('; identical in github.com/mc-lan/ProxyCLIP @ e7b767fbc58ea218a3b8ba34cd92db521cc5f2e1')
_COMMA_SEPARATED = "; its ', ' separators written as '; '"

#: builtin name -> the released file it transcribes (repository @ commit, path; what was changed).
CLASS_NAME_SOURCES = {
    'voc21': f'{_FSA}, configs/cls_voc21.txt{_SAME_AS_PROXYCLIP}',
    'voc20': f'{_FSA}, configs/cls_voc20.txt{_SAME_AS_PROXYCLIP}',
    'context60': f'{_FSA}, configs/cls_context60.txt{_SAME_AS_PROXYCLIP}; trailing space of "wood " dropped',
    'context59': f'{_FSA}, configs/cls_context59.txt{_SAME_AS_PROXYCLIP}',
    'coco_object': f'{_FSA}, configs/cls_coco_object.txt{_SAME_AS_PROXYCLIP}',
    'coco_stuff': f'{_FSA}, configs/cls_coco_stuff.txt{_SAME_AS_PROXYCLIP}',
    'cityscapes': f'{_FSA}, configs/cls_city_scapes.txt{_SAME_AS_PROXYCLIP}',
    'ade20k': f'{_FSA}, configs/cls_ade20k.txt{_SAME_AS_PROXYCLIP}',
    'ade847': f'{_FSA}, configs/cls_ade20k847.txt{_SAME_AS_PROXYCLIP}; one query per line (commas '
              'inside a line are part of the name, as FSA splits on "; ")',
    'context459': f'{_FSA}, configs/cls_context459.txt{_SAME_AS_PROXYCLIP}; CRLF line ends written as LF',
    'sclip_voc21': f'{_SCLIP}, configs/cls_voc21.txt{_COMMA_SEPARATED}',
    'sclip_voc20': f'{_SCLIP}, configs/cls_voc20.txt{_COMMA_SEPARATED}',
    'sclip_coco_object': f'{_SCLIP}, configs/cls_coco_object.txt{_COMMA_SEPARATED}',
    'naclip_voc21': f'{_NACLIP}, configs/cls_voc21.txt{_COMMA_SEPARATED}',
    'naclip_voc20': f'{_NACLIP}, configs/cls_voc20.txt{_COMMA_SEPARATED}',
    'naclip_coco_object': f'{_NACLIP}, configs/cls_coco_object.txt{_COMMA_SEPARATED}',
    'clearclip_voc21': f'{_CLEARCLIP}, configs/cls_voc21.txt',
    'clearclip_coco_object': f'{_CLEARCLIP}, configs/cls_coco_object.txt',
}
# SAM3's prompts are this package's own (SAM3 configs, fsa_seg/sam3): derived from FSA's file of the benchmark,
# with one "background" prompt for the background line and no prompt on two lines.
CLASS_NAME_SOURCES.update({
    f'sam3_{name}': f'fsa-seg, derived from {name}.txt: a single "background" prompt, no prompt on two lines'
    for name in ('voc21', 'voc20', 'context60', 'context59', 'coco_object', 'coco_stuff', 'cityscapes', 'ade20k')})
CLASS_NAME_SOURCES.update({
    'sam3_ade847': 'fsa-seg, derived from ade847.txt: each comma-separated synonym its own prompt (merged by max), '
                   'hyphens as spaces; a synonym on two lines dropped from both (it names another class or is '
                   'ambiguous); where two lines share a first name, the line with synonyms takes its most specific '
                   'one (e.g. "pot, flowerpot" -> "flowerpot", "pot" stays "pot")',
    'sam3_context459': 'fsa-seg, derived from context459.txt: joined words split (pottedplant -> potted plant, '
                       'tvmonitor -> tv monitor, crabstick, hydrovalve, wineglass), hyphens as spaces, aeroplane -> '
                       'airplane as in sam3_context59, casette -> cassette, snowmobiles -> snowmobile',
})

PathLike = Union[str, 'os.PathLike[str]']


def list_class_name_files() -> List[str]:
    """Return the builtin class-name set names, sorted (e.g. ``['ade20k', ...]``)."""
    if not CLASS_NAME_DIR.is_dir():
        return []
    return sorted(p.stem for p in CLASS_NAME_DIR.glob('*.txt'))


def resolve_class_name_file(name_or_path: PathLike) -> Path:
    """Map a builtin name (``'voc21'``) or a file path to an existing file.

    Raises:
        FileNotFoundError: neither a builtin name nor an existing file; the
            message lists the builtin names.
    """
    text = os.fspath(name_or_path)
    builtin = CLASS_NAME_DIR / f'{text}.txt'
    # A bare word is a builtin name; a path-like string is taken literally even if a
    # builtin of the same stem exists, so user files are never shadowed.
    if text and os.sep not in text and '/' not in text and builtin.is_file():
        return builtin
    path = Path(text).expanduser()
    if path.is_file():
        return path
    builtins = ', '.join(list_class_name_files()) or '(none packaged)'
    raise FileNotFoundError(
        f"class-name file '{text}' not found: give a builtin name ({builtins}) "
        'or the path of a text file with one class per line')


def parse_class_names(text: str, source: str = '<string>') -> Tuple[List[str], List[int]]:
    """Parse class-name text into queries and their class indices.

    Lines are split on ``;`` and every synonym is stripped (the released loader
    splits on ``'; '``, which yields the same words for the released files).

    Raises:
        ValueError: no classes, an empty line, or an empty synonym; the message
            names ``source`` and the line number.
    """
    # splitlines() handles '\n', '\r\n' and '\r'; a final newline adds no line.
    lines = text.splitlines()
    # Blank lines at the very end are editor noise, not classes.
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f'class-name file {source} has no classes (it is empty)')

    query_words: List[str] = []
    query_to_class: List[int] = []
    for class_idx, line in enumerate(lines):
        lineno = class_idx + 1
        if not line.strip():
            raise ValueError(
                f'class-name file {source}, line {lineno}: empty line; every line '
                'must name one class (label ids follow line order)')
        for word in line.split(';'):
            word = word.strip()
            if not word:
                raise ValueError(
                    f'class-name file {source}, line {lineno}: empty synonym in '
                    f'{line.strip()!r} (check for doubled or trailing ";")')
            query_words.append(word)
            query_to_class.append(class_idx)
    return query_words, query_to_class


def load_class_names(name_or_path: PathLike) -> Tuple[List[str], List[int]]:
    """Load a class-name set.

    Args:
        name_or_path: builtin name (see :func:`list_class_name_files`) or file path.

    Returns:
        ``(query_words, query_to_class)``: one entry per synonym; the number of
        classes is ``max(query_to_class) + 1``.

    Raises:
        FileNotFoundError: the name/path does not resolve to a file.
        ValueError: the file is not UTF-8, is empty, or has an empty line/synonym.
    """
    path = resolve_class_name_file(name_or_path)
    try:
        # utf-8-sig: a BOM written by some Windows editors is not part of line 1.
        text = path.read_text(encoding='utf-8-sig')
    except UnicodeDecodeError as err:
        raise ValueError(
            f'class-name file {path} is not valid UTF-8 (byte {err.start}); '
            'save it as UTF-8 text') from None
    return parse_class_names(text, source=str(path))


def num_classes(name_or_path: PathLike) -> int:
    """Number of classes (lines) of a class-name set."""
    _, query_to_class = load_class_names(name_or_path)
    return max(query_to_class) + 1


def _name_key(name: str) -> str:
    """A class name compared loosely: case, spaces, hyphens and underscores ignored ('potted plant' ==
    'pottedplant' == 'Potted-Plant')."""
    return re.sub(r'[^0-9a-z]+', '', name.lower())


def reference_class_names(benchmark_class_names: str, num_classes: int) -> List[Set[str]]:
    """Per class id, the names (compared with :func:`_name_key`) that the packaged files for a benchmark use
    on that line: its own file (``voc21``) and the base methods' and SAM3's (``sclip_voc21``, ``sam3_voc21``)."""
    names: List[Set[str]] = [set() for _ in range(num_classes)]
    for stem in list_class_name_files():
        if stem != benchmark_class_names and not stem.endswith(f'_{benchmark_class_names}'):
            continue
        words, query_to_class = load_class_names(stem)
        if max(query_to_class) + 1 != num_classes:
            continue
        for word, k in zip(words, query_to_class):
            names[k].add(_name_key(word))
    return names


@dataclass
class ClassFileCheck:
    """What :func:`check_class_names` found: ``errors`` (the file cannot be scored against the dataset) and
    ``mismatches`` (line number, the line's names, the dataset's class at that id, and where the dataset has the
    line's name when it has it elsewhere)."""

    errors: List[str] = field(default_factory=list)
    mismatches: List[Tuple[int, str, str, str]] = field(default_factory=list)

    def mismatch_text(self, limit: int = 6) -> str:
        shown = [f"line {line} '{names}' vs '{expected}'{hint}" for line, names, expected, hint
                 in self.mismatches[:limit]]
        more = f' and {len(self.mismatches) - limit} more' if len(self.mismatches) > limit else ''
        return ', '.join(shown) + more


def check_class_names(query_words: Sequence[str], query_to_class: Sequence[int], dataset_classes: Sequence[str],
                      dataset: str = 'the dataset', background: Optional[bool] = None,
                      reference: Optional[Sequence[Set[str]]] = None) -> ClassFileCheck:
    """Compare a parsed class-name file with the classes of the dataset it is scored on.

    Label ids follow the file's line order, so the file must have exactly the dataset's classes (its
    background line included when the dataset has one: ``background``), no name on two lines (outside the
    background line, whose synonyms may also name a class, as in the released COCO-Object file), and each line
    should name the dataset's class at its id: one of its synonyms equal to the dataset's class name or to a
    name the packaged files use on that line (``reference``, see :func:`reference_class_names`).
    """
    report = ClassFileCheck()
    num_lines = max(query_to_class) + 1
    lines: List[List[str]] = [[] for _ in range(num_lines)]
    for word, k in zip(query_words, query_to_class):
        lines[k].append(word)
    if num_lines != len(dataset_classes):
        how = ''
        if background is not None:
            how = (' (its background class is line 1)' if background else ' (it has no background class: no '
                   'background line)')
        report.errors.append(f'{num_lines} classes (lines) but {dataset} has {len(dataset_classes)}{how}')
    first_line: Dict[str, int] = {}
    repeated: Dict[str, List[int]] = {}
    for k, words in enumerate(lines):
        if background and k == 0:
            continue
        for key in dict.fromkeys(_name_key(w) for w in words):
            if key in first_line:
                repeated.setdefault(key, [first_line[key] + 1]).append(k + 1)
            else:
                first_line[key] = k
    spelled = {_name_key(w): w for w in query_words}
    for key, at in repeated.items():
        report.errors.append(f"'{spelled[key]}' is on lines {', '.join(map(str, at[:-1]))} and {at[-1]}")
    if report.errors:
        return report
    dataset_keys = {_name_key(name): k for k, name in enumerate(dataset_classes)}
    for k, (words, expected) in enumerate(zip(lines, dataset_classes)):
        accepted = {_name_key(expected)} | (set(reference[k]) if reference is not None and k < len(reference)
                                            else set())
        if not any(_name_key(w) in accepted for w in words):
            elsewhere = [dataset_keys[_name_key(w)] for w in words if _name_key(w) in dataset_keys]
            hint = f' (the dataset has it at line {elsewhere[0] + 1})' if elsewhere else ''
            report.mismatches.append((k + 1, '; '.join(words), str(expected), hint))
    return report
