"""T5X-style gin flags and search paths for `t5x train`; the model gin files; gin files
that name the engine's former module paths."""
import ast
import pathlib
import re

import gin
import pytest

from t5x import gin_utils

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_flags_split_like_t5x():
  files, bindings, paths, rest = gin_utils.split_flags([
      '--gin_file=quickstart.gin', '--gin_file', 'runs/finetune.gin',
      '--gin.MODEL_DIR="/tmp/m"', '--gin_bindings=TRAIN_STEPS = 5',
      '--gin_search_paths=/a,/b', '--unknown'])
  assert files == ['quickstart.gin', 'runs/finetune.gin']
  assert bindings == ['MODEL_DIR = "/tmp/m"', 'TRAIN_STEPS = 5']
  assert paths == ['/a', '/b'] and rest == ['--unknown']
  with pytest.raises(ValueError, match='--gin.NAME=VALUE'):
    gin_utils.split_flags(['--gin.MODEL_DIR'])


def test_relative_gin_files_resolve_from_any_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  gin_utils.parse(['quickstart.gin'], ['MODEL_DIR = "/tmp/m"', 'TRAIN_STEPS = 5'])
  assert gin.query_parameter('MODEL_DIR/gin.macro.value') == '/tmp/m'
  assert gin.query_parameter('TRAIN_STEPS/gin.macro.value') == 5
  # The included files' T5X fine-tuning defaults are in force.
  assert gin.query_parameter('adafactor.Adafactor.decay_rate') == 0.8
  assert gin.query_parameter('adafactor.Adafactor.clipping_threshold') == 1.0
  assert gin.query_parameter('adafactor.Adafactor.beta1') is None
  assert gin.query_parameter('utils.create_learning_rate_scheduler.factors') == 'constant'
  assert gin.query_parameter('utils.create_learning_rate_scheduler.base_learning_rate') == 0.001
  assert gin.query_parameter('Z_LOSS/gin.macro.value') == 0.0001
  assert gin.query_parameter('train/utils.DatasetConfig.pack') is True


def test_finetune_defaults_without_overrides():
  gin_utils.parse(['models/t5_1_1/base.gin', 'runs/finetune.gin'], [])
  assert gin.query_parameter('DROPOUT_RATE/gin.macro.value') == 0.1
  assert gin.query_parameter('LOSS_NORMALIZING_FACTOR/gin.macro.value') is None
  assert gin.query_parameter('BATCH_SIZE/gin.macro.value') == 128


def test_extra_search_path_and_unquoted_strings(tmp_path):
  (tmp_path / 'mine.gin').write_text("include 'quickstart.gin'\nTRAIN_STEPS = 7\n")
  gin_utils.parse(['mine.gin'], [], [str(tmp_path)])
  assert gin.query_parameter('TRAIN_STEPS/gin.macro.value') == 7
  gin.clear_config()
  with pytest.raises(Exception, match='MODEL_DIR'):
    gin_utils.parse(['quickstart.gin'], ['MODEL_DIR = /tmp/m'])


# ----------------------------------------------------------------------------- model files

SIZE_FIELDS = {'emb_dim', 'num_heads', 'head_dim', 'mlp_dim', 'num_encoder_layers',
               'num_decoder_layers'}


def _statements(path):
  from gin import config_parser
  with open(path) as f:
    return list(config_parser.ConfigParser(f, gin_utils._Literal()))


@pytest.mark.parametrize('family', ['t5_1_1', 't5_1_0', 'mt5'])
def test_each_size_includes_its_family_base_and_sets_only_sizes(family):
  from gin import config_parser
  folder = ROOT / 'gin' / 'models' / family
  base = gin_utils.read_gin_literals(str(folder / 'base.gin'))
  sizes = sorted(p for p in folder.glob('*.gin') if p.name != 'base.gin')
  assert len(sizes) >= 4
  for path in sizes:
    own = _statements(path)
    includes = [s.filename for s in own if isinstance(s, config_parser.IncludeStatement)]
    assert includes == [f'models/{family}/base.gin'], path.name
    bound = {(s.selector, s.arg_name) for s in own
             if isinstance(s, config_parser.BindingStatement)}
    assert bound == {('network.T5Config', f) for f in SIZE_FIELDS}, path.name
    # Read through the include: the base's macros and bindings, its own sizes.
    macros, bindings = gin_utils.read_gin_literals(str(path))
    assert macros == base[0]
    assert bindings.keys() == base[1].keys()
    for selector, args in bindings.items():
      changed = {k for k in args if args[k] != base[1][selector].get(k)}
      assert changed <= (SIZE_FIELDS if selector == 'network.T5Config' else set()), selector
  # The sizes differ from one another.
  dims = {tuple(sorted(gin_utils.config_from_gin(str(p)).items())) for p in sizes}
  assert len(dims) == len(sizes)


