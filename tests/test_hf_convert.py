"""`t5x import-hf` / `t5x export-hf`: exact round trips, loadable exports, clear errors."""
import io
import json
import os
import shutil

import numpy as np
import pytest
import sentencepiece as spm
import torch
import transformers
from safetensors.numpy import load_file, save_file

import hf_models
import t5x
from t5x_cli import main as cli
from t5x import model_config

WORDS = ('the moon over still water a poem of rain and autumn wind write a haiku about '
         'snow in the mountains rhyme with light night bright sonnet verse line').split()


@pytest.fixture(scope='session')
def spiece_model(tmp_path_factory) -> str:
  """A SentencePiece model with T5's special ids (pad 0, eos 1, unk 2)."""
  rng = np.random.RandomState(0)
  lines = [' '.join(rng.choice(WORDS, 12)) for _ in range(400)]
  blob = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=blob, vocab_size=48, model_type='unigram',
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
  path = tmp_path_factory.mktemp('vocab') / 'spiece.model'
  path.write_bytes(blob.getvalue())
  return str(path)


@pytest.fixture(scope='session', params=sorted(hf_models.VARIANTS))
def hf_dir(request, tmp_path_factory, spiece_model):
  """(variant, transformers model, folder written by save_pretrained with spiece.model)."""
  model = hf_models.make(request.param, 'small', seed=7)
  folder = tmp_path_factory.mktemp(f'hf_{request.param}')
  model.save_pretrained(folder)
  shutil.copyfile(spiece_model, folder / 'spiece.model')
  return request.param, model, str(folder)


def _run(*argv) -> int:
  return cli.main([str(a) for a in argv])


def test_hf_to_ours_to_hf_is_bit_exact(hf_dir, tmp_path):
  variant, _, folder = hf_dir
  assert _run('import-hf', folder, tmp_path / 'model') == 0
  assert _run('export-hf', tmp_path / 'model', tmp_path / 'back') == 0
  source = load_file(os.path.join(folder, 'model.safetensors'))
  back = load_file(str(tmp_path / 'back' / 'model.safetensors'))
  assert set(back) == set(source)
  assert ('lm_head.weight' in back) == (variant == 't5_1_1')
  for key, value in source.items():
    assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
    assert back[key].tobytes() == value.tobytes(), key


def test_export_loads_in_transformers_with_equal_logits(hf_dir, tmp_path):
  _, model, folder = hf_dir
  _run('import-hf', folder, tmp_path / 'model')
  _run('export-hf', tmp_path / 'model', tmp_path / 'out')
  loaded, info = transformers.T5ForConditionalGeneration.from_pretrained(
      tmp_path / 'out', output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'] and not info['mismatched_keys']
  enc, dec = hf_models.padded_batch(model.config.vocab_size, seed=3)
  expected = hf_models.hf_logits(model, enc, dec)
  assert np.abs(hf_models.hf_logits(loaded.eval(), enc, dec) - expected).max() == 0.0
  ours = t5x.load(str(tmp_path / 'model')).logits(enc, dec)
  assert np.abs(ours - expected).max() <= 1e-4


def test_exported_tokenizer_matches_sentencepiece(hf_dir, tmp_path, spiece_model):
  _, _, folder = hf_dir
  _run('import-hf', folder, tmp_path / 'model')
  assert (tmp_path / 'model' / 'spiece.model').read_bytes() == open(spiece_model, 'rb').read()
  _run('export-hf', tmp_path / 'model', tmp_path / 'out')
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'out')
  sp = spm.SentencePieceProcessor(model_file=spiece_model)
  text = 'write a haiku about the moon over still water'
  assert tok(text)['input_ids'] == sp.encode(text) + [1]  # T5 appends EOS (id 1)
  assert tok.pad_token_id == 0 and tok.eos_token_id == 1


def test_pytorch_bin_imports_like_safetensors(hf_dir, tmp_path):
  _, model, folder = hf_dir
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  shutil.copyfile(os.path.join(folder, 'config.json'), bin_dir / 'config.json')
  torch.save(model.state_dict(), bin_dir / 'pytorch_model.bin')
  a, b = t5x.load(str(bin_dir)), t5x.load(folder)
  fa, fb = model_config.flatten(a.params), model_config.flatten(b.params)
  assert fa.keys() == fb.keys()
  for key in fa:
    np.testing.assert_array_equal(fa[key], fb[key])


# ----------------------------------------------------------------------------- bad input

def _broken_copy(folder, tmp_path, edit):
  """A copy of the HF folder whose tensors `edit` changes in place."""
  broken = tmp_path / 'broken'
  shutil.copytree(folder, broken)
  tensors = load_file(str(broken / 'model.safetensors'))
  edit(tensors)
  save_file(tensors, str(broken / 'model.safetensors'), metadata={'format': 'pt'})
  return broken


def _expect_error(capsys, argv, *fragments):
  assert _run(*argv) == 2
  err = capsys.readouterr().err
  for fragment in fragments:
    assert fragment in err, err
  return err


KEY = 'encoder.block.1.layer.0.SelfAttention.k.weight'


def test_missing_tensor_names_the_key_and_writes_nothing(hf_dir, tmp_path, capsys):
  broken = _broken_copy(hf_dir[2], tmp_path, lambda t: t.pop(KEY))
  _expect_error(capsys, ['import-hf', broken, tmp_path / 'out'], KEY, 'missing', '(16, 16)')
  assert not (tmp_path / 'out').exists()
  assert [p for p in os.listdir(tmp_path) if p != 'broken'] == []


