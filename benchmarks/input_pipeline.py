"""Input-pipeline throughput: examples/s the SeqIO pipeline delivers for each task family,
against the rate at which the train step consumes them.

Pipeline: for each task family (CoPoet, Deep Haiku, Tk-Instruct, the caption contest) the
train pipeline is built as `t5x train` builds it: t5x.data.get_dataset on a
DatasetConfig with the family's TASK_FEATURE_LENGTHS (read from its gin file), split
'train', shuffled with seed 0, packed, repeating forever (the bundled samples are small,
so they repeat). After a few warm-up batches, batches are pulled for a while (at least
--seconds and --batches); reported per family: examples/s (an example is a packed
segment: the distinct nonzero `encoder_segment_ids` of a row), batches/s, non-padding
target tokens/s and packing density (non-padding / all positions of inputs and targets).

Train step: T5 1.1 small (gin/models/t5_1_1/small.gin; dropout 0.1; float32 activations on
a CPU, bfloat16 elsewhere) through the project's Trainer with Adafactor on one device
(PjitPartitioner(num_partitions=1)), compiled, then timed on real batches of the CoPoet
pipeline (same rows, its 64/64 lengths): the examples in those batches over the time of
those steps is the rate training consumes examples at. Every family's ratio uses this one
step rate, a single compile: copoet's rows are the shortest, so its step is the fastest; on
the other families' longer rows a step takes several times longer (on a CPU about a minute
at Tk-Instruct's 1024 tokens) for no more examples per row (ex/row), so their ratios here
are conservative. --step_on own times the step on each family's own batches instead (cheap
on an accelerator). The ratio pipeline / train-step examples/s is printed per family; the
goal is at least 5 for every family (the input pipeline is never the bottleneck). The
pipeline and the step are timed one after the other, each with the whole machine.

Data: the tasks fall back to their bundled samples (t5x_tasks/data/README.md) and, by
default, tokenize with the bundled 320-piece vocabulary (offline machines have no T5
vocabulary); --vocabulary PATH tokenizes with a SentencePiece file instead (T5's gives fewer,
longer tokens, so more examples per packed row).

Run (about 1.5 minutes on a 2-core CPU):
  python benchmarks/input_pipeline.py [--families copoet,ni] [--batch 8] [--json OUT] [--plot PNG]
Smoke test (tiny model, lengths 32/16 for every family, 3 timed batches):
  python benchmarks/input_pipeline.py --smoke
"""
import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from t5x import (data, fs_utils, gin_utils, model_config, models, optimizers,  # noqa: E402
                 partitioning, trainer)
