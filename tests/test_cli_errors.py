"""Every CLI error is one `t5x <cmd>: error:` line naming the file, line or field; settings
that would pass silently (a typo'd macro) or fail late (TRAIN_STEPS=0) fail first.

Each test makes the fault itself (a real bad file, a full tmpfs, a hostile pickle) and
runs the command in-process through cli.main.
"""
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import gin
import pytest

from conftest import ENV
from t5x_cli import main as cli
from t5x import gin_utils
from t5x import launch
from t5x_tasks import copoet, jsonl

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOM = b'\xef\xbb\xbf'
QUICKSTART = ['train', '--gin_file=gin/quickstart.gin']


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _error(capsys, argv, progress: bool = False) -> str:
  """Runs `t5x ARGV`; asserts exit code 2 and one stderr line `t5x <cmd>: error: ...`
  (besides the progress bar's lines when `progress`: a run that got to its first step)."""
  code = cli.main([str(a) for a in argv])
  captured = capsys.readouterr()
  lines = captured.err.splitlines()
  if progress:
    lines = [line for line in lines if line.strip() and not line.startswith('train: ')]
  assert code == 2, captured
  assert len(lines) == 1, lines
  prefix = f't5x {argv[0]}: error: '
  assert lines[0].startswith(prefix), lines[0]
  return lines[0][len(prefix):]


# ----------------------------------------------------------------------------- gin settings

def test_typo_macro_on_the_command_line_is_an_error(capsys, tmp_path):
  model_dir = tmp_path / 'm'
  for flag in ('--gin.TRAIN_STEPSS=10', '--gin_bindings=TRAIN_STEPSS = 10'):
    message = _error(capsys, [*QUICKSTART, f'--gin.MODEL_DIR="{model_dir}"', flag])
    assert message == ('--gin.TRAIN_STEPSS: no gin file or binding reads the macro '
                       'TRAIN_STEPSS (nothing refers to %TRAIN_STEPSS), so setting it would '
                       'change nothing; did you mean TRAIN_STEPS?')
    assert not model_dir.exists()


def test_macros_read_anywhere_are_accepted(tmp_path):
  # A macro read through another macro, or nested in a dict or a list, may be set on the
  # command line; one defined in a file and read nowhere is fine (T5X files do that) until
  # the command line sets it.
  (tmp_path / 'macros_read_test.gin').write_text(
      "include 'quickstart.gin'\n"
      'UNUSED_IN_FILE = 3\n'
      'INNER = 7\n'
      'OUTER = %INNER\n'
      'NESTED = 5\n'
      'LISTED = 2\n'
      "TASK_FEATURE_LENGTHS = {'inputs': %NESTED, 'targets': 24}\n"
      "SOME_LIST = [%LISTED, {'k': %OUTER}]\n")
  gin_utils.parse(['macros_read_test.gin'], ['INNER = 8', 'NESTED = 9', 'LISTED = 1'],
                  [str(tmp_path)])
  assert gin.query_parameter('INNER/gin.macro.value') == 8
  gin.clear_config()
  with pytest.raises(ValueError) as error:
    gin_utils.parse(['macros_read_test.gin'], ['UNUSED_IN_FILE = 4'], [str(tmp_path)])
  assert str(error.value).startswith(
      '--gin.UNUSED_IN_FILE: no gin file or binding reads the macro UNUSED_IN_FILE (nothing '
      'refers to %UNUSED_IN_FILE), so setting it would change nothing; the config reads '
      'ACTIVATION_DTYPE, BATCH_SIZE, ')


def _documented_commands():
  """(source, argv) of every `t5x train|infer|eval` command line in the docs and gin files."""
  texts = [*ROOT.glob('*.md'), *ROOT.glob('docs/**/*.md'), *ROOT.glob('gin/**/*.gin'),
           *ROOT.glob('tpu_scripts/**/*'), *ROOT.glob('benchmarks/**/*.md')]
  found = []
  for path in texts:
    if not path.is_file():
      continue
    text = re.sub(r'\\\n\s*#?\s*', ' ', path.read_text())
    for line in text.splitlines():
      match = re.search(r't5x (train|infer|eval) (.*--gin_file.*)', line)
      if not match:
        continue
      try:
        argv = shlex.split(re.split(r'[|`&]', match[2])[0], comments=True)
      except ValueError:
        continue
      argv = [a for a in argv if a.startswith('--')]
      if any('$' in a or '<' in a or 'gs://' in a for a in argv):
        continue  # placeholders and buckets: not runnable here
      found.append((path.name, argv))
  return found