def test_misshaped_tensor_names_key_and_both_shapes(hf_dir, tmp_path, capsys):
  broken = _broken_copy(hf_dir[2], tmp_path, lambda t: t.update({KEY: np.zeros((16, 12), np.float32)}))
  _expect_error(capsys, ['import-hf', broken, tmp_path / 'out'], KEY, '(16, 12)', '(16, 16)')
  assert not (tmp_path / 'out').exists()


def test_config_of_another_architecture_is_refused(hf_dir, tmp_path, capsys):
  broken = tmp_path / 'bart'
  shutil.copytree(hf_dir[2], broken)
  config = json.loads((broken / 'config.json').read_text())
  config.update(model_type='bart', architectures=['BartForConditionalGeneration'])
  (broken / 'config.json').write_text(json.dumps(config))
  _expect_error(capsys, ['import-hf', broken, tmp_path / 'out'], 'config.json', "'bart'")
  assert not (tmp_path / 'out').exists()


def test_folder_without_weights_is_refused(hf_dir, tmp_path, capsys):
  empty = tmp_path / 'no_weights'
  empty.mkdir()
  shutil.copyfile(os.path.join(hf_dir[2], 'config.json'), empty / 'config.json')
  _expect_error(capsys, ['import-hf', empty, tmp_path / 'out'], str(empty), 'no weights',
                'model.safetensors')
  assert not (tmp_path / 'out').exists()


def test_non_empty_output_folder_is_left_alone(hf_dir, tmp_path, capsys):
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'keep.txt').write_text('mine')
  _expect_error(capsys, ['import-hf', hf_dir[2], out], str(out), 'not empty')
  assert os.listdir(out) == ['keep.txt']


@pytest.mark.parametrize('content, message', [
    (b'{"model_type": "t5",\n "d_model": 8,,}', ':2: not valid JSON (Expecting property name'),
    (b'{"model_type": "t5",\n "name": "caf\xe9"}', ':2: not valid UTF-8 (byte 14 of the line'),
])
def test_config_json_errors_name_file_and_line(tmp_path, capsys, content, message):
  (tmp_path / 'hf').mkdir()
  (tmp_path / 'hf' / 'config.json').write_bytes(content)
  _expect_error(capsys, ['import-hf', tmp_path / 'hf', tmp_path / 'out'],
                f'{tmp_path / "hf" / "config.json"}{message}')
  assert not (tmp_path / 'out').exists()


def test_config_json_with_a_byte_order_mark_reads(tmp_path):
  from t5x.conversion import hf_convert
  config = {'model_type': 't5', 'vocab_size': 32, 'd_model': 8, 'num_heads': 2,
            'num_layers': 1, 'd_kv': 4, 'd_ff': 16}
  (tmp_path / 'config.json').write_bytes(b'\xef\xbb\xbf' + json.dumps(config).encode())
  cfg, raw = hf_convert.read_hf_config(str(tmp_path))
  assert raw == config and (cfg.emb_dim, cfg.vocab_size) == (8, 32)


@pytest.fixture(scope='module')
def wide_weights_dir(tmp_path_factory):
  """A T5 1.1 (4 + 3 layers) with every weight drawn at N(0, 0.5): logits near 7, where
  float32 round-off on either side reaches 1e-3."""
  torch.manual_seed(3)
  config = transformers.T5Config(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=4,
                                 num_decoder_layers=3, num_heads=4, dropout_rate=0.0,
                                 feed_forward_proj='gated-gelu', tie_word_embeddings=False)
  model = transformers.T5ForConditionalGeneration(config)
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, 0.5)
  folder = tmp_path_factory.mktemp('wide') / 'hf'
  model.eval().save_pretrained(folder)
  model_dir = tmp_path_factory.mktemp('wide') / 'model'
  assert _run('import-hf', folder, model_dir) == 0
  return model_dir


def test_round_trip_of_wide_random_weights_verifies_in_float64(wide_weights_dir, tmp_path,
                                                               capsys):
  """import-hf then export-hf of the N(0, 0.5) model passes verification (its float32
  logits differ from transformers' by ~1e-3, over the old fixed 1e-4); in float64 the two
  agree to round-off, far inside 1e-8 of the largest logit."""
  from t5x.conversion import converters
  report = converters.export_hf(str(wide_weights_dir), str(tmp_path / 'back'))
  print(f"N(0, 0.5) round trip: float64 logits max |diff| {report['logits_max_abs_diff']:.2e} "
        f"(tolerance {report['logits_tolerance']:.2e}); float32 "
        f"{report['logits_float32_max_abs_diff']:.2e}")
  assert report['logits_max_abs_diff'] <= report['logits_tolerance'] and report['greedy_identical']
  assert report['logits_max_abs_diff'] < 1e-10  # round-off in float64, not a loose bound
  assert report['logits_float32_max_abs_diff'] > 1e-4  # what the float32 rule refused


def test_one_tensor_scaled_by_one_percent_is_refused_in_float64(wide_weights_dir, tmp_path,
                                                                monkeypatch):
  from t5x.conversion import converters, hf_export
  real = hf_export.hf_convert.write_hf_files

  def corrupt(folder, params, cfg, vocab):
    layer = params['encoder']['layers_2']
    scaled = dict(layer, mlp=dict(layer['mlp'], wo={
        'kernel': np.asarray(layer['mlp']['wo']['kernel']) * 1.01}))
    real(folder, dict(params, encoder=dict(params['encoder'], layers_2=scaled)), cfg, vocab)

  monkeypatch.setattr(hf_export.hf_convert, 'write_hf_files', corrupt)
  with pytest.raises(hf_export.VerificationError, match='differ by .* in float64'):
    converters.export_hf(str(wide_weights_dir), str(tmp_path / 'bad'))
  assert not (tmp_path / 'bad').exists()
