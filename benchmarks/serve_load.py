"""Load test of `t5x serve`: concurrent suggestion requests on loopback.

    python benchmarks/serve_load.py --checkpoint /tmp/t5x_quickstart    # starts a server
    python benchmarks/serve_load.py --url http://127.0.0.1:8080          # or uses one

First `--sequential` requests go one at a time (each decodes alone), then `--requests`
requests are fired `--concurrency` at once. Every request must succeed with n
suggestions; the script prints client-side p50/p95 latency of both phases, how many
requests shared each decode, and the ratio of concurrent to sequential throughput
(requests/s). It exits 1 if any request failed. Requests time out after `--timeout` s,
so a run is bounded.
"""
import argparse
import concurrent.futures
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Iterator, Optional, Sequence

import numpy as np

INSTRUCTIONS = (
    "Write a poetic sentence that ends in a word which rhymes with 'night'",
    "Write a next sentence in a poetry given the previous sentence 'The sea is calm tonight'",
    "Write a metaphor about 'time'",
    "Write a poetic sentence that contains the word 'destiny'",
    "Write a simile about 'love'",
    "Write a haiku about 'snow'",
)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 120.0) -> tuple[int, dict]:
  """(status, JSON body) of a POST; HTTP errors are returned, not raised."""
  data = json.dumps(body).encode()
  request = urllib.request.Request(url, data, {'Content-Type': 'application/json'})
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read() or b'{}')


@contextlib.contextmanager
def running_server(checkpoint: str, log_dir: str, *, seed: Optional[int] = None,
                   env: Optional[dict] = None, timeout: float = 300.0,
                   flags: Sequence[str] = (), output_file: Optional[str] = None
                   ) -> Iterator[str]:
  """Starts `t5x serve` (with `flags` added) on a free loopback port; yields its URL once
  it answers; stops it. Its output goes to `output_file` when given."""
  port = free_port()
  command = [sys.executable, '-m', 't5x_cli.main', 'serve', '--checkpoint', str(checkpoint),
             '--port', str(port), '--log_dir', str(log_dir), *flags]
  if seed is not None:
    command += ['--seed', str(seed)]
  url = f'http://127.0.0.1:{port}'
  with (open(output_file, 'w+') if output_file else tempfile.TemporaryFile('w+')) as output:
    proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
      deadline = time.monotonic() + timeout
      while True:
        if proc.poll() is not None:
          output.seek(0)
          raise RuntimeError(f't5x serve exited with {proc.returncode}:\n{output.read()[-3000:]}')
        with contextlib.suppress(OSError):
          with urllib.request.urlopen(f'{url}/api/config', timeout=5):
            break
        if time.monotonic() > deadline:
          raise TimeoutError(f't5x serve did not answer within {timeout:.0f} s')
        time.sleep(0.5)
      yield url
    finally:
      proc.terminate()
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()


def one_request(url: str, index: int, n: int, timeout: float) -> dict:
  body = {'instruction': INSTRUCTIONS[index % len(INSTRUCTIONS)], 'n': n}
  start = time.perf_counter()
  status, reply = post(f'{url}/api/suggest', body, timeout)
  ok = status == 200 and len(reply.get('suggestions', [])) == n
  return {'ok': ok, 'status': status, 'ms': (time.perf_counter() - start) * 1000.0,
          'server_ms': reply.get('latency_ms'), 'shared': reply.get('batch', {}).get('requests'),
          'detail': None if ok else reply}


def phase(url: str, count: int, concurrency: int, n: int, timeout: float) -> dict:
  """Fires `count` requests, `concurrency` at a time; latency percentiles and throughput."""
  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    results = list(pool.map(lambda i: one_request(url, i, n, timeout), range(count)))
  wall = time.perf_counter() - start
  ms = np.array([r['ms'] for r in results])
  shared = [r['shared'] for r in results if r['shared']]
  return {'requests': count, 'concurrency': concurrency, 'succeeded': sum(r['ok'] for r in results),
          'p50_ms': float(np.percentile(ms, 50)), 'p95_ms': float(np.percentile(ms, 95)),
          'max_ms': float(ms.max()), 'wall_s': wall, 'requests_per_s': count / wall,
          'mean_shared': float(np.mean(shared)) if shared else 0.0,
          'max_shared': max(shared, default=0),
          'failures': [r['detail'] for r in results if not r['ok']][:3]}


def run(url: str, args) -> dict:
  sequential = phase(url, args.sequential, 1, args.n, args.timeout)
  concurrent_ = phase(url, args.requests, args.concurrency, args.n, args.timeout)
  for name, p in (('sequential', sequential), ('concurrent', concurrent_)):
    print(f"{name}: {p['succeeded']}/{p['requests']} succeeded, {p['concurrency']} at a time; "
          f"latency p50 {p['p50_ms']:.0f} ms, p95 {p['p95_ms']:.0f} ms, max {p['max_ms']:.0f} ms; "
          f"{p['requests_per_s']:.1f} requests/s; requests per decode: mean "
          f"{p['mean_shared']:.1f}, max {p['max_shared']}")
    for failure in p['failures']:
      print(f'  failed: {failure}')
  ratio = concurrent_['requests_per_s'] / sequential['requests_per_s']
  print(f'ratio (concurrent/sequential requests/s): {ratio:.2f}')
  return {'sequential': sequential, 'concurrent': concurrent_, 'ratio': ratio, 'n': args.n}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  where = parser.add_mutually_exclusive_group(required=True)
  where.add_argument('--checkpoint', help='serve this model on a free loopback port')
  where.add_argument('--url', help='an already running `t5x serve`')
  parser.add_argument('--requests', type=int, default=50)
  parser.add_argument('--concurrency', type=int, default=50)
  parser.add_argument('--sequential', type=int, default=10)
  parser.add_argument('--n', type=int, default=5, help='suggestions per request')
  parser.add_argument('--timeout', type=float, default=120.0, help='seconds per request')
  parser.add_argument('--json', default=None, help='also write the results here')
  args = parser.parse_args(argv)
  if args.url:
    result = run(args.url.rstrip('/'), args)
  else:
    with tempfile.TemporaryDirectory() as logs, running_server(args.checkpoint, logs) as url:
      result = run(url, args)
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
  failed = any(result[p]['succeeded'] < result[p]['requests'] for p in ('sequential', 'concurrent'))
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
