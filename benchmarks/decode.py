"""Sampled-decoding throughput: t5x.decoding.generate against transformers' generate.

One random-weight T5 1.1 model (transformers' PyTorch T5 and its conversion into the
flax network, so both decode the very same weights), the same prompts and the same
settings on both sides; each side is warmed up (compiled, for JAX), then the two are
timed alternately over several repetitions (median). Prints generated tokens/s for each,
the ratio, and the load average (other processes on a 2-core machine skew both sides).

Models (--preset): "small" (the default, small-ish): d_model 256, 4 encoder + 4 decoder
layers, 4 heads of 64, gated-gelu MLP of 1024, vocab 32128 (T5's); "quickstart":
gin/quickstart.gin's model (d_model 64, 2 + 2 layers, vocab 384). Batch 32, prompts of
16..64 tokens padded to 64, top-k 5 sampling at temperature 0.7, up to 32 new tokens.
Random weights rarely emit EOS, so both sides usually run all 32 steps; tokens are
counted up to EOS either way.

`--mesh DxM` adds a third row: the same decode as one program on a D x M mesh of
simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count), parameters
sharded by the training rules. It is a correctness run: the script checks that the mesh
decodes the very tokens one device decodes for the same seeds. Simulated devices share
the same 2 cores, so their time is not a speed figure.

Run: python benchmarks/decode.py [--preset small|quickstart] [--batch 32] [--reps 5]
     [--mesh 4x2]
Goal: >= 3x transformers' tokens/s with the small preset on a 2-core CPU.
"""
import argparse
import os
import sys
import time

os.environ.setdefault('JAX_PLATFORMS', 'cpu')


def _mesh_flag(argv) -> tuple[int, int] | None:
  """--mesh DxM from argv, read before JAX starts (it fixes its CPU device count then)."""
  for i, arg in enumerate(argv):
    value = arg.partition('=')[2] if arg.startswith('--mesh=') else (
        argv[i + 1] if arg == '--mesh' and i + 1 < len(argv) else None)
    if value:
      data, _, model = value.partition('x')
      return int(data), int(model)
  return None


MESH = _mesh_flag(sys.argv[1:])
if MESH:
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={MESH[0] * MESH[1]}')

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from t5x import decoding  # noqa: E402
from t5x import partitioning  # noqa: E402
from t5x.conversion import hf_convert  # noqa: E402
from t5x.examples.t5.network import Transformer  # noqa: E402

EOS = 1
# transformers.T5Config sizes (all T5 1.1: gated-gelu, untied head).
PRESETS = {
    'small': dict(vocab_size=32128, d_model=256, d_kv=64, num_heads=4, d_ff=1024,
                  num_layers=4, num_decoder_layers=4),
    # gin/quickstart.gin's model: its 384-piece vocabulary, d_model 64, 2 + 2 layers.
    'quickstart': dict(vocab_size=384, d_model=64, d_kv=16, num_heads=4, d_ff=128,
                       num_layers=2, num_decoder_layers=2),
}


def make_models(preset: str):
  """(transformers model, flax module, flax params) with identical random weights."""
  torch.manual_seed(0)
  hf_cfg = transformers.T5Config(
      **PRESETS[preset], feed_forward_proj='gated-gelu', tie_word_embeddings=False,
      dropout_rate=0.0, decoder_start_token_id=0, eos_token_id=EOS, pad_token_id=0)
  hf_model = transformers.T5ForConditionalGeneration(hf_cfg).eval()
  cfg = hf_convert.config_from_hf(hf_cfg.to_dict(), 'benchmark config')
  tensors = {k: v.detach().numpy().copy() for k, v in hf_model.state_dict().items()}
  params = hf_convert.params_from_state_dict(tensors, cfg, 'benchmark weights')
  return hf_model, Transformer(cfg), jax.device_put(params)


def make_prompts(batch: int, length: int, vocab: int) -> np.ndarray:
  """int32 [batch, length]: random tokens, 16..length long, then EOS and padding."""
  rng = np.random.RandomState(0)
  prompts = np.zeros((batch, length), np.int32)
  for row, n in enumerate(rng.randint(16, length, batch)):
    prompts[row, :n - 1] = rng.randint(2, vocab, n - 1)
    prompts[row, n - 1] = EOS
  return prompts


def generated_tokens(tokens: np.ndarray) -> int:
  """Tokens per row up to and including the first EOS (all of them if none), summed."""
  tokens = tokens.reshape(-1, tokens.shape[-1])
  hit = tokens == EOS
  lengths = np.where(hit.any(1), hit.argmax(1) + 1, tokens.shape[1])
  return int(lengths.sum())


