"""What a run shows and leaves behind: a live progress line, TensorBoard events,
`metrics.jsonl`, and a loss plot at the end. Only process 0 writes."""
import json
import os
import time
from typing import Optional

import jax

from t5x_engine import fs_utils


class MetricsWriter:
  """Progress line (step/total, loss, learning rate, steps/s, tokens/s, ETA) and files.

  TensorBoard events go to MODEL_DIR/train and MODEL_DIR/training_eval (as in T5X);
  every record is also one JSON line in MODEL_DIR/metrics.jsonl.
  """

  def __init__(self, model_dir: str, start_step: int, total_steps: int, show_progress: bool = True):
    self.model_dir = model_dir
    self.enabled = jax.process_index() == 0
    self._writers = {}
    self._tokens = 0.0
    self._examples = 0.0
    self._last = (time.time(), start_step)
    self._bar = None
    if self.enabled and show_progress:
      from tqdm.auto import tqdm
      self._bar = tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True,
                       desc='train', smoothing=0.1)
    self._jsonl = _JsonLines(os.path.join(model_dir, 'metrics.jsonl')) if self.enabled else None

  def _writer(self, split: str):
    if split not in self._writers:
      from tensorboardX import SummaryWriter
      self._writers[split] = SummaryWriter(os.path.join(self.model_dir, split))
    return self._writers[split]

  def advance(self, steps: int, target_tokens: float, examples: float = 0.0) -> None:
    """Counts steps, non-padding target tokens and examples for the rates since the last
    train record (examples: packed rows hold several)."""
    self._tokens += target_tokens
    self._examples += examples
    if self._bar is not None:
      self._bar.update(steps)

  def write(self, step: int, split: str, scalars: dict) -> dict:
    """Records scalars for `step`; for 'train' also the rates since the last record."""
    scalars = {k: float(v) for k, v in scalars.items()}
    if split == 'train':
      now = time.time()
      elapsed = max(now - self._last[0], 1e-9)
      scalars['steps_per_sec'] = (step - self._last[1]) / elapsed
      scalars['target_tokens_per_sec'] = self._tokens / elapsed
      scalars['examples_per_sec'] = self._examples / elapsed
      scalars['window_sec'] = elapsed
      self._last, self._tokens, self._examples = (now, step), 0.0, 0.0
    if not self.enabled:
      return scalars
    writer = self._writer(split)
    for name, value in scalars.items():
      writer.add_scalar(name, value, step)
    self._jsonl.append({'step': step, 'split': split, **scalars})
    if self._bar is not None and split == 'train':
      self._bar.set_postfix_str(
          f"loss={scalars.get('loss_per_token', float('nan')):.4f} "
          f"lr={scalars.get('learning_rate', float('nan')):.2e} "
          f"tok/s={scalars['target_tokens_per_sec']:.0f}")
    elif split != 'train':
      self.log(f'step {step} {split}: ' + ', '.join(f'{k}={v:.4f}' for k, v in scalars.items()))
    return scalars

  def log(self, message: str) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(message)
    else:
      print(message, flush=True)

  def close(self) -> Optional[str]:
    """Flushes everything and draws the loss plot; returns the plot's path."""
    if not self.enabled:
      return None
    if self._bar is not None:
      self._bar.close()
    for writer in self._writers.values():
      writer.close()
    self._jsonl.close()
    return plot_losses(self.model_dir)


class _JsonLines:
  """metrics.jsonl, appended line by line locally. Buckets cannot append, so there the
  file is rewritten whole (atomically) at each record: small, and never torn."""

  def __init__(self, path: str):
    self.path = path
    self._remote = fs_utils.is_remote(path)
    if self._remote:
      from etils import epath
      existing = epath.Path(path)
      self._text = existing.read_text() if existing.exists() else ''
    else:
      self._file = open(path, 'a')

  def append(self, record: dict) -> None:
    line = json.dumps(record) + '\n'
    if self._remote:
      self._text += line
      fs_utils.write_atomic(self.path, self._text)
    else:
      self._file.write(line)
      self._file.flush()

  def close(self) -> None:
    if not self._remote:
      self._file.close()


def plot_losses(model_dir: str) -> Optional[str]:
  """MODEL_DIR/loss.png: train (and eval) per-token loss against step, from metrics.jsonl."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from etils import epath
  series = {}
  for line in epath.Path(model_dir, 'metrics.jsonl').read_text().splitlines():
    record = json.loads(line)
    if 'loss_per_token' in record:
      series.setdefault(record['split'], []).append((record['step'], record['loss_per_token']))
  if not series:
    return None
  fig, ax = plt.subplots(figsize=(7, 4))
  for split, points in sorted(series.items()):
    points.sort()
    ax.plot([p[0] for p in points], [p[1] for p in points], marker='.' if split != 'train' else None,
            label=split)
  ax.set_xlabel('step')
  ax.set_ylabel('loss per target token')
  ax.set_title(os.path.basename(os.path.normpath(model_dir)))
  ax.grid(alpha=0.3)
  ax.legend()
  path = os.path.join(model_dir, 'loss.png')
  fig.tight_layout()
  fs_utils.write_figure(path, fig)
  return path
