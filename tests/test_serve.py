"""`t5x serve`: the batched sampler, the JSON API on the quickstart model, session logs and
their scoring, and the load test on its default setting (50 concurrent requests)."""
import http.client
import json
import subprocess
import sys
import threading
import urllib.request
import uuid

import pytest

import jobs

import t5x
from conftest import ENV, ROOT
from t5x_cli import main as cli
from t5x.conversion import converters
from t5x import fs_utils
from t5x_cli import copoet_app as serve
from t5x.serving import batched_sampler as serving
from t5x_tasks import copoet_metrics, copoet_scoring, copoet_sessions

sys.path.insert(0, str(ROOT / 'benchmarks'))
import serve_load  # noqa: E402

RHYME = "Write a poetic sentence that ends in a word which rhymes with 'night'"


@pytest.fixture(scope='module')
def model(quickstart):
  return t5x.load(str(quickstart[0]))


def test_row_buckets_are_powers_of_two():
  assert [serving.row_bucket(r, 64) for r in (1, 8, 9, 16, 17, 33, 64)] == [8, 8, 16, 16, 32,
                                                                            64, 64]


def test_pending_requests_share_one_decode_across_sampling_settings(model):
  sampler = serving.BatchedSampler(model, max_rows=16)
  batches, release = [], threading.Event()

  def fake_decode(batch):
    batches.append([(r.tokens.tolist(), r.rows, r.settings.temperature) for r in batch])
    if len(batches) == 1:
      release.wait(30)  # the worker is busy while the others queue
    return [serving.Result(['x'] * r.rows, len(batch), 0, 0.0) for r in batch]

  sampler._decode = fake_decode
  cold, warm = serving.Settings(temperature=0.5), serving.Settings(temperature=0.9, top_k=5)
  other_rule = serving.Settings(temperature=0.5, no_repeat_ngram_size=2)
  first = sampler.submit('a', 2, cold)
  while not batches:
    threading.Event().wait(0.01)
  futures = [sampler.submit('b', 4, cold), sampler.submit('c', 3, warm),
             sampler.submit('f', 1, other_rule), sampler.submit('d', 6, cold),
             sampler.submit('e', 8, cold)]
  release.set()
  results = [f.result(30) for f in [first] + futures]
  sampler.close()
  encode = lambda text: sampler.encode(text).tolist()  # noqa: E731
  # b, c and d share a decode (13 rows) though c samples otherwise: temperature, top-k and
  # top-p are per row. e would make 21 > 16 rows, so it waits; f's n-gram rule is part of
  # the compiled program, so it decodes apart, in its turn.
  assert batches == [[(encode('a'), 2, 0.5)],
                     [(encode('b'), 4, 0.5), (encode('c'), 3, 0.9), (encode('d'), 6, 0.5)],
                     [(encode('f'), 1, 0.5)],
                     [(encode('e'), 8, 0.5)]]
  assert [len(r.texts) for r in results] == [2, 4, 3, 1, 6, 8]
  assert [r.batch_requests for r in results] == [1, 3, 3, 1, 3, 1]


def test_new_sampling_settings_compile_nothing_after_warm_up(model):
  """The probe: 79 distinct temperatures compiled 79 programs (4 s each). Now the warm-up
  compiles one program per row bucket, and no request compiles another."""
  from jax import monitoring
  lowered = []

  def on_event(event, duration, **kwargs):
    # The sampler's own thread only: jobs that run ahead in this process compile too.
    if (event == '/jax/core/compile/jaxpr_to_mlir_module_duration'
        and threading.current_thread().name == 't5x-sampler'):
      lowered.append(kwargs.get('fun_name'))

  sampler = serving.BatchedSampler(model, max_rows=16, seed=0)
  monitoring.register_event_duration_secs_listener(on_event)
  try:
    sampler.warm_up(serve.sampling_settings())
    warm = list(lowered)
    lowered.clear()
    settings = [serve.sampling_settings(temperature, top_k, top_p) for temperature, top_k, top_p in
                [(0.01, 5, 1.0), (0.33, 0, 1.0), (0.71, 100, 0.9), (1.97, 0, 0.35), (0.0, 5, 1.0),
                 (1.1, 1, 0.5), (0.5, 42, 1.0), (0.9, 9, 0.99), (1.5, 7, 0.8), (0.2, 0, 0.9)]]
    futures = [sampler.submit(RHYME, rows, s) for s, rows in zip(settings, [10, 3] * 5)]
    results = [f.result(120) for f in futures]
  finally:
    monitoring.unregister_event_duration_listener(on_event)
    sampler.close()
  assert lowered == []  # 10 new settings, 16 rows a decode or fewer: nothing compiled
  # Warm-up: at most the two buckets' programs (fewer if an earlier test compiled them).
  assert set(warm) <= {'jit(_generate_impl)'} and len(warm) <= 2, warm
  assert sorted(len(r.texts) for r in results) == [3] * 5 + [10] * 5


