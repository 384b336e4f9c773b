"""`t5x serve` against hostile clients (issue 15, items 6, 8, 9, 10): oversized and slow
requests on the real uvicorn server (in a thread, on a stub sampler so no model loads),
foreign Host headers, degenerate temperatures, non-finite numbers and a session log
folder that is full or read-only. The real model's side (compilations, the sampler at the
temperature floor) is in test_serve.py and test_decoding.py."""
import concurrent.futures
import contextlib
import errno
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from fastapi import testclient

from conftest import ENV, ROOT
from t5x_cli import main as cli
from t5x import fs_utils
from t5x.serving import http_guard
from t5x_cli import copoet_app as serve
from t5x.serving import batched_sampler as serving


class StubSampler:
  """What create_app needs of a BatchedSampler; answers at once, records the settings."""
  max_rows, max_input_tokens = 64, 64

  def __init__(self):
    self.settings = []

  def submit(self, prompt, rows, settings):
    self.settings.append(settings)
    future = concurrent.futures.Future()
    future.set_result(serving.Result([f'line {i}' for i in range(rows)], 1, rows, 0.0))
    return future


@pytest.fixture
def stub():
  return StubSampler()


@pytest.fixture
def client(stub, tmp_path):
  app = serve.create_app(stub, str(tmp_path / 'logs'), 'stub')
  return testclient.TestClient(app, base_url='http://localhost')


@contextlib.contextmanager
def live_server(app):
  """(port, bytes the app read) of `http_guard.make_server(app)` running in a thread on
  loopback: the real HTTP protocol and deadlines, with a stub model."""
  read = {'bytes': 0}

  async def counting(scope, receive, send):  # outside the guard: what uvicorn handed in
    async def counted():
      message = await receive()
      read['bytes'] += len(message.get('body', b''))
      return message
    await app(scope, counted, send)

  sock = serve.bind('127.0.0.1', 0)
  server = http_guard.make_server(counting)
  thread = threading.Thread(target=server.run, kwargs={'sockets': [sock]}, daemon=True)
  thread.start()
  for _ in range(400):
    if server.started:
      break
    time.sleep(0.05)
  try:
    yield sock.getsockname()[1], read
  finally:
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def live(stub, tmp_path):
  with live_server(serve.create_app(stub, str(tmp_path / 'logs'), 'stub')) as running:
    yield running


def _headers(port, *lines):
  return ('POST /api/suggest HTTP/1.1\r\n' f'Host: 127.0.0.1:{port}\r\n'
          'Content-Type: application/json\r\n' + ''.join(f'{x}\r\n' for x in lines) +
          '\r\n').encode()


def _read_reply(conn) -> bytes:
  """What the server sent until it closed (a reset after its answer ends it too)."""
  reply = b''
  with contextlib.suppress(ConnectionResetError):
    while chunk := conn.recv(65536):
      reply += chunk
  return reply


# ------------------------------------------------------------------ 6. bounded bodies

PROBE_BYTES = 200 << 20
CHUNK = 64 << 10


@pytest.mark.parametrize('framing', ['chunked', 'content-length lies low'])
def test_a_200_mb_body_is_cut_off_at_the_limit(live, framing):
  port, read = live
  conn = socket.create_connection(('127.0.0.1', port), timeout=60)
  if framing == 'chunked':  # the probe: Content-Length 5 plus a chunked body
    conn.sendall(_headers(port, 'Content-Length: 5', 'Transfer-Encoding: chunked'))
    piece = b'%x\r\n' % CHUNK + b' ' * CHUNK + b'\r\n'
  else:  # 5 bytes of body, then 200 MB that h11 reads as a next request, and refuses
    conn.sendall(_headers(port, 'Content-Length: 5'))
    piece = b' ' * CHUNK
  sent = 0
  with contextlib.suppress(BrokenPipeError, ConnectionResetError):
    while sent < PROBE_BYTES and not select.select([conn], [], [], 0)[0]:
      conn.sendall(piece)
      sent += CHUNK
  reply = _read_reply(conn)
  conn.close()
  # The server stopped reading at the limit (the app was handed at most one more
  # socket read past it), long before the 200 MB were sent.
  assert read['bytes'] <= http_guard.MAX_BODY_BYTES + (1 << 20), read
  assert sent < PROBE_BYTES // 4, sent
  if framing == 'chunked':
    assert reply.startswith(b'HTTP/1.1 413 '), reply[:200]
    assert b'connection: close' in reply.lower()
    assert json.loads(reply.split(b'\r\n\r\n', 1)[1]) == {
        'detail': f'request body over {http_guard.MAX_BODY_BYTES} bytes'}
  else:  # the 5-byte body is not JSON; what followed is not HTTP
    assert reply.startswith(b'HTTP/1.1 422 ') and b'HTTP/1.1 400 ' in reply, reply[:400]
    assert read['bytes'] == 5


