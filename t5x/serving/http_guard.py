"""HTTP guards of `t5x serve` against hostile clients: bounded bodies, slow clients, and
Host headers (DNS rebinding).

    app.add_middleware(http_guard.Guard, hosts=http_guard.allowed_hosts('127.0.0.1'))
    http_guard.make_server(app).run(sockets=[sock])

- A body is counted as it arrives, chunked or not, whatever Content-Length claims, and
  refused with 413 past MAX_BODY_BYTES; one slower than BODY_TIMEOUT_S gets 408 (`Guard`).
- A request line and headers not complete within HEADER_TIMEOUT_S close the connection,
  with a 408 when part of a request had come (`DeadlineProtocol`).
- A Host that is not a loopback name, the bound address or an --allowed_host gets 421,
  so a web page that rebinds its DNS name to this machine cannot drive the API (`Guard`).
Every refusal is JSON `{"detail": ...}` and closes the connection.
"""
import asyncio
import json
from typing import Iterable, Optional

import uvicorn
from fastapi import responses
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_BODY_BYTES = 2 * 1024 * 1024
# Slow clients (read at each use, so tests can shorten them): a request line and headers
# must arrive within HEADER_TIMEOUT_S of the connection (or of the previous response), a
# body within BODY_TIMEOUT_S of its headers; idle keep-alive connections close after
# KEEP_ALIVE_S.
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
KEEP_ALIVE_S = 5
# Host names every server answers to; --allowed_host adds more.
LOOPBACK_HOSTS = ('localhost', '127.0.0.1', '::1')


def host_name(value: str) -> Optional[str]:
  """The name in a Host header (or an --allowed_host): lower case, without the port or a
  trailing dot; IPv6 literals lose their brackets. None when it is malformed."""
  value = value.strip().lower()
  if value.startswith('['):  # [v6 address] or [v6 address]:port
    name, bracket, port = value[1:].partition(']')
    if not bracket or (port and not port.startswith(':')):
      return None
    port = port[1:]
  elif value.count(':') > 1:  # a bare IPv6 address (an --allowed_host, not a header)
    name, port = value, ''
  else:
    name, _, port = value.partition(':')
  if (port and not port.isdigit()) or not name.rstrip('.'):
    return None
  return name.rstrip('.')


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> frozenset[str]:
  """The Host names a server bound to `bound` answers to: the loopback names, the bound
  address itself unless it is a wildcard (0.0.0.0, ::), and `extra` (--allowed_host)."""
  names = set(LOOPBACK_HOSTS)
  if bound not in ('0.0.0.0', '::', ''):
    names.add(host_name(bound) or bound)
  for name in extra:
    if not host_name(name):
      raise ValueError(f'--allowed_host {name!r}: give a host name or address, e.g. '
                       'poems.example.org or 192.168.1.5')
    names.add(host_name(name))
  return frozenset(names)


_SECURITY_HEADERS = [(b'content-security-policy', b"default-src 'self'"),
                     (b'x-content-type-options', b'nosniff')]


class Guard:
  """Pure ASGI middleware in front of the whole app (a BaseHTTPMiddleware cannot stop a
  body being read): refuses unknown Host headers (421), bodies past MAX_BODY_BYTES as
  they arrive, chunked or not (413, whatever Content-Length claimed), bodies slower than
  BODY_TIMEOUT_S (408), and POSTs without a length (411); adds the security headers.

  Refusals close the connection (`Connection: close`), so the rest of a refused body is
  never read; the app is told the client left and anything it still sends is dropped.
  """

  def __init__(self, app, hosts: frozenset[str]):
    self.app, self.hosts = app, hosts

  async def __call__(self, scope, receive, send):
    if scope['type'] != 'http':
      return await self.app(scope, receive, send)
    headers = {}
    for name, value in scope['headers']:
      headers.setdefault(name.decode('latin-1'), value.decode('latin-1'))
    state = {'started': False, 'refused': False, 'received': 0, 'complete': False}

    async def guarded_send(message):
      if state['refused']:
        return  # the client already has its answer
      if message['type'] == 'http.response.start':
        state['started'] = True
        message = dict(message, headers=list(message.get('headers', [])) + _SECURITY_HEADERS)
      await send(message)

    async def refuse(status: int, detail: str):
      if not state['started']:
        response = responses.JSONResponse({'detail': detail}, status,
                                          headers={'Connection': 'close'})
        await response(scope, receive, guarded_send)
      state['refused'] = True

    problem = self._check_headers(scope, headers)
    if problem:
      return await refuse(*problem)
    deadline = asyncio.get_running_loop().time() + BODY_TIMEOUT_S

    async def counted_receive():
      if state['refused']:
        return {'type': 'http.disconnect'}
      if state['complete']:  # after the body: waits for a disconnect, with no deadline
        return await receive()
      try:
        message = await asyncio.wait_for(receive(),
                                         deadline - asyncio.get_running_loop().time())
      except asyncio.TimeoutError:
        await refuse(408, f'the request body did not arrive within {BODY_TIMEOUT_S:g} s')
        return {'type': 'http.disconnect'}
      if message['type'] == 'http.request':
        state['received'] += len(message.get('body', b''))
        if state['received'] > MAX_BODY_BYTES:
          await refuse(413, f'request body over {MAX_BODY_BYTES} bytes')
          return {'type': 'http.disconnect'}
        state['complete'] = not message.get('more_body', False)
      return message

    await self.app(scope, counted_receive, guarded_send)

  def _check_headers(self, scope, headers: dict) -> Optional[tuple[int, str]]:
    """(status, detail) of a request refused from its headers alone, else None."""
    host = headers.get('host')
    if host is None or host_name(host) not in self.hosts:
      shown = 'no Host header' if host is None else f'Host {host[:100]!r}'
      return 421, (f'{shown} is not a name this server answers to; its operator can add one '
                   'with `t5x serve --allowed_host NAME`')
    length = headers.get('content-length')
    chunked = 'chunked' in headers.get('transfer-encoding', '').lower()
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
      return 413, f'request body over {MAX_BODY_BYTES} bytes'
    if scope['method'] == 'POST' and length is None and not chunked:
      return 411, 'send a Content-Length header (or a chunked body)'
    return None


