"""`t5x serve`: CoPoet's collaborative writing page and the JSON API behind it.

    t5x serve --checkpoint /tmp/t5x_quickstart            # then open http://127.0.0.1:8080/

Routes:
    GET  /                 the page (t5x_cli/web/copoet: plain HTML, CSS and JS)
    GET  /api/config       instruction types, decoding defaults and input limits
    POST /api/suggest      {instruction, n, temperature, top_k, top_p}
                           -> {suggestions: [n texts], latency_ms, batch: {requests, rows}}
    POST /api/poems        a session (see copoet_sessions) -> saved to LOG_DIR/<uid>.json

Suggestions are sampled with CoPoet's protocol by default (top-k 5, temperature 0.7, no
repeated bigrams; eval/copoet.sh). Each request samples `OVERSAMPLE` x n rows and returns
the first n distinct texts, so a writer rarely sees the same line twice. Concurrent
requests decode together (serving.BatchedSampler).

Every field a client sends is bounded, unknown fields are refused, and the only file
name derived from a request is `<uuid>.json`, from a field that must parse as a UUID.
Bodies, slow clients and Host headers are guarded by `http_guard`; non-finite numbers
(NaN, Infinity) are refused, so session files are strict JSON; a session log folder that
is full or read-only answers 503.
"""
import asyncio
import dataclasses
import datetime
import errno
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Iterable, Optional

import fastapi
import jax
import pydantic
from fastapi import responses, staticfiles

from t5x import decoding
from t5x import fs_utils
from t5x import loader
from t5x import partitioning
from t5x.serving import http_guard
from t5x.serving import batched_sampler as serving
from t5x_tasks import copoet_instructions, copoet_sessions

WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'web', 'copoet')

# CoPoet's lengths: instructions and lines are truncated to 64 tokens in the paper.
MAX_INPUT_TOKENS = 64
MAX_DECODE_LENGTH = 64
# CoPoet's sampling protocol (eval/copoet.sh); no_repeat_ngram_size is not client-set.
DEFAULTS = {'n': 5, 'temperature': 0.7, 'top_k': 5, 'top_p': 1.0}
# Temperature 0 is greedy; sampled temperatures lie in MIN_TEMPERATURE..MAX_TEMPERATURE.
# Below the floor a temperature only approximates greedy (and 1e-38 overflowed float32),
# so it is refused with the allowed range rather than silently changed.
MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 2.0
MAX_TOP_K = decoding.K_MAX
NO_REPEAT_NGRAM_SIZE = 2
OVERSAMPLE = 2
MAX_N = 10
MAX_INSTRUCTION_CHARS = 300
MAX_LINE_CHARS = 1000

_Text = pydantic.constr(max_length=MAX_LINE_CHARS)
_Stamp = Optional[pydantic.constr(max_length=40)]


class _Strict(pydantic.BaseModel):
  # NaN and Infinity parse as JSON floats in Python; refused, so files stay strict JSON.
  model_config = pydantic.ConfigDict(extra='forbid', allow_inf_nan=False)


class SuggestRequest(_Strict):
  instruction: pydantic.constr(strip_whitespace=True, min_length=1,
                               max_length=MAX_INSTRUCTION_CHARS)
  n: pydantic.conint(ge=1, le=MAX_N) = DEFAULTS['n']
  temperature: pydantic.confloat(ge=0.0, le=MAX_TEMPERATURE) = DEFAULTS['temperature']
  top_k: pydantic.conint(ge=0, le=MAX_TOP_K) = DEFAULTS['top_k']
  top_p: pydantic.confloat(gt=0.0, le=1.0) = DEFAULTS['top_p']

  @pydantic.field_validator('temperature')
  @classmethod
  def _above_the_floor(cls, value: float) -> float:
    if 0.0 < value < MIN_TEMPERATURE:
      raise ValueError(f'{value} is below the floor {MIN_TEMPERATURE}: use 0 (greedy) or '
                       f'{MIN_TEMPERATURE}..{MAX_TEMPERATURE}')
    return value


class Decode(_Strict):
  n: pydantic.conint(ge=1, le=MAX_N)
  temperature: float
  top_k: int
  top_p: float = 1.0


class Interaction(_Strict):
  instruction: pydantic.constr(max_length=MAX_INSTRUCTION_CHARS)
  instruction_type: pydantic.constr(max_length=32) = 'free'
  argument: pydantic.constr(max_length=MAX_INSTRUCTION_CHARS) = ''
  suggestions: pydantic.conlist(_Text, max_length=MAX_N)
  decode: Optional[Decode] = None
  latency_ms: Optional[float] = None
  requested_at: _Stamp = None
  answered_at: _Stamp = None
  choice: Optional[pydantic.conint(ge=0)] = None
  chosen_at: _Stamp = None
  inserted_at_line: Optional[pydantic.conint(ge=0)] = None
  final_text: Optional[_Text] = None

  @pydantic.model_validator(mode='after')
  def _choice_in_range(self):
    if self.choice is not None and self.choice >= len(self.suggestions):
      raise ValueError(f'choice={self.choice} but only {len(self.suggestions)} suggestions')
    return self