def test_a_chunked_body_under_the_limit_is_read(live, stub):
  port, _ = live
  body = json.dumps({'instruction': 'Write a haiku about snow', 'n': 2}).encode()
  conn = socket.create_connection(('127.0.0.1', port), timeout=60)
  conn.sendall(_headers(port, 'Transfer-Encoding: chunked', 'Connection: close') +
               b'%x\r\n%s\r\n0\r\n\r\n' % (len(body), body))
  reply = _read_reply(conn)
  assert reply.startswith(b'HTTP/1.1 200 '), reply[:300]
  assert json.loads(reply.split(b'\r\n\r\n', 1)[1])['suggestions'] == ['line 0', 'line 1']


def _read_response(conn) -> bytes:
  """One whole response with a Content-Length (status line, headers and body)."""
  data = b''
  while b'\r\n\r\n' not in data:
    data += conn.recv(1)
  length = int([line.split(b':')[1] for line in data.lower().split(b'\r\n')
                if line.startswith(b'content-length:')][0])
  while len(data.split(b'\r\n\r\n', 1)[1]) < length:
    data += conn.recv(length)
  return data


def _slow_client(port, first: bytes, trickle: bytes = b'', answered: bool = False) -> bytes:
  """Sends `first` (and reads its response when `answered`), then `trickle` a byte at a
  time until the server answers or closes; returns all it sent back. The socket's own
  timeout (30 s) is far above the server's shortened deadlines: a server without them
  fails here with a timeout."""
  conn = socket.create_connection(('127.0.0.1', port), timeout=30)
  conn.sendall(first)
  reply = _read_response(conn) if answered else b''
  for byte in trickle:
    if select.select([conn], [], [], 0.1)[0]:
      break
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
      conn.sendall(bytes([byte]))
  try:
    return reply + _read_reply(conn)
  finally:
    conn.close()


def test_slow_headers_are_cut_off(live, monkeypatch):
  port, _ = live
  monkeypatch.setattr(http_guard, 'HEADER_TIMEOUT_S', 0.5)
  partial = f'GET /api/config HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n'.encode()
  # Headers that stop half-way: uvicorn alone waits forever (its keep-alive timer only
  # runs between requests).
  reply = _slow_client(port, partial)
  assert reply.startswith(b'HTTP/1.1 408 '), reply
  assert json.loads(reply.split(b'\r\n\r\n', 1)[1]) == {
      'detail': 'the request headers did not arrive within 0.5 s'}
  # After a first request, a second one trickled a byte at a time (every byte restarts
  # uvicorn's keep-alive timer) is cut off too.
  first = partial + b'\r\n'
  reply = _slow_client(port, first, b'GET /api/config HTTP/1.1\r\nX-Slow: ' + b'a' * 400,
                       answered=True)
  assert reply.startswith(b'HTTP/1.1 200 ') and b'HTTP/1.1 408 ' in reply, reply[-300:]


def test_a_slow_body_is_cut_off(live, monkeypatch):
  port, read = live
  monkeypatch.setattr(http_guard, 'BODY_TIMEOUT_S', 0.5)
  reply = _slow_client(port, _headers(port, 'Content-Length: 100') + b'{"instruction": ',
                       b'"a' * 200)
  assert reply.startswith(b'HTTP/1.1 408 '), reply
  assert json.loads(reply.split(b'\r\n\r\n', 1)[1]) == {
      'detail': 'the request body did not arrive within 0.5 s'}
  assert read['bytes'] < 100