from t5x.examples.t5.network import T5Config, Transformer  # noqa: E402
from t5x.utils import DatasetConfig  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  (the benchmarks' shared tiny model)

GIN = os.path.join(os.path.dirname(__file__), '..', 'gin')
# family: (task or mixture, the gin file whose TASK_FEATURE_LENGTHS it trains with)
FAMILIES = {
    'copoet': ('copoet_instructions', 'copoet_11b.gin'),
    'haiku': ('haiku_multitask', 'haiku_base.gin'),
    'ni': ('ni_def_pos2', 'tk_instruct_3b.gin'),
    'caption': ('caption_matching_split0', 'caption_matching_11b.gin'),
}
# The smoke model: benchmarks/train_step.py's TINY, with room for the 320-piece vocabulary.
TINY = dict(train_step.TINY, vocab_size=384)
SMOKE_LENGTHS = {'inputs': 32, 'targets': 16}


def family_lengths(family: str, smoke: bool = False) -> dict:
  """The family's TASK_FEATURE_LENGTHS from its gin file; SMOKE_LENGTHS in a smoke run, the
  same for every family so that the train step compiles once."""
  if smoke:
    return dict(SMOKE_LENGTHS)
  return dict(gin_utils.gin_macros(os.path.join(GIN, FAMILIES[family][1]))[
      'TASK_FEATURE_LENGTHS'])


def bind_vocabulary(vocabulary: str) -> None:
  """Makes the tasks tokenize with a named vocabulary (vocabularies.NAMED) or a file."""
  import gin
  import t5x_tasks.vocabularies  # noqa: F401  (registers the configurable bound here)
  if os.path.isfile(vocabulary):
    gin.bind_parameter('vocabularies.task_vocabulary.sentencepiece_model_file', vocabulary)
  else:
    gin.bind_parameter('vocabularies.task_vocabulary.name', vocabulary)


def batch_stats(batch: dict) -> dict:
  """Examples and non-padding positions of one batch.

  Packed segments are contiguous runs of one id, so counting the positions where a nonzero
  id starts counts the distinct nonzero ids of each row without a per-row loop (which
  would slow down the very loop being timed). Unpacked rows hold one example each.
  """
  inputs, targets = batch['encoder_input_tokens'], batch['decoder_target_tokens']
  if 'encoder_segment_ids' in batch:
    ids = batch['encoder_segment_ids']
    starts = (ids[:, 1:] != ids[:, :-1]) & (ids[:, 1:] != 0)
    examples = int(np.count_nonzero(ids[:, 0]) + np.count_nonzero(starts))
  else:
    examples = int(np.count_nonzero(inputs.any(axis=1)))
  return dict(examples=examples, input_tokens=int(np.count_nonzero(inputs)),
              target_tokens=int(np.count_nonzero(targets)),
              input_positions=inputs.size, target_positions=targets.size)


def _sum_stats(stats: list[dict]) -> dict:
  return {k: sum(s[k] for s in stats) for k in stats[0]}


def _train_batches(family: str, lengths: dict, batch_size: int):
  """The family's train pipeline as `t5x train` builds it (an endless batch iterator)."""
  cfg = DatasetConfig(FAMILIES[family][0], lengths, 'train', batch_size, shuffle=True, seed=0,
                      use_cached=False, pack=True)
  return data.get_dataset(cfg, num_epochs=None)


def time_pipeline(family: str, lengths: dict, batch_size: int, warmup: int, min_batches: int,
                  min_seconds: float) -> tuple[dict, list[dict]]:
  """(rates and counts of the timed batches, the warm-up batches) of one family's pipeline.

  Warm-up batches are not timed: the first one pays for building the tf.data graph and
  filling the shuffle buffer, which a run pays once.
  """
  start = time.perf_counter()
  batches = _train_batches(family, lengths, batch_size)
  warm = [next(batches)]
  first_batch_s = time.perf_counter() - start
  warm += [next(batches) for _ in range(warmup - 1)]
  stats = []
  start = time.perf_counter()
  while len(stats) < min_batches or time.perf_counter() - start < min_seconds:
    stats.append(batch_stats(next(batches)))
  elapsed = time.perf_counter() - start
  batches.close()  # stops its prefetch threads, which would otherwise compete with the step
  total = _sum_stats(stats)
  result = dict(
      task=FAMILIES[family][0], inputs_length=lengths['inputs'],
      targets_length=lengths['targets'], rows=batch_size, first_batch_s=first_batch_s,
      batches=len(stats), elapsed_s=elapsed, **total,
      examples_per_s=total['examples'] / elapsed, batches_per_s=len(stats) / elapsed,
      target_tokens_per_s=total['target_tokens'] / elapsed,
      examples_per_row=total['examples'] / (len(stats) * batch_size),
      input_density=total['input_tokens'] / total['input_positions'],
      target_density=total['target_tokens'] / total['target_positions'],
      density=(total['input_tokens'] + total['target_tokens'])
      / (total['input_positions'] + total['target_positions']))
  return result, warm


def build_trainer(smoke: bool, dtype: str) -> tuple[trainer.Trainer, T5Config]:
  """T5 1.1 small (TINY when smoke) with Adafactor as small.gin sets it, on one device."""
  if smoke:
    fields = dict(TINY)
  else:
    fields = gin_utils.config_from_gin(os.path.join(GIN, 'models', 't5_1_1', 'small.gin'))
    names = {f.name for f in dataclasses.fields(T5Config)}
    fields = {k: v for k, v in fields.items() if k in names}
  fields.update(dtype=dtype, dropout_rate=0.1)  # the fine-tuning runs' dropout
  cfg = T5Config(**fields)
  model = models.EncoderDecoderModel(Transformer(cfg), optimizer_def=optimizers.adafactor(
      decay_rate=0.8, clipping_threshold=1.0, factored=True))
  return trainer.Trainer(model, partitioning.PjitPartitioner(num_partitions=1)), cfg


def time_train_step(t: trainer.Trainer, state, batches: list[dict], steps: int):
  """(state, rates of `steps` train steps cycling over `batches`) after one compiling step."""
  key = jax.random.PRNGKey(1)
  start = time.perf_counter()
  state, metrics = t.train_step(state, batches[0], key)  # compiles for these shapes
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  examples, elapsed = 0, 0.0
  for i in range(steps):
    batch = batches[i % len(batches)]
    start = time.perf_counter()
    state, metrics = t.train_step(state, batch, key)
    jax.block_until_ready(metrics)
    elapsed += time.perf_counter() - start
    examples += batch_stats(batch)['examples']
  return state, dict(
      step_inputs_length=batches[0]['encoder_input_tokens'].shape[1],
      step_targets_length=batches[0]['decoder_target_tokens'].shape[1],
      step_compile_s=compile_s, step_count=steps, step_elapsed_s=elapsed,
      step_s=elapsed / steps, step_examples=examples, step_examples_per_s=examples / elapsed,
      loss=float(metrics['loss']))


def machine_info() -> dict:
  """What the numbers were measured on."""
  return dict(processor=platform.processor(), uname=' '.join(platform.uname()),
              cpu_count=os.cpu_count(), load_average=list(os.getloadavg()),
              device=jax.devices()[0].device_kind, jax=jax.__version__,
              seqio=importlib.metadata.version('seqio'),
              date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'))


def run(args) -> dict:
  bind_vocabulary(args.vocabulary)
  t, cfg = build_trainer(args.smoke, args.dtype)
  state = t.init_state(jax.random.PRNGKey(0))
  families, steps = {}, {}  # steps: family whose batches the step ran on -> its timing
  for family in args.families:
    lengths = family_lengths(family, args.smoke)
    result, warm = time_pipeline(family, lengths, args.batch, args.warmup, args.batches,
                                 args.seconds)
    source = family if args.step_on == 'own' else 'copoet'
    if source not in steps:
      if source != family:  # copoet is not being measured (first): take a few of its batches
        batches = _train_batches(source, family_lengths(source, args.smoke), args.batch)
        warm = [next(batches) for _ in range(args.warmup)]
        batches.close()
      state, steps[source] = time_train_step(t, state, warm, args.steps)
    step = steps[source]
    result.update(step, step_on=source,
                  ratio=result['examples_per_s'] / step['step_examples_per_s'])
    families[family] = result
    print(f'{family}: {result["examples_per_s"]:.0f} examples/s from the pipeline, '
          f'{step["step_examples_per_s"]:.2f} through the train step on {source} batches',
          flush=True)
  return dict(machine=machine_info(), model='tiny' if args.smoke else 't5_1_1 small',
              parameters=model_config.count_params(cfg), activation_dtype=cfg.dtype,
              dropout_rate=cfg.dropout_rate, vocabulary=args.vocabulary, batch=args.batch,
              step_on=args.step_on, families=families,
              min_ratio=min(f['ratio'] for f in families.values()))


def print_table(result: dict) -> None:
  head = (f'{"family":<8} {"task":<24} {"lengths":>9} {"ex/row":>6} {"density in/tgt":>14} '
          f'{"ex/s":>8} {"batch/s":>8} {"tgt tok/s":>10} {"step s":>7} {"step ex/s":>9} '
          f'{"step on":>14} {"ratio":>7}')
  print(head)
  print('-' * len(head))
  for family, r in result['families'].items():
    print(f'{family:<8} {r["task"]:<24} {r["inputs_length"]:>5}/{r["targets_length"]:<3} '
          f'{r["examples_per_row"]:>6.2f} {r["input_density"]:>7.2f}/{r["target_density"]:<6.2f} '
          f'{r["examples_per_s"]:>8.0f} {r["batches_per_s"]:>8.1f} '
          f'{r["target_tokens_per_s"]:>10.0f} '
          f'{r["step_s"]:>7.3f} {r["step_examples_per_s"]:>9.2f} '
          f'{r["step_on"]:>7} {r["step_inputs_length"]:>4}/{r["step_targets_length"]:<2} '
          f'{r["ratio"]:>7.2f}')
  m = result['machine']
  print(f'{result["model"]} ({result["parameters"]:,} parameters, {result["activation_dtype"]}), '
        f'{result["batch"]} rows per batch; {m["device"]}, {m["cpu_count"]} CPUs, '
        f'load average {m["load_average"][0]:.2f}')
  print(f'min ratio (pipeline/train step examples/s): {result["min_ratio"]:.2f}')


def plot(result: dict, path: str) -> None:
  """Bars (log scale) of each family's pipeline examples/s beside the train step's."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  families = list(result['families'])
  x = np.arange(len(families))
  rows = [result['families'][f] for f in families]
  fig, ax = plt.subplots(figsize=(8, 4))
  ax.bar(x - 0.2, [r['examples_per_s'] for r in rows], 0.4, label='SeqIO pipeline (tokenize + pack)')
  ax.bar(x + 0.2, [r['step_examples_per_s'] for r in rows], 0.4,
         label=f'train step, {result["model"]}')
  for i, r in enumerate(rows):
    ax.annotate(f'{r["ratio"]:.0f}x', (i, r['examples_per_s']), ha='center', va='bottom')
  ax.set_xticks(x, [f'{f}\n{r["inputs_length"]}/{r["targets_length"]}' for f, r in zip(families, rows)])
  ax.set_yscale('log')
  ax.set_ylabel('examples/s')
  ax.set_title('input pipeline against the train step (same machine, one after the other)')
  ax.grid(alpha=0.3, axis='y')
  ax.legend(loc='center right')
  fig.tight_layout()
  fs_utils.write_figure(path, fig)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--families', default=','.join(FAMILIES),
                 help=f'comma-separated, of {", ".join(FAMILIES)}')
  p.add_argument('--batch', type=int, default=8, help='rows per batch (packed)')
  p.add_argument('--warmup', type=int, default=3, help='untimed pipeline batches, also the '
                 'batches the train step runs on')
  p.add_argument('--batches', type=int, default=20, help='timed pipeline batches, at least')
  p.add_argument('--seconds', type=float, default=3.0, help='pipeline timing, at least')
  p.add_argument('--steps', type=int, default=3, help='timed train steps')
  p.add_argument('--step_on', default='copoet', choices=('copoet', 'own'),
                 help="whose batches the train step is timed on: copoet's for every family "
                 "(one compile), or each family's own (on a CPU a step at Tk-Instruct's 1024 "
                 "tokens takes about a minute)")
  p.add_argument('--dtype', default=None,
                 help='activation dtype (default float32 on a CPU, else bfloat16)')
  p.add_argument('--vocabulary', default='quickstart',
                 help='a vocabularies.NAMED name or a SentencePiece model file')
  p.add_argument('--json', default=None, help='also write the result here')
  p.add_argument('--plot', default=None, help='also draw the result as a PNG here')
  p.add_argument('--smoke', action='store_true', help='tiny model, short lengths (CPU test)')
  args = p.parse_args(argv)
  args.families = args.families.split(',')
  unknown = set(args.families) - set(FAMILIES)
  if unknown:
    p.error(f'unknown families {sorted(unknown)}; known: {", ".join(FAMILIES)}')
  if args.warmup < 1:
    p.error('--warmup must be at least 1: the train step runs on the warm-up batches')
  if args.smoke:
    args.batches, args.seconds, args.steps = 3, 0.0, 2
  args.dtype = args.dtype or ('float32' if jax.default_backend() == 'cpu' else 'bfloat16')
  result = run(args)
  print_table(result)
  if args.json:
    fs_utils.write_atomic(args.json, json.dumps(result, indent=2))
  if args.plot:
    plot(result, args.plot)
  return result


if __name__ == '__main__':
  main()
