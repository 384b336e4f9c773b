"""Builds the Deep Haiku sample parquet bundled with t5x_tasks from its plain-text source.

The 50 haiku in t5x_tasks/data/haiku_sample.txt were written for this project (most are
5-7-5 by t5x_tasks.haiku_phonetics.syllable_counts; a few are deliberately not, as in real
data). This runs `t5x_tasks.haiku_data.prep()` on that file, so the parquet has the columns
of `statworx/haiku` with phonemes and keywords derived as documented in
t5x_tasks/haiku_data.py and t5x_tasks/haiku_phonetics.py:

  python data_prep/make_haiku_sample.py [--txt PATH] [--out PATH]

The full dataset needs no conversion: download train.parquet of the Hugging Face dataset
statworx/haiku (https://huggingface.co/datasets/statworx/haiku) and point HAIKU_DATA at it.
Your own haiku (text or CSV) go through the same prep(): `t5x prep haiku IN OUT`.
"""
import argparse

import pyarrow.parquet as pq

from t5x import fs_utils
from t5x_tasks import haiku_data


def main() -> None:
  """Parses --txt/--out and writes the sample parquet."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--txt', default=haiku_data.SAMPLE_TXT,
                      help='one haiku per line, " / " between lines')
  parser.add_argument('--out', default=haiku_data.SAMPLE_PARQUET, help='parquet to write')
  args = parser.parse_args()
  table = haiku_data.prep(args.txt, source='t5x_haiku_sample')
  with fs_utils.atomic_file(args.out, 'wb') as f:
    pq.write_table(table, f)
  print(f'wrote {table.num_rows} haiku to {args.out}')


if __name__ == '__main__':
  main()
