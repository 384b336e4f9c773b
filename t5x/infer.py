"""`t5x infer`: decode (or score) a task's split or a file of prompts into JSON Lines.

T5X's `infer` surface: the arguments of T5X's `runs/infer.gin` (`mode`, `model`,
`dataset_cfg`, `restore_checkpoint_cfg`, `partitioner`, `checkpoint_period`, `shard_id`,
`num_shards`, ...) and T5X's output names: `{task}-{mode}.jsonl-{shard:05}-of-{shards:05}`
in OUTPUT_DIR, then `<name>.COMPLETED` once that file is whole. With no `model` (this
project's `runs/infer.gin`), the network is the one the checkpoint describes.

Modes (T5X's): 'predict' writes the decode (`"prediction"`); 'score' the summed
log-likelihood of the example's targets (`"score"`, teacher-forced); 'predict_with_aux'
both the decode and its `"aux": {"scores": ...}` (the decode's log-probability).
Each line also holds `"inputs"` (the text), `"targets"` when known, the example's id
(`id`, `instance_id`) so that the seeds' scorers can join on it, and any other field of a
prompts file's line (a haiku's `topic`, ...). T5X puts the pretokenized features under
"inputs" instead; this project's scorers read the flat layout.

With `num_runs` > 1 each run decodes with its own seed (CoPoet reports the mean of 5
sampled runs), into `...-run<k>...`. A file is appended to `<name>.partial` batch by
batch, synced to disk every `checkpoint_period` batches, and renamed when complete; an
interrupted run continues after its last complete line, with the same seeds, so the
finished file equals an uninterrupted one.
"""
import contextlib
import dataclasses
import json
import os
import sys
from typing import Any, Callable, Optional, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from t5x import data
from t5x import decoding
from t5x import fs_utils
from t5x import gin_utils
from t5x import launch
from t5x import loader
from t5x import models
from t5x import run_checks
from t5x import script_args
from t5x import utils
from t5x.examples.t5.network import Transformer

MODES = ('predict', 'score', 'predict_with_aux')
COMPLETED = '.COMPLETED'  # T5X's marker beside a finished output file
# infer.verify_matching_vocabs_fn's default: check, as T5X's utils.verify_matching_vocabs
# does, that the model's vocabulary is the task's; None skips the check, as in T5X.
VERIFY_VOCABULARIES = 'verify'


@dataclasses.dataclass
class _Source:
  """One output file's worth of examples and how to turn them into tokens and text."""
  name: str  # task name or the prompts file's stem
  examples: list
  encode: Callable  # rows -> int32 [b, l] encoder tokens
  encode_targets: Callable  # rows -> int32 [b, l] target tokens (ending in EOS)
  detokenize: Callable  # int token ids -> text


