"""The `t5x` command: one subcommand per job, each a thin shell over a module."""
import argparse
import json
import os
import sys

from t5x import launch, log_noise


def _import_hf(args):
  from t5x.conversion import converters
  converters.import_hf(args.hf_dir, args.model_dir, scan_layers=args.scan_layers)
  print(f'wrote {args.model_dir} (checkpoint_0/, model.gin)')


def _export_hf(args):
  from t5x.conversion import converters
  report = converters.export_hf(args.model_dir, args.out_dir, verify=args.verify,
                                force=args.force)
  if report:
    print(f"verified: logits max |diff| {report['logits_max_abs_diff']:.2e} vs transformers in "
          f"float64 (tolerance {report['logits_tolerance']:.1e}; float32: "
          f"{report['logits_float32_max_abs_diff']:.2e}); greedy decodes of "
          f"{report['greedy_prompts']} prompts token-identical")
  print(f'wrote {args.out_dir}; load it with '
        f'transformers.T5ForConditionalGeneration.from_pretrained({args.out_dir!r})')


def _merge_lora(args):
  from t5x.conversion import converters
  converters.merge_lora(args.model_dir, args.out_dir)
  print(f'wrote {args.out_dir} (checkpoint_0/, model.gin): LoRA adapters folded into the weights')


def _import_t5x(args):
  from t5x.conversion import converters
  converters.import_t5x(args.checkpoint, args.model_dir, scan_layers=args.scan_layers)
  print(f'wrote {args.model_dir} (checkpoint_0/, model.gin)')


def _plan(args):
  from t5x.memory import plan
  return plan.launch(args.flags)  # the child's exit code


def _gin_command(args):
  """train / infer / eval: parse T5X-style gin flags, then call the configured function."""
  launch.run(args.command, args.flags)


def _prep_copoet(args):
  from t5x import fs_utils
  from t5x_tasks import copoet_instructions, jsonl
  records, counts = copoet_instructions.prep(args.poem_lines, seed=args.seed)
  with fs_utils.atomic_file(args.out) as f:
    f.writelines(jsonl.dump_lines(records))
  print(f'wrote {args.out}: {sum(counts.values())} pairs ' +
        ', '.join(f'{k} {v}' for k, v in sorted(counts.items())))


def _prep_haiku(args):
  import pyarrow.parquet as pq
  from t5x import fs_utils
  from t5x_tasks import haiku_data
  table = haiku_data.prep(args.input, source=args.source)
  with fs_utils.atomic_file(args.out, 'wb') as f:
    pq.write_table(table, f)
  print(f'wrote {args.out}: {table.num_rows} haiku with phonemes and keywords')


def _score_haiku(args):
  from t5x_tasks import haiku_metrics
  result = haiku_metrics.score_file(args.file, phonemes=args.phonemes)
  if args.json:
    print(json.dumps(result, indent=2))
    return
  print(f"{args.file}: {result['count']} haiku, {result['percent_575']:.1f}% with lines of "
        '5, 7 and 5 syllables' + (f", {result['percent_topic_words']:.1f}% include every topic "
                                  'word' if 'percent_topic_words' in result else ''))


def _prep_ni(args):
  from t5x import fs_utils
  from t5x_tasks import ni_data
  result = ni_data.prep(args.data, max_train_instances=args.max_train_instances,
                        max_test_instances=args.max_test_instances, split=args.split)
  # All three files or none: a failure while writing leaves an earlier prep untouched.
  fs_utils.write_files({os.path.join(args.out, name): lines
                        for name, lines in ni_data.output_lines(result).items()})
  missing = f", {len(result['missing'])} listed tasks missing" if result['missing'] else ''
  print(f"wrote {args.out}: {result['train']} train instances ({result['tasks']['train']} tasks), "
        f"{result['test']} test instances ({result['tasks']['test']} tasks){missing}")


