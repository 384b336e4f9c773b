"""What the tests know about ../shared/fixtures/t5x (written by upstream T5X; see its
README): the network it holds and its npz files' key format."""
import re

import numpy as np

# The network of ../shared/fixtures/t5x/README.md (T5X's T5Config arguments).
FIXTURE_NETWORK = dict(vocab_size=384, emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128,
                       num_encoder_layers=2, num_decoder_layers=2,
                       mlp_activations=('gelu', 'linear'), logits_via_embedding=False,
                       dropout_rate=0.0, dtype='float32')


def npz_tree(path, prefix=''):
  """{"update_1['a']['b']": array} -> {'a/b': array} for keys starting with prefix."""
  flat = {}
  with np.load(path) as z:
    for key in z.files:
      if key.startswith(prefix):
        names = re.findall(r"\['([^']*)'\]", key[len(prefix):])
        flat['/'.join(names)] = z[key]
  return flat