def test_size_file_parses_with_base_bindings_and_own_sizes():
  gin_utils.parse(['models/t5_1_1/xl.gin'], [])
  assert gin.query_parameter('network.T5Config.emb_dim') == 2048
  assert gin.query_parameter('network.T5Config.mlp_activations') == ('gelu', 'linear')
  assert gin.query_parameter('adafactor.Adafactor.decay_rate') == 0.8
  fields = gin_utils.config_from_gin(str(ROOT / 'gin' / 'models' / 't5_1_1' / 'xl.gin'))
  assert fields['emb_dim'] == 2048 and fields['vocab_size'] == 32128  # macro from base.gin


def test_gin_files_resolve_from_an_installed_copy(tmp_path, monkeypatch):
  """setup.py ships gin/ as the package `t5x.gin`; includes resolve from that copy alone."""
  patterns = _shipped_patterns()
  shipped = {p.relative_to(ROOT / 'gin') for pattern in patterns
             for p in (ROOT / 'gin').glob(pattern)}
  assert shipped == {p.relative_to(ROOT / 'gin') for p in (ROOT / 'gin').rglob('*.gin')}
  installed = tmp_path / 'site' / 't5x' / 'gin'
  for relative in shipped:
    (installed / relative).parent.mkdir(parents=True, exist_ok=True)
    (installed / relative).write_bytes((ROOT / 'gin' / relative).read_bytes())
  monkeypatch.setattr(gin_utils, 'DEFAULT_SEARCH_PATHS', (installed,))
  monkeypatch.chdir(tmp_path)
  gin_utils.parse(['quickstart.gin'], [])
  assert gin.query_parameter('network.T5Config.emb_dim') == 64
  gin.clear_config()
  gin_utils.parse(['models/mt5/xxl.gin'], [])
  assert gin.query_parameter('network.T5Config.mlp_dim') == 10240
  assert gin_utils.config_from_gin(str(installed / 'models/mt5/xxl.gin'))['vocab_size'] == 250112


def _shipped_patterns() -> list[str]:
  """setup.py's package_data patterns for the package `t5x.gin`."""
  text = (ROOT / 'setup.py').read_text().split('package_data=', 1)[1]
  return ast.literal_eval(re.search(r"'t5x\.gin': (\[[^\]]*\])", text)[1])


# ----------------------------------------------------------------------------- adafactor

def test_adafactor_is_one_configurable_under_both_module_paths():
  from t5x import adafactor, optimizers
  assert optimizers.adafactor is adafactor.adafactor
  gin.parse_config('\n'.join([
      'from __gin__ import dynamic_registration', 'from t5x import adafactor',
      'from t5x import optimizers', 'OPTIMIZER = @optimizers.adafactor()',
      'optimizers.adafactor.decay_rate = 0.7', 'adafactor.adafactor.momentum = 0.5']))
  made = gin.query_parameter('OPTIMIZER/gin.macro.value').scoped_configurable_fn()
  assert made.keywords['decay_rate'] == 0.7 and made.keywords['momentum'] == 0.5


# ----------------------------------------------------------------------------- former modules

def test_former_module_paths_read_as_the_engines(tmp_path, caplog):
  # A package that is not installed, standing for the engine's former name.
  (tmp_path / 'old.gin').write_text('\n'.join([
      'from __gin__ import dynamic_registration',
      'from gone_package import network',
      'from gone_package import evaluation',
      'from gone_package import train as train_script',
      'network.T5Config.emb_dim = 24',
      'evaluation.evaluate.all_checkpoints = True',
      'train_script.train.total_steps = 5', '']))
  with caplog.at_level('WARNING'):
    gin_utils.parse([str(tmp_path / 'old.gin')], [])
  from t5x import eval as evaluation
  from t5x import train
  from t5x.examples.t5 import network
  assert gin.get_configurable(network.T5Config)().emb_dim == 24
  assert gin.query_parameter('evaluation.evaluate.all_checkpoints') is True
  assert gin.query_parameter('train_script.train.total_steps') == 5
  assert callable(train.train) and callable(evaluation.evaluate)
  warnings = [r.getMessage() for r in caplog.records if 'not installed' in r.getMessage()]
  assert len(warnings) == 1
  assert f'{tmp_path / "old.gin"} imports' in warnings[0]
  assert 'line 2: gone_package.network as t5x.examples.t5.network' in warnings[0]
  assert 'line 3: gone_package.evaluation as t5x.eval' in warnings[0]
  # What the engine writes back names its own modules.
  assert 'gone_package' not in gin_utils.operative_config()


def test_unknown_missing_modules_still_fail(tmp_path):
  (tmp_path / 'bad.gin').write_text(
      'from __gin__ import dynamic_registration\nfrom gone_package import no_such_module\n')
  with pytest.raises(ModuleNotFoundError, match='gone_package'):
    gin_utils.parse([str(tmp_path / 'bad.gin')], [])
  import gin.config as gin_config  # gin's own import handling is back after parsing
  assert gin_config.ParseContext.process_import.__qualname__.startswith('ParseContext.')