def _score_ni(args):
  from t5x_tasks import ni_metrics
  if args.baseline:
    if not args.test:
      raise ValueError('--baseline needs --test, the test.jsonl written by `t5x prep ni`')
    result = ni_metrics.score_baseline(args.test, args.references, args.baseline, args.track,
                                       args.tokenizer)
  else:
    if not args.predictions:
      raise ValueError('give --predictions P.jsonl (or --baseline copy_input|copy_demo)')
    result = ni_metrics.score_files(args.predictions, args.references, args.track,
                                    args.tokenizer)
  print(json.dumps(result, indent=2) if args.json else ni_metrics.format_report(result))


def _score_caption(args):
  from t5x_tasks import caption_contest_metrics
  result = caption_contest_metrics.score(args.task, args.predictions, args.data, args.split,
                                         mode=args.mode)
  print(caption_contest_metrics.to_json(result) if args.json
        else caption_contest_metrics.format_report(result))


def _score_copoet(args):
  from t5x_tasks import copoet_scoring
  result = copoet_scoring.score_files(args.files, args.mode)
  print(json.dumps(result, indent=2) if args.json else copoet_scoring.format_report(result))


def _serve(args):
  from t5x_cli import copoet_app as serve
  serve.serve(args.checkpoint, host=args.host, port=args.port, log_dir=args.log_dir,
              max_rows=args.max_batch_rows, param_dtype=args.param_dtype, seed=args.seed,
              vocabulary=args.vocabulary, allowed_host=args.allowed_host,
              num_partitions=args.num_partitions)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='t5x', description='Train, evaluate and convert T5 models (T5X-compatible).')
  # main() takes --debug out of argv wherever it stands; here for the help text.
  parser.add_argument('--debug', action='store_true',
                      help='print the full traceback of an error (also: T5X_DEBUG=1)')
  sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

  for command, help_text in (
      ('train', "train with gin configs, as T5X's train.py"),
      ('infer', 'decode a task split or a prompts file into JSON Lines (runs/infer.gin)'),
      ('eval', "decode a task or mixture's test tasks and apply their metrics (runs/eval.gin)")):
    p = sub.add_parser(command, help=help_text, description=launch.usage(command))
    p.add_argument('flags', nargs=argparse.REMAINDER, help='gin flags')
    p.set_defaults(run=_gin_command)

  prep = sub.add_parser('prep', help='turn raw data into task data').add_subparsers(
      dest='dataset', required=True, metavar='DATASET')
  p = prep.add_parser('copoet-instructions',
                      help='poem lines -> CoPoet instruction pairs (JSON Lines)')
  p.add_argument('poem_lines', help='text file: one poem line per line, blank lines between poems')
  p.add_argument('out', help='output JSON Lines file ({"translation": {"en1", "en2"}})')
  p.add_argument('--seed', type=int, default=0)
  p.set_defaults(run=_prep_copoet)

  p = prep.add_parser('haiku', help='haiku text or CSV -> parquet with phonemes and keywords')
  p.add_argument('input', help='.txt (one haiku per line, lines joined by " / "), .csv '
                 '(columns 0-2 are the lines) or .parquet')
  p.add_argument('out', help='output .parquet with the statworx/haiku columns')
  p.add_argument('--source', default=None, help='value of the source column')
  p.set_defaults(run=_prep_haiku)

  p = prep.add_parser('ni', help='Super-NaturalInstructions checkout -> train/test/references '
                      'JSON Lines (Tk-Instruct protocol)')
  p.add_argument('--data', required=True, help='folder with tasks/ and splits/')
  p.add_argument('--out', required=True, help='output folder')
  p.add_argument('--max_train_instances', type=int, default=100)
  p.add_argument('--max_test_instances', type=int, default=100)
  p.add_argument('--split', default='default', help='splits/ subfolder: default or xlingual')
  p.set_defaults(run=_prep_ni)

  score = sub.add_parser('score', help='score prediction files with a paper\'s metric')
  score = score.add_subparsers(dest='benchmark', required=True, metavar='BENCHMARK')
  p = score.add_parser('copoet', help='CoPoet success rate of .output or prediction files')
  p.add_argument('files', nargs='+', help='one file per run; a `t5x serve` session file, or '
                 'a folder of them (one run), scores each chosen suggestion')
  p.add_argument('--mode', choices=('paper', 'strict'), default='paper',
                 help='paper: the paper\'s scorer, quirks included (default); strict: fixed')
  p.add_argument('--json', action='store_true', help='machine-readable output')
  p.set_defaults(run=_score_copoet)

  p = score.add_parser('haiku', help='share of 5-7-5 haiku (and topic words) in a file')
  p.add_argument('file', help='JSON Lines with "prediction" (and "topic") or plain text')
  p.add_argument('--phonemes', action='store_true', help='predictions are phonemes (| syllables)')
  p.add_argument('--json', action='store_true', help='machine-readable output')
  p.set_defaults(run=_score_haiku)

  p = score.add_parser('ni', help='Super-NaturalInstructions: exact match and ROUGE-L')
  p.add_argument('--predictions', help='JSON Lines of {"id", "prediction"}')
  p.add_argument('--references', required=True,
                 help='JSON Lines of {"id", "task_id", "task_category", "references", "track"}')
  p.add_argument('--track', default='default', choices=('default', 'xlingual'))
  p.add_argument('--tokenizer', default=None,
                 help='local GPT-2 tokenizer folder (required for the xlingual track)')
  p.add_argument('--baseline', choices=('copy_input', 'copy_demo'), default=None,
                 help='score a heuristic baseline instead of predictions')
  p.add_argument('--test', default=None, help='test.jsonl from `t5x prep ni` (for --baseline)')
  p.add_argument('--json', action='store_true', help='machine-readable output')
  p.set_defaults(run=_score_ni)

  p = score.add_parser('caption', help='New Yorker caption contest: matching, ranking, '
                       'explanation')
  p.add_argument('--task', required=True, choices=('matching', 'ranking', 'explanation'))
  p.add_argument('--predictions', nargs='+', required=True,
                 help='official {instance_id: prediction} JSON (or t5x infer JSON Lines); '
                 'paper mode merges them, lenient wants one file per split')
  p.add_argument('--data', default=None, help='data folder (default: the configured one)')
  p.add_argument('--split', default='test', choices=('test', 'validation'))
  p.add_argument('--mode', choices=('paper', 'lenient'), default='paper',
                 help='paper: the official eval_crossval.py, quirks included (default); '
                 'lenient: letters read case-blind, stemmed mean ROUGE-L, one file per split')
  p.add_argument('--json', action='store_true', help='machine-readable output')
  p.set_defaults(run=_score_caption)

  p = sub.add_parser('serve', help="CoPoet's collaborative writing page and its JSON API "
                     '(t5x serve --checkpoint MODEL_DIR, then open http://127.0.0.1:8080/)')
  p.add_argument('--checkpoint', required=True,
                 help='MODEL_DIR (latest checkpoint), a checkpoint_<step> folder or a Hugging '
                 'Face folder (export-hf output), or a legacy T5X checkpoint')
  p.add_argument('--vocabulary', default=None,
                 help='SentencePiece model file, for a checkpoint without its spiece.model '
                 '(a T5X checkpoint: the T5 vocabulary it was trained with)')
  p.add_argument('--host', default='127.0.0.1',
                 help='address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens '
                 'it to the network)')
  p.add_argument('--port', type=int, default=8080, help='default 8080; 0 picks a free port')
  p.add_argument('--allowed_host', action='append', default=[], metavar='NAME',
                 help='a Host name (or address) clients reach this server by, besides '
                 'localhost, 127.0.0.1, ::1 and --host; repeatable. Requests naming other '
                 'hosts get 421 (a guard against DNS rebinding)')
  p.add_argument('--log_dir', default='copoet_sessions',
                 help='folder for the session logs, one <uid>.json per poem '
                 '(default ./copoet_sessions)')
  p.add_argument('--max_batch_rows', type=int, default=64,
                 help='sampled rows per shared decode (a power of two >= 8)')
  p.add_argument('--param_dtype', default=None, choices=('float32', 'bfloat16'),
                 help='cast the parameters (bfloat16 halves the memory)')
  p.add_argument('--seed', type=int, default=None,
                 help='seed of the first decode (default: random)')
  p.add_argument('--num_partitions', type=int, default=None,
                 help="split the model over N of this host's devices (T5X's num_partitions), "
                 'for a model larger than one device; the other devices share the rows')
  p.set_defaults(run=_serve)

  p = sub.add_parser('plan', help='per-device memory of a config\'s train step on a simulated '
                     'mesh: t5x plan --gin_file=FILE [--mesh 4x8] [--device_memory_gib 16] '
                     '[--no-compile] [--json OUT] (t5x plan --help for all flags)')
  p.add_argument('flags', nargs=argparse.REMAINDER, help='gin and plan flags')
  p.set_defaults(run=_plan)

  p = sub.add_parser('import-hf', help='Hugging Face T5 folder -> MODEL_DIR checkpoint.')
  p.add_argument('hf_dir', help='folder with config.json and model.safetensors or pytorch_model.bin')
  p.add_argument('model_dir', help='new (or empty) folder to write')
  p.add_argument('--scan_layers', action='store_true',
                 help='write the layers stacked, for training with network.T5Config.scan_layers')
  p.set_defaults(run=_import_hf)

  p = sub.add_parser('export-hf', help='MODEL_DIR checkpoint -> Hugging Face T5 folder.')
  p.add_argument('model_dir', help='MODEL_DIR (latest checkpoint) or one checkpoint_<step> folder')
  p.add_argument('out_dir', help='new (or empty) folder to write')
  p.add_argument('--verify', action=argparse.BooleanOptionalAction, default=True,
                 help='check logits and greedy decodes against transformers (default: on)')
  p.add_argument('--force', action='store_true', help='replace a non-empty OUT_DIR')
  p.set_defaults(run=_export_hf)

  p = sub.add_parser('merge-lora', help='LoRA MODEL_DIR -> plain MODEL_DIR (W + alpha/r * A@B).')
  p.add_argument('model_dir', help='MODEL_DIR trained with LoRA (latest checkpoint) or one '
                 'checkpoint_<step> folder')
  p.add_argument('out_dir', help='new (or empty) folder to write')
  p.set_defaults(run=_merge_lora)

  p = sub.add_parser('import-t5x', help='legacy T5X checkpoint -> MODEL_DIR checkpoint.')
  p.add_argument('checkpoint', help='T5X checkpoint folder or its `checkpoint` file (local or gs://)')
  p.add_argument('model_dir', help='new (or empty) folder to write')
  p.add_argument('--scan_layers', action=argparse.BooleanOptionalAction, default=None,
                 help='write the layers stacked (or not; default: as the checkpoint has them)')
  p.set_defaults(run=_import_t5x)
  return parser


def main(argv=None) -> int:
  """`t5x [--debug] COMMAND ...`; returns the exit code (2: a user error, on one line)."""
  debug, argv = launch.debug_requested(list(sys.argv[1:] if argv is None else argv))
  parser = build_parser()
  if argv[:1] and argv[0] in ('train', 'infer', 'eval') and not {'-h', '--help'} & set(argv[1:]):
    # gin flags look like options to argparse; hand them over untouched.
    args = argparse.Namespace(command=argv[0], run=_gin_command, flags=argv[1:])
  elif argv[:1] == ['plan']:  # its own parser (t5x plan --help) runs in plan.launch
    args = argparse.Namespace(command='plan', run=_plan, flags=argv[1:])
  else:
    args = parser.parse_args(argv)
  log_noise.quiet_start(debug)
  return launch.report_errors(f't5x {args.command}', lambda: args.run(args), debug)


if __name__ == '__main__':
  sys.exit(main())