def test_every_recipe_and_documented_command_line_still_parses():
  files = sorted(p.relative_to(ROOT / 'gin') for p in (ROOT / 'gin').rglob('*.gin'))
  assert len(files) > 20
  for name in files:
    gin.clear_config()
    gin_utils.parse([str(name)], [])
  commands = _documented_commands()
  assert len(commands) >= 10
  for source, argv in commands:
    gin.clear_config()
    gin_files, bindings, paths, _ = gin_utils.split_flags(argv)
    gin_utils.parse(gin_files, bindings, paths)  # raises (naming the macro) if one is unread


@pytest.mark.parametrize('flag, message', [
    ('--gin.TRAIN_STEPS=0', 'TRAIN_STEPS is 0; it must be a positive whole number of steps, '
     'e.g. --gin.TRAIN_STEPS=800.'),
    ('--gin.TRAIN_STEPS=-5', 'TRAIN_STEPS is -5; it must be a positive whole number of steps, '
     'e.g. --gin.TRAIN_STEPS=800.'),
    ('--gin.TRAIN_STEPS=10.0', 'TRAIN_STEPS is 10.0 (a float); it must be a positive whole '
     'number of steps, e.g. --gin.TRAIN_STEPS=800.'),
    ("--gin.TASK_FEATURE_LENGTHS={'inputs': 0, 'targets': 24}", "TASK_FEATURE_LENGTHS['inputs'] "
     'is 0; a feature length must be a positive whole number, e.g. --gin.TASK_FEATURE_LENGTHS='
     '"{\'inputs\': 512, \'targets\': 128}".'),
    ("--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 2.5}", "TASK_FEATURE_LENGTHS["
     "'targets'] is 2.5; a feature length must be a positive whole number, e.g. "
     '--gin.TASK_FEATURE_LENGTHS="{\'inputs\': 512, \'targets\': 128}".'),
    ('--gin.TASK_FEATURE_LENGTHS=[32, 24]', 'TASK_FEATURE_LENGTHS is [32, 24] (a list); it must '
     'be a dict of feature name to positive length, e.g. --gin.TASK_FEATURE_LENGTHS='
     '"{\'inputs\': 512, \'targets\': 128}".'),
    ("--gin.TASK_FEATURE_LENGTHS='32'", "TASK_FEATURE_LENGTHS is '32' (a str); it must be a dict "
     'of feature name to positive length, e.g. --gin.TASK_FEATURE_LENGTHS='
     '"{\'inputs\': 512, \'targets\': 128}".'),
])
def test_bad_train_settings_fail_before_model_dir_exists(capsys, tmp_path, flag, message):
  model_dir = tmp_path / 'm'
  assert _error(capsys, [*QUICKSTART, f'--gin.MODEL_DIR="{model_dir}"', flag]) == message
  assert not model_dir.exists()


@pytest.mark.parametrize('command, gin_file, out_macro', [
    ('eval', 'runs/eval.gin', 'EVAL_OUTPUT_DIR'), ('infer', 'runs/infer.gin', 'INFER_OUTPUT_DIR')])
def test_infer_and_eval_check_feature_lengths_first(capsys, tmp_path, command, gin_file,
                                                    out_macro):
  # The checkpoint does not exist: the lengths are checked before it is looked for.
  message = _error(capsys, [command, f'--gin_file={gin_file}',
                            f'--gin.CHECKPOINT_PATH="{tmp_path / "none"}"',
                            f'--gin.{out_macro}="{tmp_path / "out"}"',
                            '--gin.MIXTURE_OR_TASK_NAME="copoet"',
                            "--gin.TASK_FEATURE_LENGTHS={'inputs': -1, 'targets': 8}"])
  assert message.startswith("TASK_FEATURE_LENGTHS['inputs'] is -1; ")
  assert not (tmp_path / 'out').exists()