def test_the_sampler_is_sound_at_the_temperature_floor_and_below(model):
  sampler = serving.BatchedSampler(model, max_rows=16, seed=3)
  texts = {t: sampler.submit(RHYME, 10, serve.sampling_settings(t, 0, 1.0)).result(120).texts
           for t in (0.0, 1e-38, serve.MIN_TEMPERATURE)}
  sampler.close()
  greedy = texts[0.0]
  assert len(set(greedy)) == 1 and greedy[0].strip()
  # logits / 1e-38 overflowed to garbage before; the sampler itself is greedy there now
  # (the API refuses temperatures under the floor: test_serve_hostile).
  assert texts[1e-38] == greedy
  # At the floor: sampled, mostly the greedy line, nothing degenerate.
  assert sum(t == greedy[0] for t in texts[serve.MIN_TEMPERATURE]) >= 5
  assert all(t.strip() and '\ufffd' not in t for t in texts[serve.MIN_TEMPERATURE])


def test_sampler_decodes_reproducibly_from_ours_and_from_a_hugging_face_export(
    quickstart, model, tmp_path):
  # `t5x serve --checkpoint HF_DIR` loads an export-hf folder the same way.
  converters.export_hf(str(quickstart[0]), str(tmp_path / 'hf'), verify=False)
  texts = []
  for source in (model, model, t5x.load(str(tmp_path / 'hf'))):
    sampler = serving.BatchedSampler(source, max_rows=8, seed=7)
    result = sampler.submit(RHYME, 5, serve.sampling_settings()).result(120)
    sampler.close()
    texts.append(result.texts)
    assert (result.batch_requests, result.batch_rows) == (1, 5) and sampler.decodes == 1
  assert texts[0] == texts[1] == texts[2] and len(texts[0]) == 5
  assert all(isinstance(t, str) for t in texts[0]) and len(set(texts[0])) > 1


def test_a_t5x_checkpoint_serves_with_the_vocabulary_given(shared_dir):
  checkpoint = str(shared_dir / 'fixtures' / 't5x' / 'test_t5_tiny.checkpoint_0')
  with pytest.raises(ValueError, match='no spiece.model came with this model; pass --vocabulary'):
    serve.load_model(checkpoint)
  with pytest.raises(FileNotFoundError, match='--vocabulary /nonexistent.model: no such file'):
    serve.load_model(checkpoint, '/nonexistent.model')
  vocabulary = str(ROOT / 't5x_tasks' / 'data' / 'copoet_sample' / 'spiece.model')
  model = serve.load_model(checkpoint, vocabulary)
  sampler = serving.BatchedSampler(model, max_rows=8, seed=0)
  result = sampler.submit(RHYME, 2, serve.sampling_settings()).result(120)
  sampler.close()
  assert model.vocabulary_path == vocabulary and model.config.vocab_size == 32128
  assert len(result.texts) == 2 and all(isinstance(t, str) for t in result.texts)


def test_sampler_refuses_at_once(model):
  with pytest.raises(ValueError, match='max_rows=48: use a power of two'):
    serving.BatchedSampler(model, max_rows=48)
  sampler = serving.BatchedSampler(model, max_rows=8, max_input_tokens=8, max_pending=0)
  with pytest.raises(serving.InputTooLong, match=r'tokens long; the model reads at most 8'):
    sampler.submit('a much longer instruction than eight tokens', 1, serving.Settings())
  with pytest.raises(ValueError, match=r'rows=9: use 1..8'):
    sampler.submit('a', 9, serving.Settings())
  with pytest.raises(ValueError, match='temperature'):
    sampler.submit('a', 1, serving.Settings(temperature=-1.0))
  with pytest.raises(serving.Busy, match='0 requests are waiting'):
    sampler.submit('a', 1, serving.Settings())
  sampler.close()


def test_distinct_prefers_new_non_empty_texts():
  assert serve.distinct(['a ', 'a', '', 'b', 'c', 'b'], 3) == ['a', 'b', 'c']
  assert serve.distinct(['a', 'a', '', 'a'], 3) == ['a', 'a', '']


