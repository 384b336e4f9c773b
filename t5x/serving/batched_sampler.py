"""Sampling for many concurrent users: pending requests decode together in one batch.

    sampler = serving.BatchedSampler(t5x.load(model_dir))
    future = sampler.submit("Write a metaphor about 'time'", rows=10, settings=Settings())
    future.result().texts   # 10 sampled texts

One worker thread owns the model. It takes the oldest pending request, then every other
pending request with the same decode length and n-gram rule (up to `max_rows` rows), and
decodes them as one `decoding.generate_sampled` call; requests that arrive during a
decode wait for the next one, so under load each decode holds whatever queued meanwhile.
Every sample is its own row with its own temperature, top-k and top-p, so requests with
different row counts and different sampling settings share a batch.

Shapes are fixed so that XLA compiles a handful of programs, not one per request:
encoder inputs are always `max_input_tokens` long and the row count is rounded up to a
power of two (>= 8); the sampling settings are arrays, not constants of the program, so
`warm_up` compiles every program the sampler will ever run. Padding rows are all-zero
inputs, which the decoder skips.
"""
import concurrent.futures
import dataclasses
import itertools
import logging
import queue
import secrets
import threading
import time
from typing import Any, Optional, Sequence

import numpy as np

from t5x import decoding
from t5x import loader
from t5x.examples.t5.network import Transformer

MIN_ROWS = 8


@dataclasses.dataclass(frozen=True)
class Settings:
  """Sampling settings. Requests batch together when their `batch_key` is equal: the
  temperature, top-k and top-p are per row; top_k is at most decoding.K_MAX."""
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  no_repeat_ngram_size: int = 0
  max_decode_length: int = 64

  @property
  def batch_key(self) -> tuple[int, int]:
    """What must be equal for two requests to share a decode (a static of the program)."""
    return self.no_repeat_ngram_size, self.max_decode_length


@dataclasses.dataclass
class Result:
  """texts: one decoded text per requested row. batch_requests / batch_rows: how many
  requests and rows shared the decode (rows before padding). decode_ms: its wall time."""
  texts: list[str]
  batch_requests: int
  batch_rows: int
  decode_ms: float


class Busy(RuntimeError):
  """Too many requests are pending; the caller should retry later."""


class InputTooLong(ValueError):
  """A prompt has more tokens than the sampler's `max_input_tokens`."""


@dataclasses.dataclass
class _Request:
  tokens: np.ndarray  # int32 [k] (k <= max_input_tokens), EOS included
  rows: int
  settings: Settings
  future: concurrent.futures.Future


def row_bucket(rows: int, max_rows: int) -> int:
  """The padded row count of a decode: the next power of two >= rows, at least MIN_ROWS,
  at most max_rows."""
  return min(max_rows, max(MIN_ROWS, 1 << (rows - 1).bit_length()))


def check_max_rows(max_rows: int) -> None:
  """ValueError unless max_rows is a power of two >= MIN_ROWS."""
  if max_rows < MIN_ROWS or max_rows & (max_rows - 1):
    raise ValueError(f'max_rows={max_rows}: use a power of two >= {MIN_ROWS}')