def test_required_feature_lengths_left_unset_are_named(capsys, tmp_path):
  # runs/eval.gin binds TASK_FEATURE_LENGTHS = %gin.REQUIRED: gin hands over its sentinel.
  message = _error(capsys, ['eval', '--gin_file=runs/eval.gin',
                            f'--gin.CHECKPOINT_PATH="{tmp_path / "none"}"',
                            f'--gin.EVAL_OUTPUT_DIR="{tmp_path / "out"}"',
                            '--gin.MIXTURE_OR_TASK_NAME="copoet"'])
  assert message == ('TASK_FEATURE_LENGTHS is not set; the gin files mark it required: pass '
                     '--gin.TASK_FEATURE_LENGTHS="{\'inputs\': 512, \'targets\': 128}".')
  assert not (tmp_path / 'out').exists()


def test_missing_gin_file_is_one_line(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  message = _error(capsys, ['train', '--gin_file=quickstrat.gin'])
  folders = ', '.join(str(p) for p in gin_utils.DEFAULT_SEARCH_PATHS if p.is_dir())
  assert message == (f"gin file 'quickstrat.gin' not found; searched the current folder "
                     f'({tmp_path}), {folders}. Check the name, or add its folder with '
                     '--gin_search_paths=DIR.')
  gin.clear_config()
  (tmp_path / 'missing_include_test.gin').write_text("X = 1\ninclude 'nope/missing.gin'\n")
  message = _error(capsys, ['train', '--gin_file=missing_include_test.gin'])
  assert message.startswith("gin file 'nope/missing.gin' (included from "
                            'missing_include_test.gin:2) not found; '
                            f'searched the current folder ({tmp_path}), ')


# ----------------------------------------------------------------------------- output folders

POEM = 'the rain comes down on the roof\nand the fog rolls over the hill\n\n' * 200


def test_output_under_a_regular_file(capsys, tmp_path):
  (tmp_path / 'poem.txt').write_text(POEM)
  (tmp_path / 'file').write_text('')
  message = _error(capsys, ['prep', 'copoet-instructions', tmp_path / 'poem.txt',
                            tmp_path / 'file' / 'sub' / 'out.jsonl'])
  assert message == (f'{tmp_path / "file"}: a file is in the way of the output folder '
                     f'{tmp_path / "file" / "sub"}')


def test_read_only_output_folder(capsys, tmp_path):
  if os.geteuid() == 0:
    pytest.skip('root writes through chmod 555; the full-disk and file-in-the-way tests '
                'cover the same path')
  (tmp_path / 'poem.txt').write_text(POEM)
  folder = tmp_path / 'ro'
  folder.mkdir()
  folder.chmod(0o555)
  try:
    message = _error(capsys, ['prep', 'copoet-instructions', tmp_path / 'poem.txt',
                              folder / 'out.jsonl'])
  finally:
    folder.chmod(0o755)
  assert message == f'{folder / "out.jsonl"}: Permission denied'


@pytest.fixture
def full_disk(tmp_path):
  """A 16 KiB tmpfs, where the machine allows mounting one (root in CI)."""
  folder = tmp_path / 'full'
  folder.mkdir()
  mount = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', str(folder)],
                         capture_output=True, text=True, check=False)
  if mount.returncode:
    pytest.skip(f'cannot mount a small tmpfs here ({mount.stderr.strip()}); '
                'test_output_under_a_regular_file still runs')
  yield folder
  subprocess.run(['umount', str(folder)], check=True)


def test_full_output_folder(capsys, tmp_path, full_disk):
  (tmp_path / 'poem.txt').write_text(POEM * 4)
  message = _error(capsys, ['prep', 'copoet-instructions', tmp_path / 'poem.txt',
                            full_disk / 'out.jsonl'])
  assert message == f'{full_disk / "out.jsonl"}: No space left on device'
  assert os.listdir(full_disk) == []  # no temporary file left behind