def time_both(fns, reps: int) -> list[tuple[float, int]]:
  """[(median seconds per call, generated tokens of the last call)] for each of `fns`.

  Each runs once to warm up (compile), then the calls alternate, so a change in the
  machine's load during the run hits both sides alike.
  """
  for fn in fns:
    fn()
  times, counts = [[] for _ in fns], [0] * len(fns)
  for _ in range(reps):
    for i, fn in enumerate(fns):
      start = time.perf_counter()
      counts[i] = fn()
      times[i].append(time.perf_counter() - start)
  return [(float(np.median(t)), c) for t, c in zip(times, counts)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--prompt_length', type=int, default=64)
  parser.add_argument('--max_length', type=int, default=32)
  parser.add_argument('--preset', choices=sorted(PRESETS), default='small')
  parser.add_argument('--top_k', type=int, default=5)
  parser.add_argument('--temperature', type=float, default=0.7)
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--mesh', default=None,
                      help='DxM: also decode on a mesh of D*M simulated devices (correctness)')
  args = parser.parse_args()

  threads = os.cpu_count()
  torch.set_num_threads(threads)
  hf_model, module, params = make_models(args.preset)
  vocab = PRESETS[args.preset]['vocab_size']
  prompts = make_prompts(args.batch, args.prompt_length, vocab)
  options = decoding.DecodeOptions(decode='sample', max_decode_length=args.max_length,
                                   temperature=args.temperature, top_k=args.top_k)
  seeds = iter(range(10 ** 6))

  def ours(partitioner=None, placed=params, seed=None):
    seed = next(seeds) if seed is None else seed
    tokens, _ = decoding.generate(module, placed, prompts,
                                  decoding.DecodeOptions(**{**options.__dict__, 'seed': seed}),
                                  eos_id=EOS, partitioner=partitioner)
    return generated_tokens(tokens), tokens

  fns = [lambda: ours()[0]]
  if MESH:
    mesh = partitioning.PjitPartitioner(MESH[1], devices=jax.devices())
    on_mesh = decoding.place_params(module, params, mesh)
    fns.append(lambda: ours(mesh, on_mesh)[0])

  input_ids = torch.tensor(prompts, dtype=torch.long)
  mask = (input_ids != 0).long()

  def theirs():
    with torch.inference_mode():
      out = hf_model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True,
                              top_k=args.top_k, top_p=1.0, temperature=args.temperature,
                              num_beams=1, max_new_tokens=args.max_length,
                              decoder_start_token_id=0, eos_token_id=EOS, pad_token_id=0)
    return generated_tokens(out[:, 1:].numpy())

  size = PRESETS[args.preset]
  print(f'model {args.preset}: T5 1.1, d_model {size["d_model"]}, {size["num_layers"]}+'
        f'{size["num_decoder_layers"]} layers, vocab {vocab}; batch {args.batch}, '
        f'prompts <= {args.prompt_length}, top-k {args.top_k}, '
        f'temperature {args.temperature}, max length {args.max_length}; {threads} CPU threads; '
        f'jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__}, '
        f'transformers {transformers.__version__}; load average {os.getloadavg()[0]:.2f}')
  timed = time_both(fns + [theirs], args.reps)
  (t_ours, n_ours), (t_theirs, n_theirs) = timed[0], timed[-1]
  ours_tps, theirs_tps = n_ours / t_ours, n_theirs / t_theirs
  print(f't5x.decoding.generate: {t_ours * 1e3:8.1f} ms/batch  {n_ours:5d} tokens  '
        f'{ours_tps:9.1f} tokens/s')
  print(f'transformers generate:        {t_theirs * 1e3:8.1f} ms/batch  {n_theirs:5d} tokens  '
        f'{theirs_tps:9.1f} tokens/s')
  print(f'ratio (ours / transformers): {ours_tps / theirs_tps:.2f}x  (goal >= 3x)')
  if MESH:
    t_mesh, n_mesh = timed[1]
    same = all(np.array_equal(ours(seed=s)[1], ours(mesh, on_mesh, seed=s)[1]) for s in (0, 1))
    print(f'{MESH[0]}x{MESH[1]} simulated mesh (correctness run; simulated devices share the '
          f'CPU, not a speed figure): {t_mesh * 1e3:8.1f} ms/batch  {n_mesh:5d} tokens; '
          f'tokens identical to one device for seeds 0 and 1: {"yes" if same else "NO"}')


if __name__ == '__main__':
  main()
