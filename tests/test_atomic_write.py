"""The one writer, t5x.fs_utils: atomic files (temporary, fsync, rename), and a scan of the
sources that keeps it the only one."""
import ast
import errno
import os
import pathlib
import re

import pytest

from t5x import fs_utils

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ('t5x', 't5x_tasks', 't5x_cli', 'data_prep')
WRITER = pathlib.Path('t5x', 'fs_utils.py')


class _Torn:
  """A file whose write puts the first half of the data down, then fails: a full disk."""

  def __init__(self, f):
    self._f = f

  def write(self, data):
    self._f.write(data[:len(data) // 2])
    self._f.flush()
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  def __getattr__(self, name):
    return getattr(self._f, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._f.close()


def _tear_writes(monkeypatch):
  """fs_utils' `open` hands out torn files from now on."""
  monkeypatch.setattr(fs_utils, 'open', lambda *a, **k: _Torn(open(*a, **k)), raising=False)


@pytest.mark.parametrize('old, new', [('old text\n', 'new text, longer than the old\n'),
                                      (b'\x00old', b'\xffnew bytes \x00' * 100)])
def test_write_atomic_writes_text_and_bytes(tmp_path, old, new):
  target = tmp_path / 'sub' / 'f.bin'  # the missing folder is made
  fs_utils.write_atomic(str(target), old)
  fs_utils.write_atomic(target, new)
  assert (target.read_bytes() if isinstance(new, bytes) else target.read_text()) == new
  assert sorted(os.listdir(target.parent)) == ['f.bin']


def test_text_is_utf8_with_line_ends_as_written(tmp_path):
  fs_utils.write_atomic(tmp_path / 'f.txt', 'café\r\nnaïve\n')
  assert (tmp_path / 'f.txt').read_bytes() == 'café\r\nnaïve\n'.encode('utf-8')


@pytest.mark.parametrize('data', ['new text ' * 50, b'new bytes ' * 50])
def test_a_torn_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, data):
  target = tmp_path / 'x'
  fs_utils.write_atomic(target, 'old')
  _tear_writes(monkeypatch)
  with pytest.raises(OSError) as e:
    fs_utils.write_atomic(target, data)
  assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(target))  # ours, not the temp
  assert target.read_text() == 'old' and os.listdir(tmp_path) == ['x']


def test_atomic_file_failing_mid_stream_keeps_the_old_file(tmp_path):
  target = tmp_path / 'out.jsonl'
  target.write_text('old\n')

  def lines():
    yield 'first\n'
    yield 'second\n'
    raise RuntimeError('interrupted')

  with pytest.raises(RuntimeError, match='interrupted'):
    with fs_utils.atomic_file(target) as f:
      f.writelines(lines())
  assert target.read_text() == 'old\n' and os.listdir(tmp_path) == ['out.jsonl']


def test_fsync_is_called_before_the_rename_and_for_the_folder(tmp_path, monkeypatch):
  events = []
  real_fsync, real_replace = os.fsync, os.replace

  def fsync(fd):
    events.append(('fsync', os.path.isdir(f'/proc/self/fd/{fd}')))
    return real_fsync(fd)

  def replace(src, dst):
    events.append(('replace', os.path.dirname(src) == os.path.dirname(dst) == str(tmp_path)))
    return real_replace(src, dst)

  monkeypatch.setattr(fs_utils.os, 'fsync', fsync)
  monkeypatch.setattr(fs_utils.os, 'replace', replace)
  fs_utils.write_atomic(str(tmp_path / 'a.txt'), 'text')
  with fs_utils.atomic_file(tmp_path / 'b.bin', 'wb') as f:
    f.write(b'\x01\x02')
  # Each time: the file's data, then the rename (temporary in the target's folder), then
  # the folder that holds the new name.
  step = [('fsync', False), ('replace', True), ('fsync', True)]
  assert events == step + step
  assert (tmp_path / 'b.bin').read_bytes() == b'\x01\x02'


def test_a_failing_fsync_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  target = tmp_path / 'x.json'
  fs_utils.write_atomic(target, '{"old": 1}')

  def fsync(fd):
    raise OSError(errno.EIO, os.strerror(errno.EIO))

  monkeypatch.setattr(fs_utils.os, 'fsync', fsync)
  with pytest.raises(OSError, match='Input/output error') as e:
    with fs_utils.atomic_file(target) as f:
      f.write('{"new": 2}')
  assert e.value.filename == str(target)
  assert target.read_text() == '{"old": 1}' and os.listdir(tmp_path) == ['x.json']


def test_the_temporary_is_a_hidden_file_in_the_same_folder(tmp_path):
  target = tmp_path / 'folder' / 'data.txt'
  with fs_utils.atomic_file(target) as f:
    f.write('partial')
    f.flush()
    (temp,) = os.listdir(target.parent)
    assert temp.startswith('.data.txt.') and temp.endswith('.tmp')
    assert (target.parent / temp).read_text() == 'partial' and not target.exists()
  assert os.listdir(target.parent) == ['data.txt']


def test_a_cleanup_that_fails_does_not_hide_the_first_error(tmp_path, monkeypatch):
  def full(src, dst):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  def refuse(path):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

  monkeypatch.setattr(fs_utils.os, 'replace', full)
  monkeypatch.setattr(fs_utils.os, 'remove', refuse)
  with pytest.raises(OSError) as e:
    fs_utils.write_atomic(tmp_path / 'x.txt', 'text')
  assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / 'x.txt'))


