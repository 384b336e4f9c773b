"""Every model-size gin file builds the architecture transformers builds, to the parameter."""
import pathlib

import gin
import pytest
import torch
import transformers

from t5x.conversion import hf_convert
from t5x import model_config
from t5x.examples.t5 import network

GIN_DIR = pathlib.Path(__file__).resolve().parents[1] / 'gin'
SIZE_FILES = sorted(str(p.relative_to(GIN_DIR)) for p in (GIN_DIR / 'models').glob('*/*.gin'))
EXPECTED_FILES = (
    [f'models/t5_1_1/{s}.gin' for s in ('tiny', 'small', 'base', 'large', 'xl', 'xxl')]
    + [f'models/t5_1_0/{s}.gin' for s in ('small', 'base', 'large', '3B', '11B')]
    + [f'models/mt5/{s}.gin' for s in ('small', 'base', 'large', 'xl', 'xxl')]
    + [f'models/byt5/{s}.gin' for s in ('small', 'base', 'large', 'xl', 'xxl')])
VOCAB_SIZES = {'mt5': 250112, 'byt5': 384}  # the other families: 32128


def config_from_gin(name: str) -> network.T5Config:
  gin.clear_config()
  try:
    gin.add_config_file_search_path(str(GIN_DIR))
    gin.parse_config_file(name)
    return gin.get_configurable(network.T5Config)()
  finally:
    gin.clear_config()


def _transformers_count(cfg: network.T5Config) -> int:
  """Parameters of transformers' T5ForConditionalGeneration for `cfg`, built on meta."""
  with torch.device('meta'):
    model = transformers.T5ForConditionalGeneration(
        transformers.T5Config(**hf_convert.config_to_hf(cfg)))
    if not cfg.logits_via_embedding:
      # transformers declares the head tied; an untied checkpoint gives it its own tensor.
      model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
  return model.num_parameters()


def test_every_size_has_a_gin_file():
  assert set(EXPECTED_FILES) <= set(SIZE_FILES)


@pytest.mark.parametrize('name', SIZE_FILES)
def test_parameter_count_equals_transformers(name):
  cfg = config_from_gin(name)
  assert cfg.vocab_size == VOCAB_SIZES.get(name.split('/')[1], 32128)
  ours = model_config.count_params(cfg)
  assert ours == _transformers_count(cfg)


def test_known_published_sizes():
  # Orders of magnitude the papers quote, as a guard against two matching mistakes.
  assert 11.2e9 < model_config.count_params(config_from_gin('models/t5_1_0/11B.gin')) < 11.4e9
  assert 2.8e9 < model_config.count_params(config_from_gin('models/t5_1_0/3B.gin')) < 2.9e9
  assert 12.8e9 < model_config.count_params(config_from_gin('models/mt5/xxl.gin')) < 13.0e9
  # ByT5 (Xue et al. 2022, table 1): small 300M, base 582M, xxl 12.9B.
  assert 0.29e9 < model_config.count_params(config_from_gin('models/byt5/small.gin')) < 0.31e9
  assert 0.57e9 < model_config.count_params(config_from_gin('models/byt5/base.gin')) < 0.59e9
  assert 12.8e9 < model_config.count_params(config_from_gin('models/byt5/xxl.gin')) < 13.0e9