class PoemRequest(_Strict):
  uid: uuid.UUID
  title: pydantic.constr(max_length=200) = ''
  lines: pydantic.conlist(_Text, max_length=500)
  submitted: bool = False
  created_at: _Stamp = None
  interactions: pydantic.conlist(Interaction, max_length=2000) = []


def distinct(texts: list[str], n: int) -> list[str]:
  """The first n distinct non-empty texts (stripped), topped up with the remaining texts
  in order when there are fewer than n distinct ones."""
  texts = [t.strip() for t in texts]
  seen, first, rest = set(), [], []
  for text in texts:
    (first if text and text not in seen else rest).append(text)
    seen.add(text)
  return (first + rest)[:n]


def sampling_settings(temperature: float = DEFAULTS['temperature'],
                      top_k: int = DEFAULTS['top_k'],
                      top_p: float = DEFAULTS['top_p']) -> serving.Settings:
  """A request's sampling settings: CoPoet's bigram rule and lengths are fixed."""
  return serving.Settings(temperature=temperature, top_k=top_k, top_p=top_p,
                          no_repeat_ngram_size=NO_REPEAT_NGRAM_SIZE,
                          max_decode_length=MAX_DECODE_LENGTH)


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='milliseconds')


def _error_message(exc: pydantic.ValidationError | fastapi.exceptions.RequestValidationError):
  """'field: problem; field: problem' (the body's own prefix dropped)."""
  parts = []
  for error in exc.errors():
    loc = [str(x) for x in error.get('loc', ()) if x != 'body']
    parts.append(f"{'.'.join(loc) or 'body'}: {error.get('msg')}")
  return '; '.join(parts)


def create_app(sampler: serving.BatchedSampler, log_dir: str, model_name: str,
               hosts: Iterable[str] = http_guard.LOOPBACK_HOSTS) -> fastapi.FastAPI:
  """The FastAPI app: the page, /api/config, /api/suggest and /api/poems.

  hosts: the Host names it answers to (see `http_guard.allowed_hosts`); others get 421.
  """
  app = fastapi.FastAPI(title='CoPoet', docs_url=None, redoc_url=None, openapi_url=None)
  app.add_middleware(http_guard.Guard, hosts=frozenset(hosts))
  save_lock = threading.Lock()

  @app.exception_handler(fastapi.exceptions.RequestValidationError)
  async def _bad_request(request, exc):
    return responses.JSONResponse({'detail': _error_message(exc)}, 422)

  @app.get('/', include_in_schema=False)
  def page():
    return responses.FileResponse(os.path.join(WEB_DIR, 'index.html'),
                                  headers={'Cache-Control': 'no-cache'})

  app.mount('/static', staticfiles.StaticFiles(directory=WEB_DIR), name='static')

  @app.get('/api/config')
  def config():
    return {'model': model_name, 'instruction_types': copoet_instructions.BUILDER_TYPES,
            'defaults': DEFAULTS,
            'limits': {'n': MAX_N, 'instruction_chars': MAX_INSTRUCTION_CHARS,
                       'instruction_tokens': sampler.max_input_tokens,
                       'temperature': MAX_TEMPERATURE, 'min_temperature': MIN_TEMPERATURE,
                       'top_k': MAX_TOP_K}}

  @app.post('/api/suggest')
  async def suggest(body: SuggestRequest):
    start = time.perf_counter()
    try:
      future = sampler.submit(body.instruction, min(OVERSAMPLE * body.n, sampler.max_rows),
                              sampling_settings(body.temperature, body.top_k, body.top_p))
    except serving.InputTooLong as e:
      raise fastapi.HTTPException(422, f'instruction: {e}') from None
    except serving.Busy as e:
      raise fastapi.HTTPException(503, f'busy: {e}', headers={'Retry-After': '1'}) from None
    try:
      result = await asyncio.wrap_future(future)
    except Exception as e:  # the decode itself failed: say so, as JSON like every error
      raise fastapi.HTTPException(500, f'decoding failed: {type(e).__name__}: {e}') from None
    return {'suggestions': distinct(result.texts, body.n),
            'latency_ms': round((time.perf_counter() - start) * 1000.0, 1),
            'batch': {'requests': result.batch_requests, 'rows': result.batch_rows}}

  @app.post('/api/poems')
  def save_poem(body: PoemRequest):  # sync: FastAPI runs it on a worker thread
    with save_lock:
      path = os.path.join(log_dir, copoet_sessions.file_name(body.uid))
      previous = copoet_sessions.load(path) if os.path.exists(path) else None
      saved_at = _now()
      content = copoet_sessions.record(body.model_dump(mode='json'), model=model_name,
                                       saved_at=saved_at, previous=previous)
      try:
        save_session(log_dir, content)
      except OSError as e:
        # The operator's log says where; the client (perhaps remote) learns what went
        # wrong but not the server's folder layout.
        logging.error('could not save a session to %s: %s', path, e)
        # The standard text of the error number: e.strerror may hold a path.
        cause = (f'{os.strerror(e.errno)} [{errno.errorcode[e.errno]}]'
                 if e.errno in errno.errorcode else type(e).__name__)
        raise fastapi.HTTPException(
            503, f'the session could not be saved: the server\'s session log folder '
            f'refused the write ({cause}); try again later') from None
    return {'uid': content['uid'], 'submitted': content['submitted'], 'saved_at': saved_at,
            'file': os.path.basename(path)}

  return app


