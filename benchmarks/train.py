"""Training throughput side by side: `t5x train` against the PyTorch stack of the seeds.

CoPoet and Tk-Instruct were trained with transformers on PyTorch (`run_translation`),
so that is what a user weighs this project against. Both stacks train the same model
(T5 1.1 small, or base with --size base) from the same initial weights, on the same
examples in the same steps, and both report the same numbers.

The project side is a real `t5x train` process (models/t5_1_1/<size>.gin,
runs/finetune.gin, benchmarks/train_copoet.gin): the `copoet_instructions` SeqIO task,
packed as runs/finetune.gin packs it, Adafactor, dropout 0.1, float32 on a CPU. Its
numbers come from its own metrics.jsonl (one record per `--stats_period` steps).

The PyTorch side is transformers' T5ForConditionalGeneration with
DataCollatorForSeq2Seq (dynamic padding to the longest example of each batch, labels
padded with -100), transformers' Adafactor with the same settings (lr 1e-3 constant,
parameter scaling, update clipping 1.0, decay exponent -0.8, no momentum) and dropout
0.1, in a plain loop, in its own process. Its steps hold exactly the examples of the
project's packed steps: the driver reads the same SeqIO pipeline (same seed) and unpacks
each packed batch into its examples, already tokenized (as `run_translation` tokenizes
ahead with `datasets.map`). The driver checks that both sides saw the same number of
examples and target tokens.

Rounds alternate A B A B (--rounds); the table gives the median round. Steady-state
rates leave out each run's first `--stats_period` steps (compilation, warm-up); the
start-up column is the wall time before the first step. The loss is the cross-entropy
per non-padding target token over the last `--stats_period` steps (the project's z-loss
is not included), so equal loss means both learned the same amount.

Scaling (--scaling): the step time of each stack on synthetic batches with no padding,
for input = target lengths 64, 128, 256, 512 at batch 8, and batches 2..32 at length 64.
Here both stacks do the same arithmetic, so the ratio is the kernels' speed alone.

Run:
  python benchmarks/train.py                       # T5 1.1 small, the comparison
  python benchmarks/train.py --size base --steps 20
  python benchmarks/train.py --scaling
  python benchmarks/train.py --smoke               # tiny model, seconds; what CI runs
Each run writes JSON (--out, default benchmarks/results/) and a plot next to it.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, ROOT)

# transformers.T5Config fields of each size (T5 1.1: gated-gelu, untied head), and the
# project's gin file with the same model. 'tiny' is gin/quickstart.gin's model.
SIZES = {
    'tiny': (dict(vocab_size=384, d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2,
                  num_decoder_layers=2),
             'models/t5_1_1/tiny.gin',
             ['NUM_EMBEDDINGS=384', 'network.T5Config.emb_dim=64', 'network.T5Config.num_heads=4',
              'network.T5Config.head_dim=16', 'network.T5Config.mlp_dim=128',
              'network.T5Config.num_encoder_layers=2', 'network.T5Config.num_decoder_layers=2']),
    'small': (dict(vocab_size=32128, d_model=512, d_kv=64, num_heads=6, d_ff=1024, num_layers=8,
                   num_decoder_layers=8), 'models/t5_1_1/small.gin', []),
    'base': (dict(vocab_size=32128, d_model=768, d_kv=64, num_heads=12, d_ff=2048, num_layers=12,
                  num_decoder_layers=12), 'models/t5_1_1/base.gin', []),
}
LEARNING_RATE = 1e-3
STACKS, COLORS = ('project', 'pytorch'), ('tab:blue', 'tab:orange')
DROPOUT = 0.1


def hf_config(size: str):
  """transformers.T5Config of `size` (T5 1.1: gated-gelu, untied head), dropout 0.1."""
  import transformers
  return transformers.T5Config(
      **SIZES[size][0], feed_forward_proj='gated-gelu', tie_word_embeddings=False,
      dropout_rate=DROPOUT, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)


def project_config(size: str):
  """The project's T5Config of `size` (float32 on a CPU, dropout 0.1)."""
  import dataclasses
  from t5x.conversion import hf_convert
  cfg = hf_convert.config_from_hf(hf_config(size).to_dict(), f'{size} config')
  return dataclasses.replace(cfg, dtype='float32', dropout_rate=DROPOUT)


