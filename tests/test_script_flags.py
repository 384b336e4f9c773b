"""T5X's script flags besides gin's: TFDS and SeqIO cache folders, absl's logging flags;
anything else is an error that names it."""
import logging

import pytest
from absl import flags
from absl import logging as absl_logging
from absl.logging import converter

from t5x import launch
from t5x import script_flags


@pytest.fixture
def restore_logging():
  root = logging.getLogger()
  level, handlers = root.level, list(root.handlers)
  verbosity = flags.FLAGS['verbosity'].value
  yield
  root.handlers[:] = handlers
  root.setLevel(level)
  flags.FLAGS['verbosity'].value = verbosity
  for name in ('alsologtostderr', 'log_dir'):
    flags.FLAGS[name].unparse()


def test_seqio_folders_are_set(tmp_path):
  import seqio
  from seqio import utils as seqio_utils
  before = list(seqio.get_global_cache_dirs())
  try:
    rest = script_flags.apply(['--gin_file=x.gin', f'--tfds_data_dir={tmp_path}',
                               '--seqio_additional_cache_dirs', f'{tmp_path}/a,{tmp_path}/b'])
    assert rest == ['--gin_file=x.gin']
    assert seqio_utils._TFDS_DATA_DIR_OVERRIDE == str(tmp_path)  # pylint: disable=protected-access
    assert seqio.get_global_cache_dirs()[-2:] == [f'{tmp_path}/a', f'{tmp_path}/b']
  finally:
    seqio.set_tfds_data_dir_override(None)
    seqio.set_global_cache_dirs(before)


def test_absl_logging_flags_are_applied(tmp_path, restore_logging):
  rest = script_flags.apply(['--alsologtostderr', '--verbosity=1', f'--log_dir={tmp_path}',
                             '--other'])
  assert rest == ['--other']
  assert flags.FLAGS.alsologtostderr and flags.FLAGS.log_dir == str(tmp_path)
  assert absl_logging.get_verbosity() == 1
  assert logging.getLogger().getEffectiveLevel() == converter.absl_to_standard(1)
  absl_logging.info('written to the log file')
  absl_logging.flush()
  logs = list(tmp_path.iterdir())
  assert logs and any('written to the log file' in p.read_text() for p in logs if p.is_file())


def test_unknown_flag_is_named_with_the_known_ones():
  with pytest.raises(ValueError, match=r"unknown arguments \['--tfds_dir=x'\].*--tfds_data_dir"):
    launch.run('train', ['--gin_file=quickstart.gin', '--tfds_dir=x'])


def test_a_flag_without_its_value_says_so():
  with pytest.raises(ValueError, match='--log_dir needs a value'):
    script_flags.apply(['--log_dir'])