def test_a_folder_given_for_a_file(capsys, tmp_path):
  assert _error(capsys, ['score', 'haiku', tmp_path]) == f'{tmp_path}: Is a directory'


# ----------------------------------------------------------------------------- readers

@pytest.mark.parametrize('command, lines, message', [
    ('copoet', ['{"translation": {"en1": "Write a line", "en2": "x"}, "prediction": "y"}',
                '{"translation": "Write a line", "prediction": "y"}'],
     'field "instruction" (or "inputs", "translation.en1") is missing or not a string.'),
    ('haiku', ['{"prediction": "a / b / c", "topic": "rain"}',
               '{"prediction": "a / b / c", "topic": 5}'],
     'field "topic" (or "keywords") is 5; it must be a string of topic words or a list of '
     'them.'),
])
def test_a_field_of_the_wrong_type_names_file_line_and_field(capsys, tmp_path, command, lines,
                                                             message):
  """A `translation` that is not an object, a haiku `topic` that is a number: line 2."""
  path = tmp_path / 'preds.jsonl'
  path.write_text('\n'.join(lines) + '\n')
  assert _error(capsys, ['score', command, path]) == f'{path}:2: {message}'


@pytest.mark.parametrize('interactions, message', [
    ('{"a": 1}', 'field "interactions" is {\'a\': 1}, not a list of interaction objects.'),
    ('[5]', 'interactions[0] is 5, not an object with instruction, suggestions and choice.'),
    ('[{"instruction": "x", "suggestions": "abc", "choice": 0}]',
     "interactions[0].suggestions is 'abc'; expected a list of strings."),
    ('[{"suggestions": ["a"], "choice": 0}]', 'interactions[0].instruction is missing or not a '
     'string.'),
    ('[{"instruction": "x", "suggestions": ["a", "b"], "choice": true}]',
     'interactions[0].choice=True is not an index into its 2 suggestions.'),
])
def test_malformed_session_interactions(capsys, tmp_path, interactions, message):
  path = tmp_path / 'session.json'
  path.write_text(f'{{"format": "copoet-session/1", "interactions": {interactions}}}')
  assert _error(capsys, ['score', 'copoet', path]) == f'{path}: {message}'


def test_empty_train_json_fails_before_any_step(capsys, tmp_path):
  data = tmp_path / 'copoet'
  data.mkdir()
  (data / 'train.json').write_text('')
  (data / 'validation.json').write_bytes(
      (pathlib.Path(copoet.SAMPLE_DIR) / 'validation.json').read_bytes())
  message = _error(capsys, [*QUICKSTART, f'--gin.MODEL_DIR="{tmp_path / "m"}"',
                            '--gin.TRAIN_STEPS=2', f'--gin.copoet.data_dir.path="{data}"'],
                   progress=True)
  assert message == (f'{data / "train.json"}: no instruction pairs (the file is empty); '
                     'expected one {"translation": {"en1": instruction, "en2": line}} per line.')
  assert not list((tmp_path / 'm').glob('checkpoint_*'))


@pytest.mark.parametrize('argv, name, first_line', [
    (['score', 'haiku', '{}'], 'p.jsonl', b'{"prediction": "a / b / c"}'),
    (['score', 'copoet', '{}'], 'p.jsonl', b'{"prediction": "a", "instruction": "b"}'),
    (['score', 'ni', '--predictions', '{}', '--references', '{}'], 'p.jsonl',
     b'{"prediction": "a", "id": "1", "references": ["a"]}'),
    (['prep', 'haiku', '{}', '{out}'], 'h.txt', b'a / b / c'),
    (['prep', 'haiku', '{}', '{out}'], 'h.csv', b'a,b,c'),
    (['prep', 'copoet-instructions', '{}', '{out}'], 'poem.txt', b'a line'),
])
def test_bytes_that_are_not_utf8_name_file_and_line(capsys, tmp_path, argv, name, first_line):
  path = tmp_path / name
  path.write_bytes(first_line + b'\ncaf\xe9 / b / c\n')
  argv = [a.replace('{}', str(path)).replace('{out}', str(tmp_path / 'o')) for a in argv]
  message = _error(capsys, argv)
  assert message.startswith(f'{path}:2: not valid UTF-8 (byte 4 of the line: invalid '
                            'continuation byte)')
  assert not (tmp_path / 'o').exists()


