"""`t5x infer`: decode a task's split or a file of prompts into JSON Lines.

Each output line is `{"inputs", "prediction"}`, plus `"targets"` when the task knows
them, `"score"` (the summed log-probability of the prediction) when asked, the example's
id (`id`, `instance_id`) so that the seeds' scorers can join on it, and any other field
of a prompts file's line (a haiku's `topic`, ...).

With `num_runs` > 1 each run decodes with its own seed (CoPoet reports the mean of 5
sampled runs). Runs are written to `<name>.partial` and renamed when complete; an
interrupted run continues after its last complete line, with the same seeds, so the
finished file equals an uninterrupted one.
"""
import dataclasses
import json
import os
import sys
from typing import Optional, Sequence

import jax
import numpy as np

from t5x import data
from t5x import decoding
from t5x import fs_utils
from t5x import launch
from t5x import loader
from t5x import run_checks
from t5x.examples.t5.network import Transformer


def infer(*, checkpoint_path: str, output_dir: str, mixture_or_task_name: Optional[str] = None,
          task_feature_lengths: Optional[dict] = None, split: str = 'test',
          prompts_file: Optional[str] = None, batch_size: int = 32,
          decode_options: decoding.DecodeOptions = decoding.DecodeOptions(),
          num_runs: int = 1, with_scores: bool = False, show_progress: bool = True,
          param_dtype: Optional[str] = None) -> list[str]:
  """Decodes and writes one JSON Lines file per run; returns their paths.

  Give either a SeqIO task or mixture (`mixture_or_task_name`, `task_feature_lengths`,
  `split`) or `prompts_file` (JSON Lines with "inputs" / "prompt" / "instruction", or
  plain text, one prompt per line). `param_dtype='bfloat16'` halves parameter memory.
  """
  if (mixture_or_task_name is None) == (prompts_file is None):
    raise ValueError('give MIXTURE_OR_TASK_NAME or infer.prompts_file (exactly one)')
  if mixture_or_task_name is not None:
    run_checks.check_feature_lengths(task_feature_lengths)
  if jax.process_count() > 1:
    raise ValueError('t5x infer runs in one process (it decodes on this host\'s devices); '
                     'start it without the multi-host flags, on one worker.')
  model = loader.load(checkpoint_path, param_dtype)
  sources = []  # (file name, examples, encode, detokenize)
  if prompts_file:
    sources.append((os.path.splitext(os.path.basename(prompts_file))[0],
                    data.prompt_examples(prompts_file),
                    lambda rows: model.encode_texts([r['inputs'] for r in rows]),
                    model.decode_tokens))
  else:
    data.bind_task_vocabulary(model.vocabulary_path, model.config.vocab_size,
                              _run_config(model))
    for task in data.tasks_with_split(mixture_or_task_name, split):
      examples, vocab = data.eval_examples(task, task_feature_lengths, split)
      sources.append((f'{task}-{split}', examples,
                      lambda rows: _pad([r['input_tokens'] for r in rows]),
                      lambda tokens, vocab=vocab: vocab.decode(loader.until_eos(tokens))))
  os.makedirs(output_dir, exist_ok=True)
  paths = []
  for name, examples, encode, detok in sources:
    for run in range(num_runs):
      suffix = f'-run{run + 1}' if num_runs > 1 else ''
      path = os.path.join(output_dir, f'{name}{suffix}.jsonl')
      _decode_run(model, examples, encode, detok, path, batch_size, decode_options, run,
                  with_scores, show_progress)
      paths.append(path)
  return paths


def _decode_run(model, examples, encode, detok, path, batch_size, options, run, with_scores,
                show_progress):
  if os.path.exists(path):
    return  # finished earlier
  partial = path + '.partial'
  done = _complete_lines(partial)
  bar = None
  if show_progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(examples), initial=done, unit='ex', desc=os.path.basename(path))
  module = Transformer(model.config)
  with fs_utils.open_append(partial) as out:
    for start in range(done - done % batch_size, len(examples), batch_size):
      rows = examples[start:start + batch_size]
      # The seed depends on (run, batch) only, so a resumed run repeats the same draws.
      seeded = dataclasses.replace(options, seed=options.seed + 1_000_003 * run + start)
      tokens, scores = decoding.generate(module, model.params, encode(rows), seeded)
      tokens, scores = np.asarray(tokens)[:, 0], np.asarray(scores)[:, 0]
      for offset, row in enumerate(rows):
        if start + offset < done:
          continue
        record = {'inputs': row['inputs'], 'prediction': detok(tokens[offset])}
        if row.get('targets') is not None:
          record['targets'] = row['targets']
        if with_scores:
          record['score'] = float(scores[offset])
        record.update({k: v for k, v in row.items()
                       if k not in ('inputs', 'targets', 'input_tokens', 'prediction', 'score')})
        out.write(json.dumps(record, ensure_ascii=False) + '\n')
      out.flush()
      if bar is not None:
        bar.update(len(rows) - max(0, done - start))
  if bar is not None:
    bar.close()
  fs_utils.finish(partial, path)  # fsynced, then renamed: the final name means complete


def _run_config(model: loader.Loaded) -> str:
  """The config.gin of the training run that wrote `model`'s checkpoint."""
  return os.path.join(os.path.dirname(os.path.abspath(model.source)), 'config.gin')


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