def save_initial_model(size: str, folder: str, seed: int = 0) -> None:
  """T5X's random initialisation written as a transformers folder: the start point of
  both stacks. (transformers' own random T5 init starts near a per-token loss of 30.)"""
  import jax
  from t5x.conversion import hf_convert
  from t5x import models
  from t5x.examples.t5.network import Transformer
  cfg = project_config(size)
  params = models.EncoderDecoderModel(Transformer(cfg)).init_params(jax.random.PRNGKey(seed))
  os.makedirs(folder)
  hf_convert.write_hf_files(folder, jax.device_get(params), cfg)


# ------------------------------------------------------------------ the examples


def example_schedule(args, steps: int) -> list[list[tuple[list[int], list[int]]]]:
  """The examples of each of the project's first `steps` steps, as (input ids, target
  ids) lists: the packed train batches of `t5x train`, unpacked by segment id."""
  import gin
  from t5x import data
  from t5x import utils
  import t5x_tasks.vocabularies  # noqa: F401  (registers the configurable bound below)
  gin.bind_parameter('vocabularies.task_vocabulary.name', 'quickstart')
  cfg = utils.DatasetConfig('copoet_instructions', lengths(args), 'train', args.batch,
                            shuffle=True, seed=0, use_cached=False, pack=True)
  schedule = []
  for batch in data.get_dataset(cfg, num_epochs=None):
    schedule.append(unpack(batch))
    if len(schedule) == steps:
      return schedule
  raise AssertionError('unreachable: the train pipeline repeats')


def unpack(batch: dict) -> list[tuple[list[int], list[int]]]:
  """A packed (or unpacked) EncDecFeatureConverter batch -> its examples' token lists."""
  examples = []
  for row in range(batch['encoder_input_tokens'].shape[0]):
    enc, tgt = batch['encoder_input_tokens'][row], batch['decoder_target_tokens'][row]
    if 'encoder_segment_ids' not in batch:
      examples.append((enc[enc > 0].tolist(), tgt[tgt > 0].tolist()))
      continue
    enc_seg, dec_seg = batch['encoder_segment_ids'][row], batch['decoder_segment_ids'][row]
    for segment in range(1, int(enc_seg.max()) + 1):
      examples.append((enc[enc_seg == segment].tolist(), tgt[dec_seg == segment].tolist()))
  return examples


def lengths(args) -> dict:
  return {'inputs': args.inputs_length, 'targets': args.targets_length}


# ------------------------------------------------------------------ the two stacks


def run_child(command: list[str], log_path: str, env: dict) -> tuple[float, float]:
  """Runs `command`, output to `log_path`; (wall seconds, peak resident GiB). Raises
  with the log's tail if it fails."""
  start = time.perf_counter()
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
  wall = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status) != 0:
    with open(log_path) as log:
      tail = log.read()[-3000:]
    raise RuntimeError(f'{" ".join(command[:4])} ... failed (log {log_path}):\n{tail}')
  return wall, usage.ru_maxrss / 2 ** 20  # Linux reports KiB


def run_project(args, init_dir: str, work: str, tag: str) -> dict:
  """One `t5x train` run; windows read back from its metrics.jsonl."""
  model_dir = os.path.join(work, f'project_{tag}')
  size_gin, size_bindings = SIZES[args.size][1], SIZES[args.size][2]
  bindings = [
      f'MODEL_DIR="{model_dir}"', f'INITIAL_CHECKPOINT_PATH="{init_dir}"',
      f'TRAIN_STEPS={args.steps}', f'BATCH_SIZE={args.batch}',
      f'TASK_FEATURE_LENGTHS={lengths(args)!r}', f'DROPOUT_RATE={DROPOUT}',
      "ACTIVATION_DTYPE='float32'", 'EVAL_PERIOD=None', 'utils.CheckpointConfig.save=None',
      f'train_script.train.stats_period={args.stats_period}',
      f'utils.create_learning_rate_scheduler.base_learning_rate={LEARNING_RATE}',
      *size_bindings]
  command = [sys.executable, '-m', 't5x_cli.main', 'train', f'--gin_file={size_gin}',
             '--gin_file=runs/finetune.gin',
             f'--gin_file={os.path.join(ROOT, "benchmarks", "train_copoet.gin")}',
             *[f'--gin.{b}' for b in bindings]]
  wall, rss = run_child(command, os.path.join(work, f'project_{tag}.log'), child_env(args))
  windows = []
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      if record['split'] == 'train':
        windows.append(dict(step=record['step'], seconds=record['window_sec'],
                            examples=record['num_examples'],
                            target_tokens=record['target_tokens'],
                            loss=record['cross_ent_loss_per_token']))
  return dict(stack='project', wall_s=wall, peak_rss_gib=rss, windows=windows)