# ----------------------------------------------------------------------------- BOM everywhere

def test_bom_is_accepted_by_every_reader(capsys, tmp_path):
  pair = {'translation': {'en1': 'Write a line that ends with "rain"', 'en2': 'in the rain'}}
  plain, marked = tmp_path / 'plain.json', tmp_path / 'bom.json'
  plain.write_text(json.dumps(pair) + '\n')
  marked.write_bytes(BOM + plain.read_bytes())
  # train's reader (the SeqIO task's)
  assert copoet.read_pairs(str(marked)) == copoet.read_pairs(str(plain)) == [
      {'inputs': pair['translation']['en1'], 'targets': 'in the rain'}]
  # score copoet, haiku and ni: the same result with and without a BOM
  record = {'instruction': pair['translation']['en1'], 'prediction': 'in the rain', 'id': 'a',
            'task_id': 't', 'task_category': 'c', 'references': ['in the rain']}
  for name, content in (('plain.jsonl', b''), ('bom.jsonl', BOM)):
    (tmp_path / name).write_bytes(content + json.dumps(record).encode() + b'\n')
  for argv in (['score', 'copoet', '{}'], ['score', 'haiku', '{}'],
               ['score', 'ni', '--predictions', '{}', '--references', '{}']):
    results = []
    for name in ('plain.jsonl', 'bom.jsonl'):
      path = str(tmp_path / name)
      assert cli.main([a.replace('{}', path) for a in argv] + ['--json']) == 0, argv
      result = json.loads(capsys.readouterr().out)
      for key in ('files', 'predictions', 'references'):  # the file names
        result.pop(key, None)
      results.append(result)
    assert results[0] == results[1]
  assert results[1]['exact_match'] == 100.0 and results[1]['count'] == 1
  # a `t5x serve` session file
  session = {'format': 'copoet-session/1', 'interactions': [
      {'instruction': pair['translation']['en1'], 'suggestions': ['in the rain'], 'choice': 0}]}
  (tmp_path / 'session.json').write_bytes(BOM + json.dumps(session).encode())
  assert cli.main(['score', 'copoet', str(tmp_path / 'session.json'), '--json']) == 0
  assert json.loads(capsys.readouterr().out)['runs'] == 1
  # t5x infer's prompts files, plain text and JSON Lines
  from t5x import data
  (tmp_path / 'prompts.txt').write_bytes(BOM + b'Write a poem\r\n\r\nAnother one\n')
  read = data.prompt_examples
  assert read(str(tmp_path / 'prompts.txt')) == [
      {'inputs': 'Write a poem'}, {'inputs': 'Another one'}]
  (tmp_path / 'prompts.jsonl').write_bytes(BOM + b'{"prompt": "Write a poem"}\n')
  assert read(str(tmp_path / 'prompts.jsonl')) == [
      {'inputs': 'Write a poem', 'targets': None}]
  # the caption contest's official prediction files ({instance_id: prediction})
  from t5x_tasks import caption_contest_metrics
  (tmp_path / 'caption.json').write_bytes(BOM + b'{"i1": "C", "i2": "a"}')
  assert caption_contest_metrics.read_predictions(str(tmp_path / 'caption.json')) == {
      'i1': 'C', 'i2': 'a'}
  # whole-file JSON and text
  (tmp_path / 'doc.json').write_bytes(BOM + b'{"a": [1]}')
  assert jsonl.load_json(str(tmp_path / 'doc.json')) == {'a': [1]}
  assert jsonl.read_text(str(marked)) == plain.read_text()


# ----------------------------------------------------------------------------- HF folders

CONFIG = {'model_type': 't5', 'vocab_size': 32, 'd_model': 8, 'num_heads': 2, 'num_layers': 1,
          'd_kv': 4, 'd_ff': 16, 'feed_forward_proj': 'relu'}