def infer(*, output_dir: str, mode: str = 'predict', model: Any = None,
          dataset_cfg: Optional[utils.DatasetConfig] = None,
          restore_checkpoint_cfg: Optional[utils.RestoreCheckpointConfig] = None,
          partitioner: Any = None, checkpoint_period: int = 100, shard_id: int = 0,
          num_shards: int = 1, prompts_file: Optional[str] = None,
          decode_options: decoding.DecodeOptions = decoding.DecodeOptions(),
          num_runs: int = 1, show_progress: bool = True, file_extension: str = 'jsonl',
          output_vocab_feature_name: str = 'targets',
          summarize_config_fn: Optional[Callable[..., Any]] = gin_utils.summarize_gin_config,
          verify_matching_vocabs_fn: Any = VERIFY_VOCABULARIES,
          fallback_init_rng: Optional[int] = None,
          merge_chunked_results: bool = True, write_fn: Any = None, merge_fn: Any = None,
          checkpoint_ds_iter: bool = True, train_state_initializer_cls: Any = None,
          keep_aux_as_numpy: bool = False, use_orbax: bool = True) -> list[str]:
  """Decodes (or scores) and writes one JSON Lines file per task and run; returns their
  paths.

  Give either a SeqIO task or mixture in `dataset_cfg` (name, TASK_FEATURE_LENGTHS,
  split, batch_size) or `prompts_file` (JSON Lines with "inputs" / "prompt" /
  "instruction", and "targets" to score; or plain text, one prompt per line; batched by
  `dataset_cfg.batch_size`, else 32). `restore_checkpoint_cfg.dtype='bfloat16'` halves
  parameter memory. `partitioner` (T5X's `PjitPartitioner`) decodes on its mesh with the
  parameters sharded as in training; None decodes on the default device. `shard_id` of
  `num_shards` decodes that SeqIO shard (every
  `num_shards`-th prompt of a file). `fallback_init_rng` with
  `restore_checkpoint_cfg.fallback_to_scratch` decodes with `model`'s random weights when
  the checkpoint is missing (as T5X). The T5X arguments after it are accepted; those
  given with a value that has no effect here are named in one warning.
  """
  if mode not in MODES:
    raise ValueError(f'infer.mode={mode!r}; use one of {MODES}')
  if not 0 <= shard_id < num_shards:
    raise ValueError(f'infer.shard_id={shard_id} with infer.num_shards={num_shards}: use '
                     '0 <= shard_id < num_shards')
  task_name = dataset_cfg.mixture_or_task_name if dataset_cfg is not None else None
  if (task_name is None) == (prompts_file is None):
    raise ValueError('give MIXTURE_OR_TASK_NAME or infer.prompts_file (exactly one)')
  if task_name is not None:
    run_checks.check_feature_lengths(dataset_cfg.task_feature_lengths)
  if mode == 'score' and num_runs != 1:
    raise ValueError(f"infer.mode='score' with num_runs={num_runs}: scoring draws nothing, "
                     'so every run would be the same; use num_runs=1')
  if restore_checkpoint_cfg is not None and restore_checkpoint_cfg.mode == 'all':
    raise ValueError("utils.RestoreCheckpointConfig.mode='all': t5x infer reads one "
                     "checkpoint; use 'specific' or 'latest' (t5x eval reads them all)")
  script_args.warn_inert('infer', _inert(locals()))
  writer = jax.process_index() == 0  # every process decodes; process 0 writes
  if summarize_config_fn is not None and shard_id == 0 and writer:
    summarize_config_fn(model_dir=output_dir, summary_writer=None, step=0)
  partitioner = script_args.mesh_for(partitioner)
  loaded = _load(model, restore_checkpoint_cfg, fallback_init_rng, partitioner)
  batch_size = dataset_cfg.batch_size if dataset_cfg is not None else 32
  module = Transformer(loaded.config)
  decoding.check_mesh(module, partitioner or decoding.one_device(), batch_size,
                      't5x infer (utils.DatasetConfig.batch_size)')
  sources = _sources(loaded, model, dataset_cfg, prompts_file, (shard_id, num_shards),
                     output_vocab_feature_name, verify_matching_vocabs_fn)
  # Placed once for every task and run (T5X's runs/infer.gin gives a partitioner); a
  # checkpoint restored onto the mesh is there already.
  params = loaded.params
  if partitioner is not None:
    params = decoding.place_params(module, params, partitioner)
  if writer:
    os.makedirs(output_dir, exist_ok=True)
  paths = []
  for source in sources:
    for run in range(num_runs):
      suffix = f'-run{run + 1}' if num_runs > 1 else ''
      path = os.path.join(output_dir, f'{source.name}-{mode}{suffix}.{file_extension}'
                                      f'-{shard_id:05}-of-{num_shards:05}')
      _decode_run(module, params, partitioner, source, path, mode, batch_size,
                  decode_options, run, max(1, checkpoint_period), show_progress and writer)
      paths.append(path)
  return paths


