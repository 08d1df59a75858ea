"""tools/benchmark.py (fsa_seg.perf) in a tiny mode: outputs, fields, rows and the skip logic; the SAM3 path
on the tiny SAM3 config, FLOP counting (timings are never checked)."""
import argparse
import json
from pathlib import Path

import pytest
from mmengine.config import Config

from fsa_seg.perf import estimates, runner, workloads
from tooling import run_tool

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ['--cfg-options', 'model.clip_model=tiny-ViT-16', 'model.vfm=tiny-dino', 'model.random_weights=True',
        'model.slide_crop=64']  # tiny-dino (patch 8) on a 64 crop: N = 64 proxy tokens



def _read(work_dir: Path):
    report = json.loads((work_dir / 'benchmark.json').read_text())
    return report, (work_dir / 'benchmark.md').read_text()


def _row(report, part, **keys):
    rows = [r for r in report['results'] if r['part'] == part and all(r.get(k) == v for k, v in keys.items())]
    assert len(rows) == 1, (part, keys, report['results'])
    return rows[0]


@pytest.mark.slow
def test_tiny_run_writes_every_part(tmp_path):
    done = run_tool('benchmark', '--parts', 'whole,fsa,naive', '--n', '64', '--c', '3', '--repeats', '1',
                    '--warmup', '0', '--in-process', '--image', 'generated', '--image-size', '96x64', '--work-dir',
                    tmp_path, *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    report, md = _read(tmp_path)

    meta = report['meta']
    for key in ('command', 'device', 'device_name', 'torch', 'threads', 'ours_dtype', 'repeats', 'mem_method',
                'mem_budget_gb', 'date'):
        assert key in meta, key
    assert meta['ours_dtype'] == 'fp32' and meta['repeats'] == 1

    for part in ('whole', 'fsa', 'naive'):
        row = _row(report, part, n=64, c=3)
        assert row['status'] == 'ok', row
        for key in ('median_s', 'min_s', 'max_s', 'q1_s', 'q3_s', 'times_s', 'extra_mem_bytes', 'mem_method',
                    'load_before', 'load_after'):
            assert key in row, (part, key)
        assert len(row['times_s']) == 1 and row['min_s'] <= row['median_s'] <= row['max_s']
        assert row['extra_mem_bytes'] is None or row['extra_mem_bytes'] >= 0
    assert _row(report, 'whole', n=64, c=3)['vfm'] == 'tiny-dino'
    assert _row(report, 'naive', n=64, c=3)['estimate_bytes'] > 0
    assert _row(report, 'fsa', n=64, c=3)['heads'] == 2

    image = _row(report, 'image')
    assert image['status'] == 'ok' and (image['width'], image['height']) == (96, 64)
    assert image['crops'] == 2 and image['n'] == 64 and image['queries'] == 46  # VOC21 with synonyms

    (ratio,) = report['ratios']
    assert (ratio['n'], ratio['c']) == (64, 3)
    assert ratio['speedup'] > 0 and ratio['fsa_share_of_whole'] > 0

    for heading in ('## Measurements', '## Ratios', '## Per image'):
        assert heading in md
    for part in ('whole', 'fsa', 'naive'):
        assert f'| {part} | 64 | 3 |' in md
    assert '| generated | 96 x 64 |' in md
    assert 'ours/naive time' in done.stdout and 'FSA/whole-forward' in done.stdout


def bench_args(tmp_path, **kwargs) -> argparse.Namespace:
    """The options of tools/benchmark.py with their defaults (see its --help)."""
    args = dict(config=str(REPO_ROOT / 'configs' / 'fsa_proxy_sam_voc.py'), cfg_options={}, n=[64], c=[3],
                parts='naive', repeats=1, warmup=0, mem_repeats=1, work_dir=str(tmp_path), name='benchmark',
                mem_budget_gb=None, device=None, precision=None, image=None, image_size='448x336',
                image_short_side=336, threads=None, in_process=False, timeout=None, real_weights=False,
                render=None, wait_quiet=0.0, sam3=None, sam3_variants='encoder_output', sam3_present=[4],
                flops=False)
    args.update(kwargs)
    return argparse.Namespace(**args)


def tiny_model_cfg(config=REPO_ROOT / 'configs' / 'fsa_proxy_sam_voc.py'):
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict({k: v for k, v in (o.split('=', 1) for o in TINY[1:])})
    cfg.model.random_weights, cfg.model.slide_crop = True, 64
    return cfg.model.to_dict()


def test_naive_over_budget_is_skipped_with_reason(tmp_path):
    args = bench_args(tmp_path, n=[64, 441], mem_budget_gb=1e-6)
    assert runner.run_benchmark(args, tiny_model_cfg(), 'test') == 0
    report, md = _read(tmp_path)
    for n in (64, 441):
        row = _row(report, 'naive', n=n, c=3)
        assert row['status'] == 'skipped'
        assert 'budget' in row['reason'] and '[N, N, C]' in row['reason']
    assert md.count('skipped: naive estimate') == 2


def test_plan_skips_only_what_exceeds_the_budget(tmp_path):
    args = bench_args(tmp_path, parts='fsa,naive', n=[1764, 4096], c=[46, 171])
    args.mem_budget_bytes = int(22e9)
    model_cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fsa_proxy_sam_voc.py')).model.to_dict()
    jobs = runner.plan(args, model_cfg)
    skipped = {(j['n'], j['c']) for j in jobs if j['part'] == 'naive' and j.get('status') == 'skipped'}
    # [N, N, C] fp32 at N = 4096, C = 171 is 11.5 GB, and the KL needs two of them: it cannot fit 22 GB.
    assert skipped == {(4096, 171)}
    assert all(j.get('status') != 'skipped' for j in jobs if j['part'] == 'fsa')


def test_naive_estimate_matches_the_released_code_figures():
    # measured with the released code (fp32): 4.6 GB at N = 1764, C = 171; 8.4 GB at N = 4096, C = 46 (the released
    # code keeps one more per-head map alive than the transcription, so ours is a little lower).
    est = estimates.naive_fsa_bytes(1764, 171, heads=12, head_dim=64)
    assert est['phase'] == 'kl' and 4.0e9 < est['peak'] < 5.0e9
    est = estimates.naive_fsa_bytes(4096, 46, heads=12, head_dim=64)
    assert 7.0e9 < est['peak'] < 9.0e9
    assert estimates.naive_fsa_bytes(4096, 171, 12, 64)['kl_temporary'] == pytest.approx(11.48e9, rel=1e-3)


@pytest.mark.parametrize('n,expected', [(441, 'mae'), (576, 'dinov2'), (1764, 'dino'), (4096, 'sam'), (500, None)])
def test_vfm_for_tokens(n, expected):
    assert workloads.vfm_for_tokens(n, 336) == expected


@pytest.mark.slow
def test_sweep_workload_times_one_pass_and_separate_runs(tmp_path):
    done = run_tool('benchmark', '--sweep', '--sweep-images', '2', '--image-size', '96x64', '--warmup', '0',
                    '--sweep-repeats', '2', '--work-dir', tmp_path, *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / 'sweep.json').read_text())
    assert report['settings'][:2] == [{'top_p': 0.3, 'lamda': 2.0}, {'top_p': 0.3, 'lamda': 3.0}]
    assert len(report['settings']) == 9 and report['repeats'] == 2
    assert [r['order'] for r in report['rounds']] == ['one pass first', 'separate runs first']
    for r in report['rounds']:
        assert len(r['separate']['per_setting']) == 9 and r['one_pass']['seconds'] > 0
        assert r['separate']['seconds'] == pytest.approx(sum(b['seconds'] for b in r['separate']['per_setting']))
    assert report['images'] == 2 and report['crops'] == 4 and report['queries'] == 46
    seps = sorted(r['separate']['seconds'] for r in report['rounds'])
    assert report['separate_s'] == pytest.approx(sum(seps) / 2)  # the median of two
    assert report['ratio'] == pytest.approx(report['separate_s'] / report['one_pass_s'])
    assert report['identical'] is True  # the same predictions both ways
    md = (tmp_path / 'sweep.md').read_text()
    assert '| 2 | separate runs |' in md and 'Ratio (separate / one pass, medians)' in md
    assert 'ratio' in done.stdout and 'identical predictions: True' in done.stdout