class _Payload:
  """Pickles to a call of os.mkdir: a file that would run code when unpickled fully."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.mkdir, (self.marker,)


def _hf_dir(tmp_path, config=None, **files) -> pathlib.Path:
  folder = tmp_path / 'hf'
  folder.mkdir()
  (folder / 'config.json').write_text(json.dumps(config or CONFIG))
  for name, content in files.items():
    (folder / name.replace('__', '.')).write_bytes(content)
  return folder


def test_pickle_with_objects_is_refused(capsys, tmp_path):
  import torch
  marker = tmp_path / 'code_ran'
  folder = _hf_dir(tmp_path)
  torch.save({'shared.weight': torch.zeros(32, 8), 'x': _Payload(str(marker))},
             folder / 'pytorch_model.bin')
  message = _error(capsys, ['import-hf', folder, tmp_path / 'out'])
  assert message == (f'{folder / "pytorch_model.bin"}: refusing to unpickle arbitrary objects: '
                     'this file holds more than plain tensors (it refers to posix.mkdir). Use a '
                     'model.safetensors, or re-save the state dict of tensors only from a copy '
                     'you trust.')
  assert 'weights_only' not in message
  assert not marker.exists() and not (tmp_path / 'out').exists()
  import t5x
  with pytest.raises(ValueError, match='refusing to unpickle arbitrary objects'):
    t5x.load(folder)
  assert not marker.exists()


@pytest.mark.parametrize('content, reason', [
    (b'PK\x03\x04truncated', 'not a readable PyTorch weights file'),
    (b'', 'not a readable PyTorch weights file'),
])
def test_damaged_bin_is_one_line(capsys, tmp_path, content, reason):
  folder = _hf_dir(tmp_path, pytorch_model__bin=content)
  message = _error(capsys, ['import-hf', folder, tmp_path / 'out'])
  assert message.startswith(f'{folder / "pytorch_model.bin"}: {reason} (')


def test_damaged_safetensors_is_one_line(capsys, tmp_path):
  folder = _hf_dir(tmp_path, model__safetensors=b'garbage')
  assert _error(capsys, ['import-hf', folder, tmp_path / 'out']) == (
      f'{folder / "model.safetensors"}: not a readable safetensors file (Error while '
      'deserializing header: header too small).')


@pytest.mark.parametrize('shard', ['../../etc/passwd', '/etc/passwd', 'sub/../../x.safetensors'])
def test_index_shard_outside_the_folder_is_refused(capsys, tmp_path, shard):
  index = json.dumps({'weight_map': {'shared.weight': 'model.safetensors',
                                     'lm_head.weight': shard}})
  folder = _hf_dir(tmp_path, model__safetensors__index__json=index.encode())
  assert _error(capsys, ['import-hf', folder, tmp_path / 'out']) == (
      f"{folder / 'model.safetensors.index.json'}: weight_map['lm_head.weight'] is {shard!r}, a "
      'path outside the model folder; shards must be files beside the index.')


@pytest.mark.parametrize('key, value', [
    ('num_heads', -4), ('num_heads', 0), ('num_heads', 2.5), ('num_heads', '2'), ('d_model', 0),
    ('d_kv', -1), ('d_ff', True), ('num_layers', -2), ('vocab_size', None),
    ('num_decoder_layers', -1)])
def test_config_sizes_must_be_positive_ints(capsys, tmp_path, key, value):
  folder = _hf_dir(tmp_path, {**CONFIG, key: value})
  assert _error(capsys, ['import-hf', folder, tmp_path / 'out']) == (
      f'{folder / "config.json"}: {key!r} is {value!r}; it must be a positive integer. Fix '
      'config.json (as transformers writes it for this model).')


# ----------------------------------------------------------------------------- --debug, OOM

def _traceback(capsys, argv) -> list:
  """Runs `t5x ARGV`; asserts exit code 2 and a full traceback; returns stderr's lines."""
  assert cli.main([str(a) for a in argv]) == 2
  lines = capsys.readouterr().err.splitlines()
  assert lines[0] == 'Traceback (most recent call last):', lines
  return lines