class BatchedSampler:
  """Batches concurrent `submit` calls into shared decodes on one worker thread.

  Args:
    model: a `loader.Loaded` model with a vocabulary.
    max_rows: rows per decode (a power of two >= MIN_ROWS); also the most rows one
      request may ask for.
    max_input_tokens: prompt length in tokens (EOS included); longer prompts are refused.
    max_pending: requests waiting at most; beyond, `submit` raises `Busy`.
    seed: seed of the first decode (each decode uses the next); None draws one at random.
    partitioner: a `partitioning.PjitPartitioner` to decode on its mesh (a model larger
      than one device, `model.params` placed there by `loader.load_on_mesh`); None: one
      device.
  """

  def __init__(self, model: loader.Loaded, *, max_rows: int = 64, max_input_tokens: int = 64,
               max_pending: int = 256, seed: Optional[int] = None, partitioner: Any = None):
    check_max_rows(max_rows)
    self.model = model
    self.partitioner = partitioner
    self.max_rows, self.max_input_tokens = max_rows, max_input_tokens
    self.max_pending = max_pending
    self._module = Transformer(model.config)
    self._seeds = itertools.count(secrets.randbits(31) if seed is None else seed)
    self._queue: queue.Queue = queue.Queue()
    self._carry: list[_Request] = []  # taken from the queue, waiting for their settings' turn
    self._pending = 0
    self._lock = threading.Lock()
    self.decodes = 0  # decode calls so far (tests and logs read it)
    self._thread = threading.Thread(target=self._run, name='t5x-sampler', daemon=True)
    self._thread.start()

  # ------------------------------------------------------------------ callers' side

  def encode(self, prompt: str) -> np.ndarray:
    """int32 [k]: the prompt's tokens plus EOS; raises InputTooLong past max_input_tokens."""
    tokens = np.asarray(self.model.tokenizer.encode(prompt) + [loader.EOS_ID], np.int32)
    if len(tokens) > self.max_input_tokens:
      raise InputTooLong(f'the instruction is {len(tokens)} tokens long; the model reads at '
                         f'most {self.max_input_tokens}: shorten it')
    return tokens

  def submit(self, prompt: str, rows: int, settings: Settings) -> concurrent.futures.Future:
    """Queues `rows` samples of `prompt`; the future's result is a `Result`.

    Raises InputTooLong, ValueError (rows out of range) or Busy at once, never later.
    """
    if not 1 <= rows <= self.max_rows:
      raise ValueError(f'rows={rows}: use 1..{self.max_rows}')
    decoding.DecodeOptions(decode='sample', **dataclasses.asdict(settings)).validate()
    if settings.top_k > decoding.K_MAX:
      raise ValueError(f'top_k={settings.top_k}: use 0..{decoding.K_MAX} (0 = off)')
    request = _Request(self.encode(prompt), rows, settings, concurrent.futures.Future())
    with self._lock:
      if self._pending >= self.max_pending:
        raise Busy(f'{self._pending} requests are waiting; try again in a moment')
      self._pending += 1
    self._queue.put(request)
    return request.future

  def warm_up(self, settings: Settings) -> float:
    """Compiles the decode of every row bucket (for every temperature, top-k and top-p,
    and the length and n-gram rule of `settings`); returns the seconds taken."""
    start, rows = time.perf_counter(), MIN_ROWS
    while rows <= self.max_rows:
      self.submit('warm up', rows, settings).result()
      rows *= 2
    return time.perf_counter() - start

  def close(self) -> None:
    """Stops the worker after the requests already queued."""
    self._queue.put(None)
    self._thread.join()

  # ------------------------------------------------------------------ the worker

  def _run(self) -> None:
    while True:
      batch = self._next_batch()
      if batch is None:
        return
      try:
        results = self._decode(batch)
      except Exception as e:  # every waiting caller learns of it; the worker lives on
        logging.exception('decode failed')
        results = [e] * len(batch)
      with self._lock:
        self._pending -= len(batch)
      for request, result in zip(batch, results):
        if isinstance(result, Exception):
          request.future.set_exception(result)
        else:
          request.future.set_result(result)

  def _next_batch(self) -> Optional[list[_Request]]:
    """The oldest request plus every pending one with its batch key that fits max_rows."""
    if not self._carry:
      first = self._queue.get()
      if first is None:
        return None
      self._carry.append(first)
    while True:  # drain what queued meanwhile, without waiting
      try:
        item = self._queue.get_nowait()
      except queue.Empty:
        break
      if item is None:
        self._queue.put(None)  # close after this batch
        break
      self._carry.append(item)
    key, batch, rest, rows = self._carry[0].settings.batch_key, [], [], 0
    for request in self._carry:
      if request.settings.batch_key == key and rows + request.rows <= self.max_rows:
        batch.append(request)
        rows += request.rows
      else:
        rest.append(request)
    self._carry = rest
    return batch

  def _decode(self, batch: Sequence[_Request]) -> list[Result]:
    rows = sum(r.rows for r in batch)
    bucket = row_bucket(rows, self.max_rows)
    enc = np.zeros((bucket, self.max_input_tokens), np.int32)
    # Padding rows decode greedily (and not at all: their inputs are all padding).
    temperature, top_p = np.zeros(bucket, np.float32), np.ones(bucket, np.float32)
    top_k = np.zeros(bucket, np.int32)
    row = 0
    for request in batch:
      rows_of = slice(row, row + request.rows)
      enc[rows_of, :len(request.tokens)] = request.tokens
      temperature[rows_of] = request.settings.temperature
      top_k[rows_of], top_p[rows_of] = request.settings.top_k, request.settings.top_p
      row += request.rows
    settings = batch[0].settings
    start = time.perf_counter()
    tokens, _ = decoding.generate_sampled(
        self._module, self.model.params, enc, temperature, top_k, top_p,
        seed=next(self._seeds), max_decode_length=settings.max_decode_length,
        no_repeat_ngram_size=settings.no_repeat_ngram_size, partitioner=self.partitioner)
    decode_ms = (time.perf_counter() - start) * 1000.0
    self.decodes += 1
    results, row = [], 0
    for request in batch:
      texts = [self.model.decode_tokens(t) for t in tokens[row:row + request.rows]]
      results.append(Result(texts, len(batch), rows, decode_ms))
      row += request.rows
    return results