def test_a_declared_oversized_body_is_refused_before_reading(client):
  big = client.post('/api/suggest', content=b'{}', headers={
      'Content-Length': str(http_guard.MAX_BODY_BYTES + 1), 'Content-Type': 'application/json'})
  assert big.status_code == 413 and big.headers['connection'] == 'close'
  assert big.json() == {'detail': f'request body over {http_guard.MAX_BODY_BYTES} bytes'}
  assert big.headers['x-content-type-options'] == 'nosniff'


def test_a_post_without_a_length_is_refused(live):
  port, read = live
  conn = socket.create_connection(('127.0.0.1', port), timeout=30)
  conn.sendall(_headers(port))
  reply = _read_reply(conn)
  assert reply.startswith(b'HTTP/1.1 411 ') and read['bytes'] == 0
  assert json.loads(reply.split(b'\r\n\r\n', 1)[1]) == {
      'detail': 'send a Content-Length header (or a chunked body)'}


# ------------------------------------------------------------------ 8. degenerate temperatures

@pytest.mark.parametrize('temperature', [1e-38, 5e-324, 0.0099])
def test_a_temperature_below_the_floor_is_refused_with_the_range(client, stub, temperature):
  reply = client.post('/api/suggest', json={'instruction': 'Write a haiku', 'temperature':
                                            temperature})
  assert reply.status_code == 422 and stub.settings == []
  assert reply.json() == {'detail': f'temperature: Value error, {temperature} is below the '
                                    'floor 0.01: use 0 (greedy) or 0.01..2.0'}


@pytest.mark.parametrize('temperature', [0.0, serve.MIN_TEMPERATURE, 2.0])
def test_greedy_and_the_floor_are_sampled(client, stub, temperature):
  reply = client.post('/api/suggest', json={'instruction': 'Write a haiku', 'n': 2,
                                            'temperature': temperature})
  assert reply.status_code == 200 and reply.json()['suggestions'] == ['line 0', 'line 1']
  assert [s.temperature for s in stub.settings] == [temperature]


def test_config_names_the_temperature_range(client):
  limits = client.get('/api/config').json()['limits']
  assert (limits['min_temperature'], limits['temperature'], limits['top_k']) == (0.01, 2.0, 100)


# ------------------------------------------------------------------ 9. Host header

@pytest.mark.parametrize('host, status', [
    ('evil.example', 421), ('evil.example:8080', 421), ('localhost.evil.example', 421),
    ('127.0.0.1.nip.io', 421), ('[::1', 421),
    ('localhost', 200), ('LOCALHOST:8080', 200), ('localhost.', 200), ('127.0.0.1:41234', 200),
    ('[::1]:8080', 200), ('[::1]', 200)])
def test_only_loopback_host_names_are_answered(client, host, status):
  for method, path in (('get', '/api/config'), ('get', '/')):
    reply = getattr(client, method)(path, headers={'Host': host})
    assert reply.status_code == status, (host, path)
  if status == 421:
    assert reply.json() == {'detail': f'Host {host!r} is not a name this server answers to; '
                                      'its operator can add one with `t5x serve '
                                      '--allowed_host NAME`'}
    reply = client.post('/api/suggest', json={'instruction': 'x'}, headers={'Host': host})
    assert reply.status_code == 421


def test_allowed_host_names_are_answered(stub, tmp_path):
  hosts = http_guard.allowed_hosts('0.0.0.0', ['Poems.Example.org', '192.168.1.5:8080'])
  assert hosts == {'localhost', '127.0.0.1', '::1', 'poems.example.org', '192.168.1.5'}
  assert http_guard.allowed_hosts('10.0.0.7') == {'localhost', '127.0.0.1', '::1', '10.0.0.7'}
  client = testclient.TestClient(serve.create_app(stub, str(tmp_path), 'stub', hosts))
  for host, status in (('poems.example.org:8080', 200), ('192.168.1.5', 200),
                       ('localhost', 200), ('evil.example', 421), ('testserver', 421)):
    assert client.get('/api/config', headers={'Host': host}).status_code == status, host
  with pytest.raises(ValueError, match="--allowed_host 'http://poems.example.org': give a host"):
    http_guard.allowed_hosts('0.0.0.0', ['http://poems.example.org'])