def test_debug_and_t5x_debug_print_the_full_traceback(capsys, tmp_path, monkeypatch):
  monkeypatch.delenv('T5X_DEBUG', raising=False)
  assert _error(capsys, ['score', 'haiku', tmp_path]) == f'{tmp_path}: Is a directory'
  last = f"IsADirectoryError: [Errno 21] Is a directory: '{tmp_path}'"
  assert _traceback(capsys, ['--debug', 'score', 'haiku', tmp_path])[-1] == last
  monkeypatch.setenv('T5X_DEBUG', '1')
  assert _traceback(capsys, ['score', 'haiku', tmp_path])[-1] == last
  monkeypatch.setenv('T5X_DEBUG', '0')
  assert _error(capsys, ['score', 'haiku', tmp_path]) == f'{tmp_path}: Is a directory'


def test_debug_after_the_gin_command(capsys, tmp_path, monkeypatch):
  """`t5x train --debug ...`, as `python -m t5x.train --debug ...` takes it."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv('T5X_DEBUG', raising=False)
  lines = _traceback(capsys, ['train', '--debug', '--gin_file=quickstrat.gin'])
  assert lines[-1].startswith("FileNotFoundError: gin file 'quickstrat.gin' not found; ")


@pytest.mark.slow
def test_python_m_train_reports_as_t5x_train(tmp_path):
  """`python -m t5x.train`: the same one-line error and exit code, or with --debug the
  traceback."""
  env = {k: v for k, v in ENV.items() if k != 'T5X_DEBUG'}
  runs = [subprocess.run([sys.executable, '-m', 't5x.train', *debug, '--gin_file=quickstrat.gin'],
                         cwd=tmp_path, env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True,
                         text=True, timeout=300) for debug in ([], ['--debug'])]
  assert [r.returncode for r in runs] == [2, 2]
  plain = runs[0].stderr.splitlines()
  assert len(plain) == 1 and plain[0].startswith(
      "t5x train: error: gin file 'quickstrat.gin' not found; searched the current folder "
      f'({tmp_path}), '), plain
  assert 'Traceback (most recent call last):' in runs[1].stderr
  assert runs[1].stderr.splitlines()[-1].startswith("FileNotFoundError: gin file 'quickstrat.gin'")


def test_xla_out_of_memory_is_printed_whole(capsys):
  """A real XLA allocation failure (1 PiB: more than any machine), raised inside a gin
  configurable as a training run's would be: its whole report, then one summary line."""
  import jax.numpy as jnp

  @gin.configurable('allocate_for_oom_test')
  def allocate():
    return jnp.ones((1 << 50,), jnp.uint8).block_until_ready()

  for debug in (False, True):
    assert launch.report_errors('t5x train', allocate, debug) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == 'Traceback (most recent call last):'
    assert any(line.endswith('RESOURCE_EXHAUSTED: Out of memory allocating 1125899906842624 '
                             'bytes.') for line in lines), lines
    assert lines[-1].startswith('t5x train: error: out of device memory; XLA\'s report ')


def test_other_xla_and_disk_errors_stay_one_line(capsys):
  """A full disk during a checkpoint save says RESOURCE_EXHAUSTED too (tensorstore's words):
  it is an OSError, not XLA's out-of-memory error, and stays one line; so does an XLA error
  about something else."""
  import jax
  from t5x import checkpoints
  disk = checkpoints.CheckpointSaveError(
      'could not save checkpoint /m/checkpoint_4: RESOURCE_EXHAUSTED: Error writing local '
      'file "/m/checkpoint_4.orbax-checkpoint-tmp/x": No space left on device. Training '
      'stopped; the previous checkpoint /m/checkpoint_2 is intact.')
  other = jax.errors.JaxRuntimeError('INVALID_ARGUMENT: Executable expected parameter 0 of '
                                     'size 8 but got buffer with incompatible size 4')
  for error in (disk, other):
    assert not launch.is_out_of_memory(error)

    def fail(error=error):
      raise error
    assert launch.report_errors('t5x train', fail) == 2
    assert capsys.readouterr().err.splitlines() == [f't5x train: error: {error}']
