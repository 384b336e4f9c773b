"""A MODEL_DIR written before the engine became the package `t5x` still loads, decodes,
exports and resumes training.

The fixture is the tiny quickstart model trained 2 steps by the pre-rename code (its
config.gin imports `t5x_engine.network`, `t5x_engine.optimizers`, ...; its
model-info.txt lists the parameters that code built). Each test works on a copy.
"""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

import t5x
from conftest import ENV, ROOT
from t5x import checkpoints, decoding, gin_utils, loader, model_config
from t5x.examples.t5.network import Transformer
from t5x_cli import main as cli

FIXTURE = ROOT / 'tests' / 'fixtures' / 'model_dir_before_rename'
FORMER = 't5x_engine'
PROMPTS = ["Write a poetic sentence about 'sea'", "Write a haiku about 'moon'"]


@pytest.fixture
def model_dir(tmp_path):
  return shutil.copytree(FIXTURE, tmp_path / 'model')


def _model_info(path) -> tuple[int, dict[str, tuple[int, ...]]]:
  """(parameter count, {name: shape}) from a model-info.txt of the pre-rename code."""
  lines = path.read_text().splitlines()
  count = int(re.match(r'# ([\d,]+) parameters', lines[0])[1].replace(',', ''))
  shapes = {}
  for line in lines[2:]:
    name, shape = re.match(r'(\S+)  (\([\d, ]*\))', line).groups()
    shapes[name] = tuple(int(d) for d in shape.strip('()').split(',') if d.strip())
  return count, shapes


def test_fixture_names_the_former_package():
  text = (FIXTURE / 'config.gin').read_text()
  assert f'from {FORMER} import network' in text
  assert f'from {FORMER} import train as train_script' in text


def test_former_modules_resolve_to_the_engine():
  assert gin_utils.engine_module(f'{FORMER}.network') == 't5x.examples.t5.network'
  assert gin_utils.engine_module(f'{FORMER}.evaluation') == 't5x.eval'
  assert gin_utils.engine_module(f'{FORMER}.optimizers') == 't5x.optimizers'
  assert gin_utils.engine_module('t5x.models') is None  # importable: read as written
  assert gin_utils.engine_module(f'{FORMER}.not_a_module') is None


def test_loads_the_parameters_and_architecture_it_holds(model_dir):
  model = t5x.load(model_dir)
  count, shapes = _model_info(model_dir / 'model-info.txt')
  assert model_config.param_shapes(model.config) == shapes
  assert model_config.count_params(model.config) == count
  # The config's non-shape fields come from config.gin; the shape fields from the tree.
  bound = gin_utils.config_from_gin(str(model_dir / 'config.gin'))
  for field in ('emb_dim', 'num_heads', 'head_dim', 'mlp_dim', 'num_encoder_layers',
                'num_decoder_layers', 'vocab_size', 'mlp_activations', 'dtype'):
    assert getattr(model.config, field) == bound[field], field
  stored = model_config.flatten(checkpoints.restore_target(str(model_dir / 'checkpoint_2')))
  loaded = model_config.flatten(model.params)
  assert stored.keys() == loaded.keys()
  for name, value in stored.items():
    np.testing.assert_array_equal(np.asarray(loaded[name]), np.asarray(value), err_msg=name)


def test_greedy_decode_equal_through_load_and_the_exported_folder(model_dir, tmp_path, capsys):
  out = tmp_path / 'hf'
  assert cli.main(['export-hf', str(model_dir), str(out)]) == 0
  assert 'token-identical' in capsys.readouterr().out
  model = t5x.load(model_dir)
  enc = model.encode_texts(PROMPTS)
  length = 16
  ours, _ = decoding.generate(Transformer(model.config), model.params, enc,
                              decoding.DecodeOptions(max_decode_length=length))
  hf = transformers.T5ForConditionalGeneration.from_pretrained(str(out)).eval()
  with torch.no_grad():
    theirs = hf.generate(input_ids=torch.tensor(enc, dtype=torch.long),
                         attention_mask=torch.tensor(enc != 0, dtype=torch.long),
                         max_new_tokens=length, do_sample=False, num_beams=1)
  theirs = theirs.numpy()[:, 1:]  # without the decoder's start token (0)
  for row in range(len(PROMPTS)):
    a = loader.until_eos(np.asarray(ours)[row, 0])
    b = loader.until_eos(theirs[row])
    assert a and a == b, (row, a, b)


@pytest.mark.slow
def test_resumes_training_from_its_checkpoint(model_dir):
  before = [json.loads(line) for line in (model_dir / 'metrics.jsonl').read_text().splitlines()]
  proc = subprocess.run(
      [sys.executable, '-m', 't5x_cli.main', 'train', f'--gin_file={model_dir}/config.gin',
       f'--gin.MODEL_DIR="{model_dir}"', '--gin.TRAIN_STEPS=4'],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # One warning names the file and what its former imports were read as.
  warnings = [l for l in proc.stderr.splitlines() if 'not installed' in l]
  assert len(warnings) == 1 and 'config.gin imports modules' in warnings[0], proc.stderr[-3000:]
  assert f'line 4: {FORMER}.network as t5x.examples.t5.network' in warnings[0]
  assert f'{FORMER}.train as t5x.train' in warnings[0]
  assert checkpoints.steps(str(model_dir)) == [2, 4]
  after = [json.loads(line) for line in (model_dir / 'metrics.jsonl').read_text().splitlines()]
  assert after[:len(before)] == before  # the earlier run's records are kept
  new_steps = {r['step'] for r in after[len(before):]}
  assert new_steps == {4}, new_steps  # continued from step 2: nothing before step 3 again
  first = model_config.flatten(checkpoints.restore_target(str(model_dir / 'checkpoint_2')))
  last = model_config.flatten(checkpoints.restore_target(str(model_dir / 'checkpoint_4')))
  assert any(not np.array_equal(first[k], last[k]) for k in first)  # it trained
  # The run's new config.gin names the engine's modules, so the next resume needs no help.
  text = (model_dir / 'config.gin').read_text()
  assert FORMER not in text and 'from t5x.examples.t5 import network' in text