def _inert(args: dict) -> list[str]:
  """T5X's infer arguments given with a value that has no effect here."""
  inert = script_args.common_inert(args['dataset_cfg'], args['use_orbax'])
  if not args['merge_chunked_results']:
    inert.append('merge_chunked_results=False (each shard is written as one file)')
  for name in ('write_fn', 'merge_fn', 'train_state_initializer_cls'):
    if args[name] is not None:
      inert.append(f'{name} (the output is written as the module docstring says)')
  if not args['checkpoint_ds_iter']:
    inert.append('checkpoint_ds_iter=False (an interrupted run always resumes)')
  if args['keep_aux_as_numpy']:
    inert.append('keep_aux_as_numpy (aux values are written as JSON numbers)')
  return inert


def _load(model, restore_cfg, fallback_init_rng, partitioner) -> loader.Loaded:
  path = script_args.restore_path(restore_cfg, 't5x infer')
  try:
    return script_args.load_model(path, restore_cfg.dtype, model, partitioner)
  except FileNotFoundError:
    if not restore_cfg.fallback_to_scratch:
      raise
    if fallback_init_rng is None or model is None:
      raise ValueError(f'{path}: no checkpoint, and RestoreCheckpointConfig.fallback_to_scratch '
                       'needs infer.fallback_init_rng (a seed) and a gin MODEL to draw '
                       'random weights from') from None
  params = model.init_params(jax.random.PRNGKey(fallback_init_rng))
  logging.warning('%s holds no checkpoint; decoding with random weights (fallback_to_scratch, '
                  'seed %d)', path, fallback_init_rng)
  cfg = dataclasses.replace(model.module.config, scan_layers=False, remat_policy='none')
  vocab = getattr(model.input_vocabulary, 'sentencepiece_model_file', None)
  return loader.Loaded(cfg, jax.device_get(params), vocab, path)


def _sources(loaded, model, dataset_cfg, prompts_file, shard, vocab_feature,
             verify_vocabs) -> list[_Source]:
  if prompts_file:
    rows = data.prompt_examples(prompts_file)[shard[0]::shard[1]]
    return [_Source(os.path.splitext(os.path.basename(prompts_file))[0], rows,
                    lambda rows: loaded.encode_texts([r['inputs'] for r in rows]),
                    lambda rows: loaded.encode_texts([_target_text(r, prompts_file)
                                                      for r in rows]),
                    loaded.decode_tokens)]
  if dataset_cfg.module:
    data.get_task(dataset_cfg)  # imports the module that registers the task
  script_args.bind_task_vocabulary(loaded)
  sources = []
  for task in data.tasks_with_split(dataset_cfg.mixture_or_task_name, dataset_cfg.split):
    examples, vocab = data.eval_examples(task, dataset_cfg.task_feature_lengths,
                                         dataset_cfg.split, shard, dataset_cfg.use_cached,
                                         vocab_feature)
    if verify_vocabs is not None:  # T5X's way to skip the check
      script_args.check_vocabulary(model, vocab, task)
    sources.append(_Source(task, examples,
                           lambda rows: _pad([r['input_tokens'] for r in rows]),
                           lambda rows, task=task: _pad([_target_tokens(r, task) for r in rows]),
                           lambda tokens, vocab=vocab: vocab.decode(loader.until_eos(tokens))))
  return sources


def _target_text(row: dict, where: str) -> str:
  if not isinstance(row.get('targets'), str):
    raise ValueError(f'{where}: infer.mode=\'score\' needs a "targets" string on every line; '
                     f'the line with inputs {row["inputs"][:60]!r} has none')
  return row['targets']


def _target_tokens(row: dict, task: str) -> list[int]:
  if not row.get('target_tokens'):
    raise ValueError(f"task {task!r}: infer.mode='score' needs targets; this split has none")
  return row['target_tokens']


