"""Multi-host start-up: T5X's `--multiprocess_gpu` flags, on JAX's own distributed runtime.

Every process of a job calls `initialize` before touching a device. On GPU clusters the
flags (or SLURM's environment) name the coordinator and this process's rank; on a
multi-host Cloud TPU slice JAX finds its peers by itself. A single process does nothing.
The checks here run before JAX is contacted, so bad flags fail in a second with the
numbers at fault, never after a five-minute handshake timeout.
"""
import dataclasses
import logging
import os
import socket
import time
from typing import Optional

import jax

FLAGS = ('--multiprocess_gpu', '--coordinator_address', '--process_count', '--process_index',
         '--initialization_timeout')


@dataclasses.dataclass
class DistributedConfig:
  """The multi-host flags of `t5x train/infer/eval` (names as in T5X).

  multiprocess_gpu: start jax.distributed on GPUs (or CPUs) from the flags below, or from
    SLURM's environment when they are absent.
  coordinator_address: 'host:port' of process 0, which serves the coordinator.
  process_count, process_index: the number of processes and this one's rank.
  initialization_timeout: seconds to wait for the coordinator and every peer.
  """
  multiprocess_gpu: bool = False
  coordinator_address: Optional[str] = None
  process_count: Optional[int] = None
  process_index: Optional[int] = None
  initialization_timeout: int = 300


def parse_flags(args: list[str]) -> tuple[DistributedConfig, list[str]]:
  """Takes the multi-host flags out of `args`; returns (config, the other args)."""
  cfg, rest = DistributedConfig(), []
  for arg in args:
    name, eq, value = arg.partition('=')
    if name not in FLAGS:
      rest.append(arg)
      continue
    if name == '--multiprocess_gpu':
      cfg.multiprocess_gpu = value.lower() not in ('false', '0', 'no') if eq else True
      continue
    if not eq or not value:
      raise ValueError(f'{name} needs a value: {name}=VALUE')
    if name == '--coordinator_address':
      cfg.coordinator_address = value
    else:
      try:
        number = int(value)
      except ValueError:
        raise ValueError(f'{name}={value!r} is not an integer') from None
      setattr(cfg, name[2:], number)
  return cfg, rest


def initialize(cfg: DistributedConfig) -> None:
  """Joins this process to its job (once: a process already joined, by an earlier command
  in the same process, stays in it); no-op for a single-process run."""
  if jax.distributed.is_initialized():
    return
  explicit = (cfg.coordinator_address, cfg.process_count, cfg.process_index)
  if not cfg.multiprocess_gpu and not any(v is not None for v in explicit):
    if _on_multihost_tpu():
      logging.info('multi-host TPU slice detected; jax.distributed finds its peers')
      jax.distributed.initialize(initialization_timeout=cfg.initialization_timeout)
    return
  if all(v is None for v in explicit):
    # SLURM (and other clusters JAX knows) describe the job in the environment.
    jax.distributed.initialize(initialization_timeout=cfg.initialization_timeout)
    return
  host, port = check(cfg)
  if cfg.process_index != 0:
    wait_for_coordinator(host, port, cfg.initialization_timeout)
  jax.distributed.initialize(
      coordinator_address=cfg.coordinator_address, num_processes=cfg.process_count,
      process_id=cfg.process_index, initialization_timeout=cfg.initialization_timeout)
  logging.info('process %d of %d joined %s with %d local devices', jax.process_index(),
               jax.process_count(), cfg.coordinator_address, jax.local_device_count())


def check(cfg: DistributedConfig) -> tuple[str, int]:
  """Validates explicit flags; returns the coordinator's (host, port)."""
  missing = [f'--{name}' for name in ('coordinator_address', 'process_count', 'process_index')
             if getattr(cfg, name) is None]
  if missing:
    raise ValueError(f'multi-host flags incomplete: also give {", ".join(missing)} '
                     '(or none of them, to read SLURM\'s environment).')
  if cfg.process_count < 1:
    raise ValueError(f'--process_count={cfg.process_count}; it must be at least 1.')
  if not 0 <= cfg.process_index < cfg.process_count:
    raise ValueError(f'--process_index={cfg.process_index} is out of range for '
                     f'--process_count={cfg.process_count}; use 0 to {cfg.process_count - 1}.')
  host, sep, port = cfg.coordinator_address.rpartition(':')
  if not sep or not host or not port.isdigit():
    raise ValueError(f'--coordinator_address={cfg.coordinator_address!r}: write HOST:PORT, '
                     'e.g. 10.0.0.2:1234 (process 0 runs on HOST).')
  return host.strip('[]'), int(port)


def wait_for_coordinator(host: str, port: int, timeout: float) -> None:
  """Waits until process 0's coordinator accepts connections; raises after `timeout` s."""
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host, port), timeout=min(5.0, timeout)):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise TimeoutError(
            f'the coordinator at {host}:{port} did not answer within {timeout:g} s ({e}). '
            'Start process 0 (--process_index=0) on that host, check the address and '
            'firewall, or raise --initialization_timeout.') from None
      time.sleep(0.5)


def _on_multihost_tpu() -> bool:
  """True on one worker of a multi-host Cloud TPU slice (its runtime sets these)."""
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return ',' in hosts or bool(os.environ.get('MEGASCALE_COORDINATOR_ADDRESS'))