# -- SAM3 ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sam3_tiny_run_reports_time_memory_and_flops(tmp_path):
    done = run_tool('benchmark', '--sam3', 'tiny', '--c', '5', '--sam3-variants', 'encoder_output,last_layer,output',
                    '--sam3-present', '2', '--repeats', '1', '--warmup', '0', '--in-process', '--work-dir', tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report, md = _read(tmp_path)
    assert report['meta']['sam3'] == 'tiny' and report['meta']['config'] == 'configs/fsa_sam3_voc21.py'
    rows = {(r['part'], r.get('variant')): r for r in report['sam3']}
    assert set(rows) == {('sam3_base', None)} | {(p, v) for p in ('sam3_fsa', 'sam3_step')
                                                 for v in ('encoder_output', 'last_layer', 'output')}
    base = rows[('sam3_base', None)]
    for row in rows.values():
        assert row['status'] == 'ok', row
        for key in ('median_s', 'cpu_s', 'times_s', 'extra_mem_bytes', 'mem_method', 'flops', 'crop', 'n',
                    'prompts'):
            assert key in row, key
        assert row['crop'] == 112 and row['n'] == 64 and row['flops'] > 0
    assert base['prompts'] == 5 and base['fsa_options'] is None
    for variant in ('encoder_output', 'last_layer'):
        fsa, step = rows[('sam3_fsa', variant)], rows[('sam3_step', variant)]
        assert fsa['prompts'] == 5 and 1 <= fsa['present'] < 5           # the threshold left some prompts out
        assert step['prompts'] == step['present'] == 2                     # the step: a model of the K prompts
        assert fsa['flops'] > base['flops'] and step['flops'] < base['flops']
        assert fsa['fsa_options']['placement'] == variant
        assert fsa['added_flops'] > 0 and step['added_flops'] == pytest.approx(step['flops'] / base['flops'])
        assert 'added_peak_bytes' in fsa and 'added_peak_bytes' not in step
    # the adapted last layer costs more FLOPs than A_fb on the encoder output; output mode re-runs nothing
    assert rows[('sam3_step', 'last_layer')]['flops'] > rows[('sam3_step', 'encoder_output')]['flops']
    # output mode re-runs nothing: its FLOPs are the default isolation's uniform pass (a semantic-head pass)
    assert rows[('sam3_step', 'output')]['flops'] < 0.6 * rows[('sam3_step', 'encoder_output')]['flops']
    assert '## SAM3 per crop' in md and '| sam3_step | last_layer |' in md and '+FLOPs' in md
    assert 'SAM3 sam3_fsa encoder_output' in done.stdout


def test_sam3_plan_rejects_unknown_parts_and_variants(tmp_path):
    args = bench_args(tmp_path, sam3='tiny', parts='sam3_base,fsa', c=[46], sam3_variants='last_layer',
                      sam3_present=[4])
    with pytest.raises(ValueError, match='SAM3 part'):
        runner.plan(args, {})
    args.parts, args.sam3_variants = 'sam3_step', 'last_layer,decoder'
    with pytest.raises(ValueError, match='SAM3 variant'):
        runner.plan(args, {})
    args.sam3_variants, args.sam3_present = 'last_layer', [4, 50]
    jobs = runner.plan(args, {})
    assert [j.get('status') for j in jobs] == [None, 'skipped'] and 'present' in jobs[1]['reason']


def test_flop_counter_counts_cpu_attention():
    # torch's FlopCounterMode has no formula for CPU's fused attention kernel: ours adds it (4 B h N^2 d)
    import torch

    from fsa_seg.perf.flops import count_flops

    q, k, v = (torch.randn(2, 3, 40, 8) for _ in range(3))
    _, counted = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert counted == 4 * 2 * 3 * 40 * 40 * 8
    _, counted = count_flops(lambda: q @ k.transpose(-1, -2))
    assert counted == 2 * 2 * 3 * 40 * 40 * 8


def test_presence_threshold_for_k_present_prompts():
    import torch

    from fsa_seg.perf.sam3_workloads import threshold_for

    logits = torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0])
    for k in range(1, 5):
        assert int((logits.sigmoid() >= threshold_for(logits, k)).sum()) == k
    assert threshold_for(logits, 5) == 0.0 and threshold_for(logits, 0) == 1.0