def test_a_request_without_host_is_refused(live):
  port, _ = live
  conn = socket.create_connection(('127.0.0.1', port), timeout=30)
  conn.sendall(b'GET /api/config HTTP/1.0\r\n\r\n')
  reply = _read_reply(conn)
  assert reply.startswith(b'HTTP/1.1 421 ') and b'no Host header is not a name' in reply


def test_allowed_host_flag_reaches_serve_and_wildcards_say_so(monkeypatch):
  seen = {}
  monkeypatch.setattr(serve, 'serve', lambda checkpoint, **kwargs: seen.update(kwargs))
  assert cli.main(['serve', '--checkpoint', 'm', '--host', '0.0.0.0', '--allowed_host', 'a.org',
                   '--allowed_host', 'b.org']) in (0, None)
  assert seen['allowed_host'] == ['a.org', 'b.org'] and seen['host'] == '0.0.0.0'
  notes = http_guard.startup_notes('0.0.0.0', http_guard.allowed_hosts('0.0.0.0'))
  assert notes[1] == ('note: only requests addressed to localhost, 127.0.0.1, ::1 are '
                      'answered (others get 421, a guard against DNS rebinding); add the names '
                      'clients use with --allowed_host NAME (repeatable)')
  assert http_guard.startup_notes('127.0.0.1', http_guard.allowed_hosts('127.0.0.1')) == []
  assert http_guard.startup_notes('0.0.0.0', http_guard.allowed_hosts('0.0.0.0', ['a.org']))[1] == (
      'answering to Host names: 127.0.0.1, ::1, a.org, localhost')


# ------------------------------------------------------------------ 10. session files

def _session(**interaction):
  return {'uid': str(uuid.uuid4()), 'lines': ['a line'], 'interactions': [
      {'instruction': 'Write a haiku', 'suggestions': ['a', 'b'], 'choice': 0,
       'decode': {'n': 2, 'temperature': 0.7, 'top_k': 5}, 'latency_ms': 12.5,
       **interaction}]}


def _post_raw(client, body: dict):
  # json.dumps writes NaN and Infinity as Python does: what a hostile client can send.
  return client.post('/api/poems', content=json.dumps(body).encode(),
                     headers={'Content-Type': 'application/json'})


@pytest.mark.parametrize('change, field', [
    ({'latency_ms': float('nan')}, 'interactions.0.latency_ms'),
    ({'latency_ms': float('inf')}, 'interactions.0.latency_ms'),
    ({'decode': {'n': 2, 'temperature': float('-inf'), 'top_k': 5}},
     'interactions.0.decode.temperature'),
])
def test_non_finite_numbers_are_refused(client, tmp_path, change, field):
  reply = _post_raw(client, _session(**change))
  assert reply.status_code == 422
  assert reply.json() == {'detail': f'{field}: Input should be a finite number'}
  assert not (tmp_path / 'logs').exists() or not os.listdir(tmp_path / 'logs')


def test_saved_sessions_are_strict_json(client, tmp_path):
  body = _session()
  assert _post_raw(client, body).status_code == 200
  text = (tmp_path / 'logs' / f"{body['uid']}.json").read_text()
  json.loads(text, parse_constant=lambda token: pytest.fail(f'{token} in a session file'))
  with pytest.raises(ValueError, match='Out of range float values are not JSON compliant'):
    serve.save_session(str(tmp_path), dict(json.loads(text), latency=float('nan')))