def test_a_folder_as_the_target_is_refused_by_name(tmp_path):
  folder = tmp_path / 'out'
  folder.mkdir()
  with pytest.raises(IsADirectoryError, match='is a folder') as e:
    fs_utils.write_atomic(folder, 'text')
  assert e.value.filename == str(folder)
  assert os.listdir(folder) == [] and os.listdir(tmp_path) == ['out']


def test_a_file_in_the_way_of_the_folder_is_named(tmp_path):
  (tmp_path / 'file').write_text('mine')
  with pytest.raises(NotADirectoryError, match='a file is in the way') as e:
    fs_utils.write_atomic(tmp_path / 'file' / 'sub' / 'x.txt', 'text')
  assert e.value.filename == str(tmp_path / 'file')
  assert (tmp_path / 'file').read_text() == 'mine'


def test_mode_must_be_a_write(tmp_path):
  with pytest.raises(ValueError, match='mode'):
    with fs_utils.atomic_file(tmp_path / 'x', 'a'):
      pass


def test_write_files_renames_none_when_one_fails(tmp_path, monkeypatch):
  first, second = tmp_path / 'train.jsonl', tmp_path / 'test.jsonl'
  fs_utils.write_files({first: 'old train\n', second: 'old test\n'})

  def lines():
    yield 'new test\n'
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  with pytest.raises(OSError) as e:
    fs_utils.write_files({first: iter(['new train\n']), second: lines()})
  assert e.value.filename == str(second)
  # The first file was written whole before the second failed, and still was not renamed.
  assert (first.read_text(), second.read_text()) == ('old train\n', 'old test\n')
  assert sorted(os.listdir(tmp_path)) == ['test.jsonl', 'train.jsonl']
  fs_utils.write_files({first: iter(['a\n', 'b\n']), second: 'c\n'})
  assert (first.read_text(), second.read_text()) == ('a\nb\n', 'c\n')


def test_append_log_and_its_torn_line(tmp_path):
  log = tmp_path / 'logs' / 'metrics.jsonl'
  fs_utils.append_text(str(log), '{"step": 1}\n')
  with fs_utils.open_append(str(log)) as f:
    f.write('{"step": 2}\n{"st')  # a crash mid-append
  assert fs_utils.cut_torn_line(str(log)) == 2
  assert log.read_text() == '{"step": 1}\n{"step": 2}\n'
  assert fs_utils.cut_torn_line(str(tmp_path / 'none')) == 0
  partial = tmp_path / 'out.jsonl.partial'
  fs_utils.append_text(str(partial), 'x\n')
  fs_utils.finish(str(partial), str(tmp_path / 'out.jsonl'))
  assert sorted(os.listdir(tmp_path)) == ['logs', 'out.jsonl']


def test_copy_file(tmp_path):
  (tmp_path / 'a').write_bytes(b'\x00spiece\xff')
  fs_utils.copy_file(str(tmp_path / 'a'), str(tmp_path / 'b' / 'spiece.model'))
  assert (tmp_path / 'b' / 'spiece.model').read_bytes() == b'\x00spiece\xff'


