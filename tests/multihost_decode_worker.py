"""One process of a multi-host `t5x infer` / `t5x eval` job on localhost CPUs, or its
single-process reference.

    python multihost_decode_worker.py LOCAL_DEVICES COMMANDS_JSON [multi-host flags...]

COMMANDS_JSON is a list of `t5x` argument lists, run one after another in this process
(the multi-host flags are added to each; the job is joined once), or of
{"write_model": DIR}: a tiny random model with the quickstart's vocabulary, written
there. Prints `RESULT {json}` with each command's exit code and the process layout.
"""
import json
import os
import sys

LOCAL_DEVICES, COMMANDS = sys.argv[1:3]
os.environ['JAX_PLATFORMS'] = 'cpu'
import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', int(LOCAL_DEVICES))

from t5x_cli import main as cli  # noqa: E402


def write_model(folder: str) -> int:
  sys.path.insert(0, os.path.dirname(__file__))
  import train_helpers
  from t5x.conversion import converters
  from t5x_tasks import vocabularies
  model = train_helpers.tiny_model(num_heads=4, head_dim=8, emb_dim=32, mlp_dim=64,
                                   vocab_size=384)
  converters.write_model_dir(folder, model.init_params(jax.random.PRNGKey(1)),
                             model.module.config, vocabularies.QUICKSTART_SPM)
  return 0


def main():
  with open(COMMANDS) as f:
    commands = json.load(f)
  codes = [write_model(c['write_model']) if isinstance(c, dict) else cli.main(c + sys.argv[3:])
           for c in commands]
  print('RESULT ' + json.dumps({
      'codes': codes, 'process_index': jax.process_index(),
      'process_count': jax.process_count(), 'devices': jax.device_count()}), flush=True)


if __name__ == '__main__':
  main()