def run_pytorch(args, init_dir: str, schedule_path: str, work: str, tag: str) -> dict:
  out = os.path.join(work, f'pytorch_{tag}.json')
  command = [sys.executable, os.path.abspath(__file__), '--worker', 'pytorch',
             '--init', init_dir, '--schedule', schedule_path, '--worker_out', out,
             '--stats_period', str(args.stats_period), '--size', args.size]
  wall, rss = run_child(command, os.path.join(work, f'pytorch_{tag}.log'), child_env(args))
  with open(out) as f:
    windows = json.load(f)
  return dict(stack='pytorch', wall_s=wall, peak_rss_gib=rss, windows=windows)


def pytorch_adafactor(model):
  """transformers' Adafactor set as the project's: constant lr, parameter scaling, update
  clipping 1.0, decay exponent -0.8 (T5X's 0.8), no momentum, no weight decay."""
  import transformers
  return transformers.Adafactor(
      model.parameters(), lr=LEARNING_RATE, relative_step=False, scale_parameter=True,
      warmup_init=False, clip_threshold=1.0, decay_rate=-0.8, beta1=None, weight_decay=0.0)


def pytorch_worker(args) -> None:
  """The PyTorch training loop over the schedule's steps; per-window records to JSON."""
  import torch
  import transformers
  with open(args.schedule) as f:
    schedule = json.load(f)
  started = time.perf_counter()
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration.from_pretrained(args.init).train()
  optimizer = pytorch_adafactor(model)
  # The tokenizer only pads here (pad id 0); the ids come tokenized in the schedule.
  tokenizer = transformers.T5Tokenizer(vocab_file=os.path.join(
      ROOT, 't5x_tasks', 'data', 'copoet_sample', 'spiece.model'), extra_ids=0)
  collator = transformers.DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
  windows, window = [], dict(seconds=0.0, examples=0, target_tokens=0, loss_sum=0.0)
  last = started
  for step, examples in enumerate(schedule, start=1):
    batch = collator([{'input_ids': i, 'labels': t} for i, t in examples])
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    tokens = int((batch['labels'] != -100).sum())
    window['examples'] += len(examples)
    window['target_tokens'] += tokens
    window['loss_sum'] += float(loss) * tokens  # float() waits for the step
    if step % args.stats_period == 0 or step == len(schedule):
      now = time.perf_counter()
      loss_sum = window.pop('loss_sum')
      windows.append(dict(window, step=step, seconds=now - last,
                          loss=loss_sum / max(window['target_tokens'], 1)))
      window, last = dict(seconds=0.0, examples=0, target_tokens=0, loss_sum=0.0), now
  from t5x import fs_utils
  fs_utils.write_atomic(args.worker_out, json.dumps(windows))


def summarize(run: dict) -> dict:
  """Steady-state rates (windows after the first), start-up and final loss of one run."""
  windows = run['windows']
  steady = windows[1:] or windows
  seconds = sum(w['seconds'] for w in steady)
  examples = sum(w['examples'] for w in steady)
  tokens = sum(w['target_tokens'] for w in steady)
  return dict(stack=run['stack'], examples_per_s=examples / seconds,
              target_tokens_per_s=tokens / seconds, s_per_1000_examples=1000 * seconds / examples,
              peak_rss_gib=run['peak_rss_gib'], wall_s=run['wall_s'],
              startup_s=run['wall_s'] - sum(w['seconds'] for w in windows),
              final_loss=windows[-1]['loss'],
              examples=sum(w['examples'] for w in windows),
              target_tokens=sum(w['target_tokens'] for w in windows))