def _decode_run(module, params, partitioner, source: _Source, path: str, mode: str,
                batch_size: int, options, run: int, sync_period: int,
                show_progress: bool) -> None:
  done = _resume_point(path)
  if done < 0:
    return  # finished earlier
  partial = path + '.partial'
  writer = jax.process_index() == 0
  bar = None
  if show_progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(source.examples), initial=done, unit='ex',
               desc=os.path.basename(path))
  with (fs_utils.open_append(partial) if writer else contextlib.nullcontext()) as out:
    for batch, start in enumerate(range(done - done % batch_size, len(source.examples),
                                        batch_size)):
      rows = source.examples[start:start + batch_size]
      if mode == 'score':
        outputs = _score(module, params, partitioner, source, rows)
      else:
        # The seed depends on (run, batch) only, so a resumed run repeats the same draws.
        seeded = dataclasses.replace(options, seed=options.seed + 1_000_003 * run + start)
        tokens, scores = decoding.generate(module, params, source.encode(rows), seeded,
                                           partitioner=partitioner)
        tokens, scores = tokens[:, 0], scores[:, 0]
        outputs = [{'prediction': source.detokenize(t)} for t in tokens]
        if mode == 'predict_with_aux':
          for output, score in zip(outputs, scores):
            output['aux'] = {'scores': float(score)}
      if not writer:
        continue
      for offset, (row, output) in enumerate(zip(rows, outputs)):
        if start + offset >= done:
          out.write(json.dumps(_record(row, output), ensure_ascii=False) + '\n')
      out.flush()
      if (batch + 1) % sync_period == 0:
        os.fsync(out.fileno())
      if bar is not None:
        bar.update(len(rows) - max(0, done - start))
  if bar is not None:
    bar.close()
  if writer:
    fs_utils.finish(partial, path)  # fsynced, then renamed: the final name means complete
    fs_utils.write_atomic(path + COMPLETED, '')


def _resume_point(path: str) -> int:
  """Lines of `path` already written by an interrupted run, or -1 when it is complete.
  Process 0 reads its files and tells the others, so every process decodes the same
  batches (each takes part in every decode's collectives)."""
  done = -1
  if jax.process_index() == 0:
    if os.path.exists(path) and not os.path.exists(path + COMPLETED):
      fs_utils.write_atomic(path + COMPLETED, '')  # renamed, then stopped before the marker
    if not os.path.exists(path + COMPLETED):
      done = _complete_lines(path + '.partial')
  if jax.process_count() > 1:
    done = int(multihost_utils.broadcast_one_to_all(np.int64(done)))
  return done


def _score(module, params, partitioner, source: _Source, rows: list) -> list[dict]:
  """[{'score': summed log-likelihood of the row's targets}] for one batch."""
  inputs, targets = source.encode(rows), source.encode_targets(rows)
  batch = {'encoder_input_tokens': inputs, 'decoder_target_tokens': targets,
           # teacher forcing: the decoder reads the targets shifted right behind a 0
           'decoder_input_tokens': np.pad(targets, ((0, 0), (1, 0)))[:, :-1]}
  return [{'score': float(s)} for s in models.score(module, params, batch, partitioner)]


def _record(row: dict, output: dict) -> dict:
  record = {'inputs': row['inputs'], **output}
  if row.get('targets') is not None:
    record['targets'] = row['targets']
  record.update({k: v for k, v in row.items()
                 if k not in ('inputs', 'targets', 'input_tokens', 'target_tokens')
                 and k not in record})
  return record


def _complete_lines(path: str) -> int:
  """Lines fully written to `path` by an earlier, interrupted run; a torn last line (the
  process died mid-write) is cut off so appending continues cleanly."""
  return fs_utils.cut_torn_line(path)


def _pad(rows: Sequence[Sequence[int]]) -> np.ndarray:
  length = max(8, -(-max(len(r) for r in rows) // 8) * 8)
  out = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`python -m t5x.infer --gin_file=FILE ...`: the flags, messages and exit codes of
  `t5x infer` (see t5x.launch)."""
  return launch.main('infer', argv)


if __name__ == '__main__':
  sys.exit(main())