def test_staging_dir_fsyncs_its_files_before_it_appears(tmp_path, monkeypatch):
  synced = []
  real_fsync = os.fsync
  monkeypatch.setattr(fs_utils.os, 'fsync', lambda fd: (
      synced.append(os.path.basename(os.readlink(f'/proc/self/fd/{fd}'))), real_fsync(fd)))
  with fs_utils.staging_dir(str(tmp_path / 'export')) as tmp:
    with open(os.path.join(tmp, 'model.safetensors'), 'wb') as f:  # a third-party writer
      f.write(b'weights')
    synced.clear()
  assert 'model.safetensors' in synced
  assert os.listdir(tmp_path / 'export') == ['model.safetensors']


# ------------------------------------------------------------------------ one writer only

# Calls that write whatever their target; `save_file` and the like are fine when they write
# to a name from fs_utils.atomic_path, `dump` and the like to a file from atomic_file or an
# in-memory buffer (their target's argument position given).
_MODULE_WRITERS = {'copyfile', 'copy', 'copy2', 'copytree', 'move', 'truncate', 'replace',
                   'rename', 'savez', 'savez_compressed'}  # of os, shutil, numpy
_WRITERS = {'write_text': None, 'write_bytes': None, 'to_parquet': 0, 'save_file': 1}
_DUMPERS = {'dump': 1, 'write_table': 1, 'savefig': 0, 'save': 0}
_DUMPER_OWNERS = {'json', 'pickle', 'yaml', 'pq', 'parquet', 'np', 'numpy', 'fig', 'plt',
                  'torch'}
_TARGET_KEYWORDS = {'fp', 'file', 'where', 'fname', 'filename', 'path', 'path_or_buf'}
_OPENERS = {'open', 'GFile', 'fdopen'}
_SINKS = {'atomic_file', 'atomic_path', 'open_append', 'BytesIO', 'StringIO',
          'BufferOutputStream'}
_MODE = re.compile(r'[rwabxt+]{1,4}')
_READ_ONLY = '# read-only'


def _name(node) -> str:
  return node.attr if isinstance(node, ast.Attribute) else getattr(node, 'id', '')


def _sinks(tree) -> set:
  """Names bound to a file or name from fs_utils, or to an in-memory buffer."""
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.withitem) and isinstance(node.context_expr, ast.Call):
      if _name(node.context_expr.func) in _SINKS and isinstance(node.optional_vars, ast.Name):
        names.add(node.optional_vars.id)
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
      if _name(node.value.func) in _SINKS:
        names.update(t.id for t in node.targets if isinstance(t, ast.Name))
  return names


def _target(node: ast.Call, position):
  if position is None:
    return None
  if len(node.args) > position:
    return node.args[position]
  return next((k.value for k in node.keywords if k.arg in _TARGET_KEYWORDS), None)


def _opens_to_write(node: ast.Call, owner: str) -> bool:
  if owner == 'os':  # os.open: a raw descriptor, for writing
    return True
  args = node.args
  mode = args[1] if len(args) > 1 else next(
      (k.value for k in node.keywords if k.arg == 'mode'), None)
  if (isinstance(node.func, ast.Attribute) and args and isinstance(args[0], ast.Constant)
      and _MODE.fullmatch(str(args[0].value))):
    mode = args[0]  # path.open('w')
  if mode is None:
    return False
  return not isinstance(mode, ast.Constant) or bool(set(str(mode.value)) & set('wax+'))


def _writes_in(source: str) -> list:
  """(line, call) of every file write that does not go through fs_utils."""
  tree = ast.parse(source)
  sinks, found = _sinks(tree), []
  for node in ast.walk(tree):
    if not isinstance(node, ast.Call):
      continue
    name = _name(node.func)
    owner = _name(node.func.value) if isinstance(node.func, ast.Attribute) else ''
    if name in _OPENERS:
      writes = _opens_to_write(node, owner)
    elif name in _MODULE_WRITERS:
      writes = owner in ('os', 'shutil', 'np', 'numpy')
    elif name in _WRITERS:
      target = _target(node, _WRITERS[name])
      writes = not (isinstance(target, ast.Name) and target.id in sinks)
    elif name in _DUMPERS and owner in _DUMPER_OWNERS:
      target = _target(node, _DUMPERS[name])
      writes = not (isinstance(target, ast.Name) and target.id in sinks)
    else:
      writes = False
    if writes:
      found.append(node)
  lines = source.splitlines()
  # A reader that passes a mode through (`open(path, mode)`) says so on its line.
  return [(node.lineno, ast.get_source_segment(source, node).split('\n')[0]) for node in found
          if not lines[node.lineno - 1].rstrip().endswith(_READ_ONLY)]