class DeadlineProtocol(H11Protocol):
  """uvicorn's h11 protocol with a deadline on each request line and its headers.

  uvicorn's own timeout_keep_alive restarts with every byte, so a client sending one
  header byte every few seconds holds a connection forever (slowloris). Here the request
  line and headers must be complete within HEADER_TIMEOUT_S of the connection or of the
  previous response; otherwise the connection closes, with a 408 if part of a request
  had arrived (an idle connection just closes, as after keep-alive).
  """

  def connection_made(self, transport):
    self._header_timer, self._partial = None, False
    super().connection_made(transport)
    self._arm()

  def _arm(self):
    self._disarm()
    self._partial = False
    self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_too_slow)

  def _disarm(self):
    if self._header_timer is not None:
      self._header_timer.cancel()
      self._header_timer = None

  def data_received(self, data: bytes) -> None:
    self._partial = self._partial or bool(data)
    super().data_received(data)

  def handle_events(self) -> None:
    cycle = self.cycle
    super().handle_events()
    if self.cycle is not cycle:  # a request line and its headers arrived
      self._disarm()

  def on_response_complete(self) -> None:
    if not self.transport.is_closing():
      self._arm()  # the next request on this connection gets its own deadline
    super().on_response_complete()

  def connection_lost(self, exc) -> None:
    self._disarm()
    super().connection_lost(exc)

  def _headers_too_slow(self) -> None:
    self._header_timer = None
    if self.transport.is_closing():
      return
    # Part of a request came (now, or buffered behind the previous one): say why we close.
    if self._partial or self.conn.trailing_data[0]:
      detail = json.dumps({'detail': f'the request headers did not arrive within '
                                     f'{HEADER_TIMEOUT_S:g} s'}).encode()
      self.transport.write(b'HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n'
                           b'connection: close\r\ncontent-length: %d\r\n\r\n%s'
                           % (len(detail), detail))
    self.transport.close()


def make_server(app, **config) -> uvicorn.Server:
  """A uvicorn server for `app` with the slow-client deadlines (run it with
  `.run(sockets=[serve.bind(...)])`); `config` adds uvicorn.Config settings."""
  return uvicorn.Server(uvicorn.Config(app, http=DeadlineProtocol,
                                       timeout_keep_alive=KEEP_ALIVE_S,
                                       **{'log_level': 'warning', **config}))


def startup_notes(host: str, hosts: frozenset[str]) -> list[str]:
  """What `serve` says about who can reach it, bound to `host` answering to `hosts`."""
  notes = []
  if host not in LOOPBACK_HOSTS:
    notes.append(f'note: {host} lets anyone who reaches it use the model and save sessions '
                 'here; the page has no login.')
  if set(hosts) == set(LOOPBACK_HOSTS) and host not in LOOPBACK_HOSTS:
    notes.append(f'note: only requests addressed to {", ".join(LOOPBACK_HOSTS)} are answered '
                 '(others get 421, a guard against DNS rebinding); add the names clients '
                 'use with --allowed_host NAME (repeatable)')
  elif set(hosts) != set(LOOPBACK_HOSTS):
    notes.append(f'answering to Host names: {", ".join(sorted(hosts))}')
  return notes