def compare(args) -> dict:
  """Rounds of project, PyTorch on one schedule; checks, table, JSON, plot."""
  with tempfile.TemporaryDirectory(prefix='bench_train_') as work:
    init_dir = os.path.join(work, 'init')
    save_initial_model(args.size, init_dir)
    schedule = example_schedule(args, args.steps)
    schedule_path = os.path.join(work, 'schedule.json')
    with open(schedule_path, 'w') as f:
      json.dump(schedule, f)
    rounds = []
    for r in range(args.rounds):
      project = run_project(args, init_dir, work, str(r))
      pytorch = run_pytorch(args, init_dir, schedule_path, work, str(r))
      rounds.append(dict(project=project, pytorch=pytorch,
                         summary={s: summarize(run) for s, run in
                                  (('project', project), ('pytorch', pytorch))}))
      p, t = rounds[-1]['summary']['project'], rounds[-1]['summary']['pytorch']
      print(f'round {r + 1}: project {p["examples_per_s"]:.2f} ex/s, pytorch '
            f'{t["examples_per_s"]:.2f} ex/s, ratio {p["examples_per_s"] / t["examples_per_s"]:.2f}',
            flush=True)
  _check_same_examples(rounds[0], schedule)
  ratios = [r['summary']['project']['examples_per_s'] / r['summary']['pytorch']['examples_per_s']
            for r in rounds]
  median = rounds[sorted(range(len(rounds)), key=lambda i: ratios[i])[len(rounds) // 2]]
  result = dict(kind='compare', size=args.size, batch_rows=args.batch, steps=args.steps,
                lengths=lengths(args), stats_period=args.stats_period, rounds=rounds,
                ratios=ratios, median_round=median['summary'], machine=machine())
  print_table(result)
  return result


def _check_same_examples(round_: dict, schedule) -> None:
  want = sum(len(step) for step in schedule)
  tokens = sum(len(t) for step in schedule for _, t in step)
  for stack in ('project', 'pytorch'):
    s = round_['summary'][stack]
    if (int(s['examples']), int(s['target_tokens'])) != (want, tokens):
      raise AssertionError(f'{stack} saw {s["examples"]} examples / {s["target_tokens"]} target '
                           f'tokens; the schedule has {want} / {tokens}')
  print(f'same data: {want} examples, {tokens} target tokens on both sides', flush=True)


def print_table(result: dict) -> None:
  m = result['median_round']
  print(f'\nT5 1.1 {result["size"]}, {result["steps"]} steps of {result["batch_rows"]} packed rows '
        f'({result["lengths"]}), median of {len(result["rounds"])} rounds')
  header = ('stack', 'examples/s', 'tgt tok/s', 's/1000 ex', 'peak RSS GiB', 'start-up s',
            'final loss')
  print('  '.join(f'{h:>12}' for h in header))
  for stack in ('project', 'pytorch'):
    s = m[stack]
    cells = (stack, f'{s["examples_per_s"]:.2f}', f'{s["target_tokens_per_s"]:.0f}',
             f'{s["s_per_1000_examples"]:.1f}', f'{s["peak_rss_gib"]:.2f}',
             f'{s["startup_s"]:.1f}', f'{s["final_loss"]:.4f}')
    print('  '.join(f'{c:>12}' for c in cells))
  ratio = m['project']['examples_per_s'] / m['pytorch']['examples_per_s']
  print(f'ratio (project/pytorch examples/s): {ratio:.2f}', flush=True)


# ------------------------------------------------------------------ scaling


def scaling_grid(args) -> dict:
  """Lengths at a fixed batch, and batches at a fixed length (input = target length)."""
  if args.smoke:
    return dict(batch=2, lengths=(16, 32), length=16, batches=(2, 4))
  return dict(batch=8, lengths=(64, 128, 256, 512), length=64, batches=(2, 4, 8, 16, 32))


def grid_points(grid: dict) -> list[tuple[int, int]]:
  """(batch, length) pairs of the grid, each once."""
  points = [(grid['batch'], n) for n in grid['lengths']]
  return points + [(b, grid['length']) for b in grid['batches'] if (b, grid['length']) not in points]


def synthetic_examples(batch: int, length: int, vocab: int, seed: int = 0):
  """int64 arrays [batch, length] of inputs and targets with no padding (EOS last)."""
  import numpy as np
  rng = np.random.RandomState(seed)
  inputs = rng.randint(2, vocab, (batch, length))
  targets = rng.randint(2, vocab, (batch, length))
  inputs[:, -1] = targets[:, -1] = 1
  return inputs, targets


def scaling_worker(args) -> None:
  """Median step time of one stack over the grid; JSON to --worker_out."""
  results = []
  timed = 2 if args.smoke else 3
  for batch, length in grid_points(scaling_grid(args)):
    step = (_project_step if args.worker == 'project-scaling' else _pytorch_step)(
        args, batch, length)
    step()  # compile / warm up
    times = []
    for _ in range(timed):
      start = time.perf_counter()
      step()
      times.append(time.perf_counter() - start)
    results.append(dict(batch=batch, length=length, step_s=statistics.median(times)))
    print(results[-1], flush=True)
  from t5x import fs_utils
  fs_utils.write_atomic(args.worker_out, json.dumps(results))


def _project_step(args, batch: int, length: int):
  """The trainer's own jitted step (what `t5x train` runs) on one synthetic batch."""
  import jax
  import numpy as np
  from t5x import models
  from t5x import optimizers
  from t5x import partitioning
  from t5x import trainer
  from t5x.examples.t5.network import Transformer
  cfg = project_config(args.size)
  model = models.EncoderDecoderModel(Transformer(cfg), optimizer_def=optimizers.adafactor())
  tr = trainer.Trainer(model=model, partitioner=partitioning.PjitPartitioner(num_partitions=1),
                       learning_rate_fn=lambda step: LEARNING_RATE)
  state = [tr.init_state(jax.random.PRNGKey(0))]
  inputs, targets = synthetic_examples(batch, length, cfg.vocab_size)
  decoder_inputs = np.concatenate([np.zeros((batch, 1), np.int64), targets[:, :-1]], 1)
  data = {k: v.astype(np.int32) for k, v in dict(
      encoder_input_tokens=inputs, decoder_input_tokens=decoder_inputs,
      decoder_target_tokens=targets, decoder_loss_weights=np.ones_like(targets)).items()}
  rng = jax.random.PRNGKey(1)

  def step():
    state[0], metrics = tr.train_step(state[0], data, rng)
    jax.block_until_ready(metrics)
  return step


def _pytorch_step(args, batch: int, length: int):
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration(hf_config(args.size)).train()
  optimizer = pytorch_adafactor(model)
  inputs, targets = synthetic_examples(batch, length, model.config.vocab_size)
  inputs, targets = torch.from_numpy(inputs), torch.from_numpy(targets)
  mask = torch.ones_like(inputs)

  def step():
    model(input_ids=inputs, attention_mask=mask, labels=targets).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
  return step


def scaling(args) -> dict:
  with tempfile.TemporaryDirectory(prefix='bench_scaling_') as work:
    stacks = {}
    for stack in ('project', 'pytorch'):
      out = os.path.join(work, f'{stack}.json')
      command = [sys.executable, os.path.abspath(__file__), '--worker', f'{stack}-scaling',
                 '--worker_out', out, '--size', args.size] + (['--smoke'] if args.smoke else [])
      run_child(command, os.path.join(work, f'{stack}.log'), child_env(args))
      with open(out) as f:
        stacks[stack] = json.load(f)
  rows = []
  print(f'\nscaling, T5 1.1 {args.size}: step time (s), input = target length, no padding')
  print(f'{"batch":>6} {"length":>7} {"project":>9} {"pytorch":>9} {"ratio":>7}')
  for p, t in zip(stacks['project'], stacks['pytorch']):
    ratio = t['step_s'] / p['step_s']
    rows.append(dict(batch=p['batch'], length=p['length'], project_s=p['step_s'],
                     pytorch_s=t['step_s'], ratio=ratio))
    print(f'{p["batch"]:>6} {p["length"]:>7} {p["step_s"]:>9.3f} {t["step_s"]:>9.3f} {ratio:>7.2f}')
  print('ratio = pytorch step time / project step time (above 1: the project is faster)',
        flush=True)
  return dict(kind='scaling', size=args.size, grid=scaling_grid(args), rows=rows,
              machine=machine())


# ------------------------------------------------------------------ output


def machine() -> dict:
  import jax
  import torch
  import transformers
  return dict(date=datetime.datetime.now().isoformat(timespec='minutes'),
              host=platform.node(), cpu=_cpu_name(), cores=os.cpu_count(),
              python=platform.python_version(), jax=jax.__version__, torch=torch.__version__,
              transformers=transformers.__version__,
              load_average=os.getloadavg()[0])


def _cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def child_env(args) -> dict:
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'),
             TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
  if args.data:
    env['COPOET_DATA_DIR'] = os.path.abspath(args.data)
  return env


def plot(result: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from t5x import fs_utils
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  if result['kind'] == 'compare':
    _plot_throughput(axes[0], os.path.dirname(path), result)
    round_ = result['rounds'][0]
    for stack, color in zip(STACKS, COLORS):
      seen, xs, ys = 0, [], []
      for w in round_[stack]['windows']:
        seen += w['examples']
        xs.append(seen)
        ys.append(w['loss'])
      axes[1].plot(xs, ys, marker='o', color=color, label=stack)
    axes[1].set_xlabel('examples seen')
    axes[1].set_ylabel('train cross-entropy per target token')
    axes[1].set_title(f'T5 1.1 {result["size"]}: loss against examples (same steps)')
    axes[1].legend()
  else:
    grid, rows = result['grid'], result['rows']
    series = ((axes[0], 'length', [r for r in rows if r['batch'] == grid['batch']],
               f'batch {grid["batch"]}'),
              (axes[1], 'batch', [r for r in rows if r['length'] == grid['length']],
               f'length {grid["length"]}'))
    for ax, key, picked, fixed in series:
      picked = sorted(picked, key=lambda r: r[key])
      for stack, color in zip(STACKS, COLORS):
        ax.plot([r[key] for r in picked], [r[f'{stack}_s'] for r in picked], marker='o',
                color=color, label=stack)
      ax.set_xscale('log', base=2)
      ax.set_yscale('log')
      ax.set_xlabel(f'{key} ({fixed}; input = target length, no padding)')
      ax.set_ylabel('train step time (s)')
      ax.set_title(f'T5 1.1 {result["size"]}: step time against {key}')
      ax.legend()
  for ax in axes:
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fs_utils.write_figure(path, fig)


def _plot_throughput(ax, folder: str, result: dict) -> None:
  """Bars of steady-state examples/s by stack, for every size compared in `folder`."""
  import numpy as np
  by_size = {result['size']: result['median_round']}
  for size in SIZES:
    path = os.path.join(folder, f'train_compare_{size}.json')
    if size not in by_size and os.path.isfile(path):
      with open(path) as f:
        by_size[size] = json.load(f)['median_round']
  sizes = [s for s in SIZES if s in by_size]
  x = np.arange(len(sizes))
  for i, (stack, color) in enumerate(zip(STACKS, COLORS)):
    ax.bar(x + (i - 0.5) * 0.4, [by_size[s][stack]['examples_per_s'] for s in sizes], 0.4,
           color=color, label=stack)
  ax.set_xticks(x, [f'T5 1.1 {s}' for s in sizes])
  ax.set_ylabel('examples/s (steady state)')
  ax.set_title('training throughput by stack and size')
  ax.legend()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', choices=sorted(SIZES), default='small')
  parser.add_argument('--steps', type=int, default=40)
  parser.add_argument('--batch', type=int, default=8, help='packed rows per step')
  parser.add_argument('--inputs_length', type=int, default=64)
  parser.add_argument('--targets_length', type=int, default=64)
  parser.add_argument('--stats_period', type=int, default=10)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--data', help='a CoPoet data folder (train.json); default the sample')
  parser.add_argument('--scaling', action='store_true')
  parser.add_argument('--smoke', action='store_true', help='tiny model, a few steps')
  parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'results'))
  parser.add_argument('--tag', default='', help='appended to the result files\' names')
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  parser.add_argument('--init', help=argparse.SUPPRESS)
  parser.add_argument('--schedule', help=argparse.SUPPRESS)
  parser.add_argument('--worker_out', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker == 'pytorch':
    return pytorch_worker(args)
  if args.worker:
    return scaling_worker(args)
  if args.data:  # the driver reads the pipeline too, for the PyTorch side's steps
    os.environ['COPOET_DATA_DIR'] = os.path.abspath(args.data)
  if args.smoke:
    args.size, args.steps, args.batch, args.stats_period, args.rounds = 'tiny', 4, 4, 2, 1
    args.inputs_length, args.targets_length = 32, 24
  result = scaling(args) if args.scaling else compare(args)
  os.makedirs(args.out, exist_ok=True)
  name = f'train_{"scaling" if args.scaling else "compare"}_{args.size}'
  name += f'_{args.tag}' if args.tag else ''
  from t5x import fs_utils
  fs_utils.write_atomic(os.path.join(args.out, f'{name}.json'), json.dumps(result, indent=1))
  plot(result, os.path.join(args.out, f'{name}.png'))
  print(f'wrote {os.path.join(args.out, name)}.json and .png')


if __name__ == '__main__':
  main()