@pytest.mark.parametrize('args, message', [
    (['--parts', 'fsa,foo'], "unknown part(s) ['foo']; choose from ['whole', 'whole_base'"),
    (['--sam3', '--parts', 'fsa'], "unknown SAM3 part(s) ['fsa']; choose from ['sam3_base'"),
    (['--sam3', '--sam3-variants', 'last_layer,nope'], "unknown SAM3 variant(s) ['nope']; choose from ['config'"),
])
def test_unknown_names_are_a_one_line_usage_error(args, message):
    done = run_tool('benchmark', *args, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"benchmark.py: error: {message}")


@pytest.mark.slow
def test_crop_memory_reports_each_proxy_per_crop(tmp_path):
    """--crop-memory: each proxy's per-crop forward on 1 and 3 crops, the per-crop difference and the estimate that
    sets crop_batch_size=None, in the JSON, the markdown table and the printed lines (no timing asserted)."""
    done = run_tool('benchmark', '--crop-memory', 'tiny-dino', '--crop-batch', '3', '--c', '3',
                    '--repeats', '1', '--warmup', '0', '--in-process', '--work-dir', tmp_path, *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    report, md = _read(tmp_path)
    for vfm, n in (('tiny-dino', 64),):
        one, three = _row(report, 'crops', vfm=vfm, batch=1), _row(report, 'crops', vfm=vfm, batch=3)
        assert one['status'] == three['status'] == 'ok' and one['n'] == three['n'] == n
        assert one['estimate_bytes'] == three['estimate_bytes'] > 0
        assert f'{vfm} proxy, C=3: extra peak' in done.stdout
    assert '## Peak memory per crop' in md and '| tiny-dino | 64 | 3 | 64 | float32 |' in md
    assert not any(r['part'] == 'crops' for r in report['ratios'])


def test_crop_memory_rows_take_the_difference_per_extra_crop():
    from fsa_seg.perf.runner import crop_memory_rows

    runs = [dict(part='crops', vfm='sam', c=46, batch=b, status='ok', extra_mem_bytes=m, median_s=1.0, n=4096,
                 estimate_bytes=7) for b, m in ((1, 500), (4, 1100))]
    (row,) = crop_memory_rows(runs)
    assert (row['one'], row['many'], row['batch'], row['per_crop'], row['estimate']) == (500, 1100, 4, 200, 7)