def save_session(log_dir: str, content: dict) -> str:
  """Writes a session to `log_dir/<uid>.json` atomically (a crash leaves the old file or the
  new one, never a torn one); returns the path. A NaN or infinite number raises ValueError
  before anything is written."""
  path = os.path.join(log_dir, copoet_sessions.file_name(content['uid']))
  fs_utils.write_atomic(path, copoet_sessions.dumps(content))
  return path


def load_model(checkpoint: str, vocabulary: Optional[str] = None,
               param_dtype: Optional[str] = None, partitioner: Any = None) -> loader.Loaded:
  """`loader.load(checkpoint)` (or, with a `partitioner`, `loader.load_on_mesh`: restored
  shard by shard onto its mesh) with a SentencePiece vocabulary: `vocabulary` (a
  spiece.model file) when given, else the one that came with the model."""
  logging.getLogger('absl').setLevel(logging.ERROR)  # orbax's notes on restore: keep quiet
  if vocabulary and not os.path.isfile(vocabulary):
    raise FileNotFoundError(f'--vocabulary {vocabulary}: no such file; give a SentencePiece '
                            'model (spiece.model)')
  model = loader.load(checkpoint, param_dtype, partitioner)
  if vocabulary:
    model = dataclasses.replace(model, vocabulary_path=vocabulary)
  if not model.vocabulary_path:
    raise ValueError(f'{checkpoint}: no spiece.model came with this model; pass '
                     '--vocabulary /path/to/spiece.model (the one it was trained with)')
  return model


def serve(checkpoint: str, *, host: str = '127.0.0.1', port: int = 8080,
          log_dir: str = 'copoet_sessions', max_rows: int = 64,
          param_dtype: Optional[str] = None, seed: Optional[int] = None,
          vocabulary: Optional[str] = None, allowed_host: Iterable[str] = (),
          num_partitions: Optional[int] = None) -> None:
  """Loads the model, compiles the decode, and serves until interrupted.

  allowed_host: Host names answered besides the loopback ones and `host` (--allowed_host).
  num_partitions: split the model over this many of this host's devices (its 'model'
    mesh axis; the other devices form 'data'), for a model larger than one device; None:
    one device.
  """
  serving.check_max_rows(max_rows)  # bad flags and a busy port fail before the slow load
  partitioner = None
  if num_partitions is not None:
    partitioner = partitioning.PjitPartitioner(num_partitions, devices=jax.local_devices())
  hosts = http_guard.allowed_hosts(host, allowed_host)
  sock = bind(host, port)
  model = load_model(checkpoint, vocabulary, param_dtype, partitioner)
  sampler = serving.BatchedSampler(model, max_rows=max_rows, max_input_tokens=MAX_INPUT_TOKENS,
                                   seed=seed, partitioner=partitioner)
  seconds = sampler.warm_up(sampling_settings())
  log_dir = os.path.abspath(log_dir)
  os.makedirs(log_dir, exist_ok=True)
  app = create_app(sampler, log_dir, model.source or checkpoint, hosts)
  print(f'compiled the decode in {seconds:.1f} s; sessions are saved to {log_dir}')
  if partitioner is not None:
    shape = partitioner.mesh.shape
    print(f'decoding on a mesh of data {shape["data"]} x model {shape["model"]} devices, '
          'the parameters split as in training')
  for line in http_guard.startup_notes(host, hosts):
    print(line)
  print(f'serving {model.source or checkpoint} at http://{host}:{sock.getsockname()[1]}/ '
        '(Ctrl-C stops)', flush=True)
  http_guard.make_server(app).run(sockets=[sock])
  sampler.close()


def bind(host: str, port: int) -> socket.socket:
  """A TCP socket bound to (host, port); RuntimeError, saying what to do, when it cannot."""
  family = socket.AF_INET6 if ':' in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
  except OSError as e:
    sock.close()
    raise RuntimeError(f'cannot listen on {host}:{port} ({e.strerror}); pass another --port '
                       '(or --host)') from None
  return sock