def test_serve_binds_loopback_by_default():
  args = cli.build_parser().parse_args(['serve', '--checkpoint', 'm'])
  assert (args.host, args.port, args.max_batch_rows) == ('127.0.0.1', 8080, 64)


def test_serve_refuses_bad_flags_before_loading(capsys):
  assert cli.main(['serve', '--checkpoint', '/nonexistent', '--max_batch_rows', '48']) == 2
  assert 'max_rows=48: use a power of two >= 8' in capsys.readouterr().err


def test_serve_names_a_busy_port_before_loading(served, capsys):
  port = served[0].rsplit(':', 1)[1]
  assert cli.main(['serve', '--checkpoint', '/nonexistent', '--port', port]) == 2
  assert f'cannot listen on 127.0.0.1:{port} (Address already in use); pass another --port' in \
      capsys.readouterr().err


# ------------------------------------------------------------------ the API, served


def test_a_partitioned_server_answers_as_one_device_does(quickstart, tmp_path):
  """`t5x serve --num_partitions 2` on two simulated devices splits the model over both
  and answers the first suggestion request with the same 5 lines as the one-device
  server, for the same seed (both warm up with the same decodes, so the same seeds)."""
  def first_answer(name, env, flags):
    log = tmp_path / f'{name}.log'
    with serve_load.running_server(quickstart[0], tmp_path / name, seed=3, env=env,
                                   flags=['--max_batch_rows', '16', *flags],
                                   output_file=str(log)) as url:
      status, body = serve_load.post(f'{url}/api/suggest', {'instruction': RHYME})
    assert status == 200, body
    return body['suggestions'], log.read_text()

  two = dict(ENV, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  (one, _), (split, log) = jobs.concurrently(
      lambda: first_answer('one', ENV, []),
      lambda: first_answer('split', two, ['--num_partitions', '2']))
  assert 'decoding on a mesh of data 1 x model 2 devices' in log
  assert len(one) == 5 and split == one


def test_suggest_gives_n_suggestions(served):
  url, _ = served
  status, body = serve_load.post(f'{url}/api/suggest', {'instruction': RHYME})
  assert status == 200 and len(body['suggestions']) == serve.DEFAULTS['n']
  assert body['latency_ms'] > 0 and body['batch']['rows'] >= 2 * serve.DEFAULTS['n']
  status, body = serve_load.post(f'{url}/api/suggest', {'instruction': RHYME, 'n': 2,
                                                        'temperature': 0.0, 'top_k': 0})
  assert status == 200 and len(body['suggestions']) == 2
  with urllib.request.urlopen(f'{url}/api/config') as response:
    config = json.loads(response.read())
  assert config['defaults'] == {'n': 5, 'temperature': 0.7, 'top_k': 5, 'top_p': 1.0}
  # Every builder template, filled in, is an instruction the paper's scorer classifies as
  # the type the builder offers.
  kinds = {t['type']: copoet_metrics.classify(t['template'].format('rose'))
           for t in config['instruction_types']}
  assert kinds == {'continuation': 'continuation', 'subject': 'subject', 'about': 'subject',
                   'rhyme': 'rhyme', 'end': 'end', 'start': 'start', 'metaphor': 'metaphor',
                   'simile': 'simile', 'haiku': 'haiku'}


@pytest.mark.parametrize('body, status, message', [
    ({'instruction': ''}, 422, 'instruction: String should have at least 1 character'),
    ({'instruction': 'x' * 301}, 422, 'instruction: String should have at most 300 characters'),
    ({'instruction': RHYME, 'n': 0}, 422, 'n: Input should be greater than or equal to 1'),
    ({'instruction': RHYME, 'n': 11}, 422, 'n: Input should be less than or equal to 10'),
    ({'instruction': RHYME, 'temperature': 5}, 422, 'temperature: Input should be less than'),
    ({'instruction': RHYME, 'temperature': 1e-38}, 422,
     'temperature: Value error, 1e-38 is below the floor 0.01: use 0 (greedy) or 0.01..2.0'),
    ({'instruction': RHYME, 'temperature': float('nan')}, 422,
     'temperature: Input should be a finite number'),
    ({'instruction': RHYME, 'top_k': -1}, 422, 'top_k: Input should be greater than'),
    ({'instruction': RHYME, 'path': '/etc/passwd'}, 422, 'path: Extra inputs are not permitted'),
    ({'instruction': ' '.join(['xzqjv'] * 45)}, 422, 'the model reads at most 64'),
])
def test_suggest_refuses_bad_input(served, body, status, message):
  code, reply = serve_load.post(f'{served[0]}/api/suggest', body)
  assert code == status and message in reply['detail'], reply


def test_bodies_are_bounded_and_paths_are_not_served(served):
  url, _ = served
  # The server answers from the headers, before any body arrives (a client still sending a
  # large body may then see the connection closed, as with any server that refuses one).
  host, port = url.removeprefix('http://').split(':')
  for headers, status, detail in (({'Content-Length': str(3 << 20)}, 413, 'over 2097152 bytes'),
                                  ({}, 411, 'Content-Length'),
                                  ({'Host': 'evil.example'}, 421, "Host 'evil.example' is not"),
                                  ({'Host': f'localhost:{port}', 'Content-Length': '1'}, 422,
                                   'JSON decode error')):
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest('POST', '/api/suggest', skip_host='Host' in headers)
    connection.putheader('Content-Type', 'application/json')
    for name, value in headers.items():
      connection.putheader(name, value)
    connection.endheaders(b'{"instruction": "')
    response = connection.getresponse()
    assert response.status == status and detail in json.loads(response.read())['detail']
    connection.close()
  for path in ('/static/../serve.py', '/static/..%2fserve.py', '/static/%2e%2e/app.py'):
    with pytest.raises(urllib.error.HTTPError) as e:
      urllib.request.urlopen(url + path)
    assert e.value.code == 404, path


END_NIGHT = "Write a poetic sentence ending in 'night'"


def _session(uid, **fields):
  base = {
      'uid': uid, 'title': 'Night Fire', 'lines': ['The fire burns', 'the stars go out at night.'],
      'submitted': False, 'created_at': '2026-11-21T10:00:00.000Z', 'interactions': [
          {'instruction': END_NIGHT, 'instruction_type': 'end', 'argument': 'night',
           'suggestions': ['the stars go out at night.', 'the sun'],
           'decode': {'n': 2, 'temperature': 0.7, 'top_k': 5}, 'latency_ms': 12.5,
           'requested_at': '2026-11-21T10:00:01.000Z', 'choice': 0,
           'chosen_at': '2026-11-21T10:00:02.000Z', 'inserted_at_line': 1,
           'final_text': 'the stars go out at night.'},
          {'instruction': END_NIGHT, 'suggestions': ['a', 'the day.'], 'choice': 1,
           'chosen_at': '2026-11-21T10:00:03.000Z'},
          {'instruction': "Write a metaphor about 'time'", 'suggestions': ['time is a river'],
           'choice': None, 'chosen_at': '2026-11-21T10:00:04.000Z'},  # None of the above
          {'instruction': RHYME, 'suggestions': ['unanswered'], 'choice': None},
      ]}
  base.update(fields)
  return base


def test_poems_are_saved_in_the_study_format_and_scored(served, tmp_path, capsys):
  url, log_dir = served
  uid = str(uuid.uuid4())
  status, draft = serve_load.post(f'{url}/api/poems', _session(uid))
  assert status == 200 and draft == {'uid': uid, 'submitted': False, 'file': f'{uid}.json',
                                     'saved_at': draft['saved_at']}
  status, first = serve_load.post(f'{url}/api/poems', _session(uid, submitted=True))
  status, again = serve_load.post(f'{url}/api/poems', _session(uid, submitted=True))
  path = log_dir / f'{uid}.json'
  saved = json.loads(path.read_text())
  # The study's fields, with the study's types.
  assert saved['poemtitle'] == 'Night Fire' and saved['poem_submit'] == 'poem_submit'
  assert saved['poemsofar'] == 'The fire burns\nthe stars go out at night.'
  assert saved['instruction_count'] == '4' and saved['uid'] == uid
  assert copoet_sessions.study_logs(saved)[0] == {
      'instruction': END_NIGHT,
      'output': ['the stars go out at night.', 'the sun', 'None of the above']}
  assert saved['current_inst'].startswith(RHYME + ":['unanswered', 'None of the above']")
  # Ours: times, choices, edits.
  assert saved['submitted'] and saved['created_at'] == '2026-11-21T10:00:00.000Z'
  assert saved['submitted_at'] == first['saved_at'] and saved['saved_at'] == again['saved_at']
  assert saved['interactions'][0]['final_text'] == 'the stars go out at night.'
  assert [i['choice'] for i in saved['interactions']] == [0, 1, None, None]
  assert not list(log_dir.glob('.*tmp*'))
  # Two chosen suggestions: one ends in 'night', one does not.
  assert copoet_sessions.chosen_pairs(saved) == [
      (END_NIGHT, 'the stars go out at night.'),
      (END_NIGHT, 'the day.')]
  assert cli.main(['score', 'copoet', '--json', str(path)]) == 0
  result = json.loads(capsys.readouterr().out)['files'][str(path)]
  assert (result['successes'], result['scored'], result['success_rate']) == (1, 2, 50.0)
  # A folder is one run over all its sessions' choices.
  folder = tmp_path / 'sessions'
  folder.mkdir()
  (folder / 'a.json').write_text(path.read_text())
  other = dict(saved, interactions=saved['interactions'][:1])
  (folder / 'b.json').write_text(json.dumps(other))
  (folder / 'notes.json').write_text('{"not": "a session"}')
  result = copoet_scoring.score_files([str(folder)])['files'][str(folder)]
  assert (result['successes'], result['scored']) == (2, 3)


@pytest.mark.parametrize('change, message', [
    ({'uid': '../../etc/passwd'}, 'uid: Input should be a valid UUID'),
    ({'lines': 'a poem'}, 'lines: Input should be a valid list'),
    ({'interactions': [{'instruction': 'x', 'suggestions': ['a'], 'choice': 1}]},
     'choice=1 but only 1 suggestions'),
    ({'file': 'x.json'}, 'file: Extra inputs are not permitted'),
])
def test_poems_refuse_bad_input(served, change, message):
  url, log_dir = served
  before = sorted(p.name for p in log_dir.iterdir())
  status, reply = serve_load.post(f'{url}/api/poems', {**_session(str(uuid.uuid4())), **change})
  assert status == 422 and message in reply['detail'], reply
  assert sorted(p.name for p in log_dir.iterdir()) == before


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
  uid = str(uuid.uuid4())
  content = copoet_sessions.record(_session(uid), model='m', saved_at='t0')
  path = serve.save_session(str(tmp_path), content)
  before = open(path).read()

  def crash(src, dst):  # dies after writing the new text, before the rename
    assert open(src).read().startswith('{') and 'changed' in open(src).read()
    raise OSError('power cut')

  monkeypatch.setattr(fs_utils.os, 'replace', crash)
  with pytest.raises(OSError, match='power cut'):
    serve.save_session(str(tmp_path), dict(content, poemtitle='changed'))
  monkeypatch.undo()
  assert open(path).read() == before and json.loads(before)['poemtitle'] == 'Night Fire'
  assert [p.name for p in tmp_path.iterdir()] == [f'{uid}.json']  # no temporary left


def test_write_atomic_leaves_no_torn_file(tmp_path, monkeypatch):
  target = tmp_path / 'x.txt'
  fs_utils.write_atomic(str(target), 'old')

  class Torn:  # writes the first two characters, then the disk is full
    def __init__(self, f):
      self.f = f

    def write(self, text):
      self.f.write(text[:2])
      self.f.flush()
      raise OSError('disk full')

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.f.close()

  monkeypatch.setattr(fs_utils, 'open', lambda *a, **k: Torn(open(*a, **k)), raising=False)
  with pytest.raises(OSError, match='disk full'):
    fs_utils.write_atomic(str(target), 'new text')
  assert target.read_text() == 'old' and [p.name for p in tmp_path.iterdir()] == ['x.txt']


def test_load_test_fires_50_concurrent_requests(served, tmp_path):
  out = tmp_path / 'load.json'
  proc = subprocess.run([sys.executable, 'benchmarks/serve_load.py', '--url', served[0],
                         '--json', str(out)], cwd=ROOT, env=ENV, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  result = json.loads(out.read_text())
  concurrent = result['concurrent']
  assert (concurrent['requests'], concurrent['concurrency'],
          concurrent['succeeded']) == (50, 50, 50)
  # Concurrent requests shared decodes (10 rows each, 64 rows a decode: up to 6 together).
  assert 1 < concurrent['max_shared'] <= 6 and result['sequential']['max_shared'] == 1
  assert f"p50 {concurrent['p50_ms']:.0f} ms, p95 {concurrent['p95_ms']:.0f} ms" in proc.stdout
  assert f"ratio (concurrent/sequential requests/s): {result['ratio']:.2f}" in proc.stdout