def test_the_scan_finds_each_kind_of_write():
  source = '\n'.join([
      "open(p, 'w')", "open(p, mode='ab')", "open(p, 'rb+')", "open(p, m)", "p.open('w')",
      "tf.io.gfile.GFile(p, 'wb')", "os.open(p, flags)", "p.write_text(t)", "p.write_bytes(b)",
      "json.dump(x, f)", "pq.write_table(t, p)", "df.to_parquet(p)", "shutil.copyfile(a, b)",
      "os.replace(a, b)", "np.save(p, a)", "fig.savefig(p)", "save_file(t, p)",
      "epath.Path(p).open(mode='a')", "json.dump(x, fp=open_file)",
  ])
  assert [line for line, _ in _writes_in(source)] == list(range(1, 20))
  fine = '\n'.join([
      "open(p)", "open(p, 'rb')", "open(p, encoding='utf-8')", "p.open()", "json.dumps(x)",
      "with fs_utils.atomic_file(p, 'wb') as f:", "  pq.write_table(t, f)",
      "  json.dump(x, f)", "buf = io.BytesIO()", "fig.savefig(buf)", "s.replace('a', 'b')",
      "with fs_utils.atomic_path(p) as temp:", "  save_file(t, temp, metadata={})",
      "io.open('x.txt')", "tf.io.gfile.GFile(p, 'rb')", "open(p, mode)  # read-only",
  ])
  assert _writes_in(fine) == []


def test_every_file_write_goes_through_fs_utils():
  """"One writer" stays true: file writes outside t5x/fs_utils.py are named, file:line."""
  found = []
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob('*.py')):
      relative = path.relative_to(ROOT)
      if relative == WRITER:
        continue
      for line, call in _writes_in(path.read_text(encoding='utf-8')):
        found.append(f'{relative}:{line}: {call}')
  assert not found, ('files written outside t5x/fs_utils.py (use fs_utils.write_atomic, '
                     'atomic_file, atomic_path, write_files or open_append; end the line of a '
                     f'reader whose mode is a variable with "{_READ_ONLY}"):\n' + '\n'.join(found))


def test_the_writer_loads_neither_jax_nor_tensorflow():
  """`t5x prep` and `t5x score` write through fs_utils and must start without them."""
  import subprocess
  import sys
  code = ('import sys, t5x.fs_utils; print(sorted(m for m in ("jax", "tensorflow", "etils") '
          'if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True, cwd=ROOT).stdout
  assert out.strip() == '[]'


def test_a_bucket_object_is_uploaded_once_whole_or_not_at_all(monkeypatch):
  """gs:// needs no temporary: an object appears when its one upload completes."""
  from etils import epath
  uploads = []

  class Bucket:  # epath.Path for gs://, recording each upload
    def __init__(self, path):
      self.path = path

    def write_text(self, text, encoding=None):
      uploads.append((self.path, text, encoding))

    def write_bytes(self, blob):
      uploads.append((self.path, blob, None))

  monkeypatch.setattr(epath, 'Path', Bucket)
  fs_utils.write_atomic('gs://bucket/run/config.gin', 'a = 1\n')
  with fs_utils.atomic_file('gs://bucket/run/spiece.model', 'wb') as f:
    f.write(b'\x00')
    f.write(b'\x01')
  with pytest.raises(RuntimeError):
    with fs_utils.atomic_file('gs://bucket/run/metrics.jsonl') as f:
      f.write('{"step": 1}\n')
      raise RuntimeError('interrupted')
  assert uploads == [('gs://bucket/run/config.gin', 'a = 1\n', 'utf-8'),
                     ('gs://bucket/run/spiece.model', b'\x00\x01', None)]  # none for metrics