def test_a_full_log_folder_answers_503_and_keeps_the_previous_file(client, tmp_path,
                                                                  monkeypatch):
  body = _session()
  assert _post_raw(client, body).status_code == 200
  path = tmp_path / 'logs' / f"{body['uid']}.json"
  before = path.read_text()

  def full(src, dst):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  def refuse_cleanup(path):  # the cleanup fails too: the first error must still win
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

  monkeypatch.setattr(fs_utils.os, 'replace', full)
  monkeypatch.setattr(fs_utils.os, 'remove', refuse_cleanup)
  reply = _post_raw(client, dict(body, title='changed'))
  monkeypatch.undo()
  assert reply.status_code == 503
  assert reply.json() == {'detail': "the session could not be saved: the server's session log "
                                    'folder refused the write (No space left on device '
                                    '[ENOSPC]); try again later'}
  assert str(tmp_path) not in reply.text  # the server's folders stay private
  assert path.read_text() == before


def test_a_log_folder_that_is_a_file_answers_503(stub, tmp_path):
  (tmp_path / 'logs').write_text('not a folder')
  client = testclient.TestClient(serve.create_app(stub, str(tmp_path / 'logs'), 'stub'),
                                 base_url='http://localhost')
  reply = _post_raw(client, _session())
  assert reply.status_code == 503
  assert reply.json() == {'detail': "the session could not be saved: the server's session log "
                                    'folder refused the write (Not a directory [ENOTDIR]); try '
                                    'again later'}


def test_cleanup_failures_never_hide_the_first_error(tmp_path, monkeypatch):
  def full(fd):  # the disk fills up as the data is synced
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  def refuse_cleanup(path):
    raise PermissionError(errno.EACCES, 'Permission denied')

  monkeypatch.setattr(fs_utils.os, 'fsync', full)
  monkeypatch.setattr(fs_utils.os, 'remove', refuse_cleanup)
  with pytest.raises(OSError) as e:
    fs_utils.write_atomic(str(tmp_path / 'x.txt'), 'text')
  assert e.value.errno == errno.ENOSPC


_TMPFS_SCRIPT = '''
import json, os, subprocess, sys, uuid
sys.path.insert(0, {tests!r})
from fastapi import testclient
from t5x_cli import copoet_app as serve
from test_serve_hostile import StubSampler
folder = sys.argv[1]
subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', folder], check=True)
client = testclient.TestClient(serve.create_app(StubSampler(), folder, 'stub'),
                               base_url='http://localhost')
session = lambda: {{'uid': str(uuid.uuid4()), 'lines': ['x' * 900] * 100}}
replies = []
for _ in range(3):  # about 90 KB each: the 64 KB tmpfs is full from the first
  reply = client.post('/api/poems', json=session())
  replies.append([reply.status_code, reply.json()['detail']])
subprocess.run(['mount', '-o', 'remount,ro,size=64k', folder], check=True)
reply = client.post('/api/poems', json={{'uid': str(uuid.uuid4()), 'lines': ['x']}})
replies.append([reply.status_code, reply.json()['detail']])
print(json.dumps({{'replies': replies, 'left': os.listdir(folder)}}))
'''


@pytest.mark.slow
def test_a_full_then_read_only_tmpfs_answers_503(tmp_path):
  """The real faults: a 64 KB tmpfs filled up, then remounted read-only (in a user and
  mount namespace, so no privileges are needed where unshare is allowed)."""
  probe = subprocess.run(['unshare', '-Urm', 'true'], capture_output=True)
  if probe.returncode:
    pytest.skip(f'unshare -Urm is not allowed here: {probe.stderr.decode().strip()}')
  folder = tmp_path / 'mnt'
  folder.mkdir()
  script = _TMPFS_SCRIPT.format(tests=str(ROOT / 'tests'))
  proc = subprocess.run(['unshare', '-Urm', sys.executable, '-c', script, str(folder)],
                        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  full = ("the session could not be saved: the server's session log folder refused the "
          'write (No space left on device [ENOSPC]); try again later')
  read_only = full.replace('No space left on device [ENOSPC]', 'Read-only file system [EROFS]')
  assert result == {'replies': [[503, full]] * 3 + [[503, read_only]], 'left': []}
