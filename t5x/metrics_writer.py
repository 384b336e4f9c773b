"""What a run shows and leaves behind: a live progress line, TensorBoard events,
`metrics.jsonl`, and a loss plot at the end. Only process 0 writes."""
import contextlib
import json
import logging
import os
import time
from typing import Optional

import jax

from t5x import fs_utils


class MetricsWriter:
  """Progress line (step/total, loss, learning rate, steps/s, tokens/s, ETA) and files.

  TensorBoard events go to MODEL_DIR/train and MODEL_DIR/training_eval (as in T5X);
  every record is also one JSON line in MODEL_DIR/metrics.jsonl.
  """

  def __init__(self, model_dir: str, start_step: int, total_steps: int, show_progress: bool = True):
    self.model_dir = model_dir
    self.enabled = jax.process_index() == 0
    self._start = start_step
    self._writers = {}
    self._tokens = 0.0
    self._examples = 0.0
    self._last = (time.time(), start_step)
    self._bar = None
    self.records = []  # metrics.jsonl as kept for this run (process 0 only)
    if self.enabled and show_progress:
      from tqdm.auto import tqdm
      self._bar = tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True,
                       desc='train', smoothing=0.1)
    if self.enabled:
      path = os.path.join(model_dir, 'metrics.jsonl')
      self.records = _resume_records(path, start_step)
      _remove_empty_event_files(model_dir)
      self._jsonl = _JsonLines(path)
    else:
      self._jsonl = None

  def has(self, step: int, split: str) -> bool:
    """Whether metrics.jsonl holds a `split` record for `step` (process 0's view)."""
    return any(r['step'] == step and r['split'] == split for r in self.records)

  def last_value(self, step: int, split: str, key: str, default: float = 0) -> float:
    """`key` of the last `split` record at or before `step` (process 0's view), else
    `default`."""
    values = [r[key] for r in self.records if r['split'] == split and r['step'] <= step
              and key in r]
    return values[-1] if values else default

  def _writer(self, split: str):
    # Created at the first record, so a run killed before writing leaves no empty file.
    if split not in self._writers:
      logdir = os.path.join(self.model_dir, split)
      with _naming(logdir):
        self._writers[split] = EventFile(logdir,
                                          purge_step=self._start + 1 if self._start else None)
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
    record = {'step': step, 'split': split, **scalars}
    self._jsonl.append(record)
    self.records.append(record)
    self._writer(split).write(step, scalars)
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

  def close(self, plot: bool = True) -> Optional[str]:
    """Flushes everything and draws the loss plot; returns the plot's path."""
    if not self.enabled:
      return None
    if self._bar is not None:
      self._bar.close()
    for writer in self._writers.values():
      writer.close()
    self._writers = {}
    self._jsonl.close()
    return plot_losses(self.model_dir) if plot else None


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
      self._file = fs_utils.open_append(path)

  def append(self, record: dict) -> None:
    line = json.dumps(record) + '\n'
    with _naming(self.path):
      if self._remote:
        self._text += line
        fs_utils.write_atomic(self.path, self._text)
      else:
        self._file.write(line)
        self._file.flush()

  def close(self) -> None:
    if not self._remote:
      self._file.close()


@contextlib.contextmanager
def _naming(path: str):
  """Adds the file's path to an OSError that lacks it (a full disk: 'No space left...')."""
  try:
    yield
  except OSError as e:
    if e.filename is None and e.errno is not None:
      raise OSError(e.errno, e.strerror or str(e), path) from e
    raise


def _resume_records(path: str, start_step: int) -> list:
  """The records of metrics.jsonl that a run resuming at `start_step` keeps, after
  rewriting the file (atomically) to hold just those.

  Steps after `start_step` are dropped: the resumed run does them again, so each step
  keeps one record per split, the last run's. Earlier duplicates (files from before this
  rule) keep their last record, and a line torn by a kill is dropped with a warning.
  """
  from etils import epath
  file = epath.Path(path)
  if not file.exists():
    return []
  text = file.read_text()
  kept = {}
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      key = (int(record['step']), record['split'], tuple(sorted(record)))
    except (ValueError, KeyError, TypeError) as e:
      logging.warning('%s:%d: dropped an unreadable record (%s), probably torn by a kill.',
                      path, number, e)
      continue
    if key[0] <= start_step:
      kept.pop(key, None)  # a re-run's record replaces the earlier one, in its own place
      kept[key] = record
  records = list(kept.values())
  new_text = ''.join(json.dumps(r) + '\n' for r in records)
  if new_text != text:
    fs_utils.write_atomic(path, new_text)
  return records


def _remove_empty_event_files(model_dir: str) -> None:
  """Deletes zero-byte TensorBoard event files (a run killed before its first flush)."""
  from etils import epath
  folder = epath.Path(model_dir)
  if not folder.is_dir():
    return
  for split in folder.iterdir():
    if split.is_dir() and not split.name.startswith('checkpoint_'):
      for events in split.glob('events.out.tfevents.*'):
        if events.is_file() and events.stat().length == 0:
          events.unlink()


class EventFile:
  """A TensorBoard event file written synchronously, record by record.

  tensorboardX's SummaryWriter writes from a thread through a bounded queue: when that
  thread dies (a full disk), the next writes block forever. Here a write error is raised
  in the training loop instead. A resumed run starts with a purge marker, so TensorBoard
  hides the earlier run's events from the resume step on.
  """

  def __init__(self, logdir: str, purge_step: Optional[int] = None, suffix: str = ''):
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto import event_pb2
    from etils import epath
    epath.Path(logdir).mkdir(parents=True, exist_ok=True)
    self._event_pb2 = event_pb2
    # The pid (and `suffix`) keep two writers started within the same second from sharing
    # (truncating) a file.
    self._events = EventsWriter(os.path.join(logdir, 'events'), f'.{os.getpid()}{suffix}')
    if purge_step is not None:
      self._events.write_event(event_pb2.Event(
          step=purge_step, wall_time=time.time(),
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self._events.flush()

  def write(self, step: int, scalars: dict) -> None:
    from tensorboardX.summary import scalar
    now = time.time()
    with _naming(self._events._file_name):
      for name, value in scalars.items():
        self._events.write_event(self._event_pb2.Event(wall_time=now, step=step,
                                                       summary=scalar(name, value)))
      self._events.flush()

  def close(self) -> None:
    self._events.close()


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
