"""Small models and numpy batches for trainer tests (no SeqIO, no TensorFlow)."""
import numpy as np

from t5x import models
from t5x import optimizers
from t5x import partitioning
from t5x import train
from t5x import utils
from t5x.examples.t5.network import T5Config, Transformer


def tiny_config(**kw) -> T5Config:
  """Dims divisible by 8, so every mesh of 8 devices can shard every axis."""
  base = dict(vocab_size=128, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
              num_encoder_layers=2, num_decoder_layers=2, mlp_activations=('gelu', 'linear'),
              logits_via_embedding=False, dropout_rate=0.0)
  base.update(kw)
  return T5Config(**base)


def tiny_model(optimizer_def=None, **kw) -> models.EncoderDecoderModel:
  return models.EncoderDecoderModel(
      Transformer(tiny_config(**kw)), optimizer_def=optimizer_def or optimizers.adafactor(),
      loss_normalizing_factor='NUM_REAL_TARGET_TOKENS')


def numpy_batch(seed: int, batch: int = 8, length: int = 16, vocab: int = 128) -> dict:
  """One unpacked batch as EncDecFeatureConverter makes it, padding tails included."""
  rng = np.random.RandomState(seed)
  enc = rng.randint(2, vocab, (batch, length)).astype(np.int32)
  tgt = rng.randint(2, vocab, (batch, length)).astype(np.int32)
  for i in range(batch):
    enc[i, rng.randint(4, length):] = 0
    tgt[i, rng.randint(4, length):] = 0
  dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1)
  return dict(encoder_input_tokens=enc, decoder_input_tokens=dec, decoder_target_tokens=tgt,
              decoder_loss_weights=(tgt > 0).astype(np.int32))


def numpy_dataset(batch_size: int = 8):
  """A `get_dataset_fn` for train(): deterministic batches, honouring skip_batches."""
  def get_dataset(cfg, num_epochs=None, skip_batches=0):
    count = 4 if num_epochs == 1 else None
    i = skip_batches
    while count is None or i < count:
      yield numpy_batch(1000 + i, batch=batch_size)
      i += 1
  return get_dataset


def numpy_run(model_dir, model=None, steps=6, period=2, keep=None, use_async=False,
              stats_period=1, **kw):
  """The final TrainState of `train.train` on numpy batches, one device, checkpoints
  every `period` steps into model_dir (a run there before is resumed)."""
  kw.setdefault('get_dataset_fn', numpy_dataset())
  kw.setdefault('checkpoint_cfg', utils.CheckpointConfig(save=utils.SaveCheckpointConfig(
      period=period, keep=keep, use_async=use_async)))
  return train.train(
      model=model or tiny_model(), train_dataset_cfg=utils.DatasetConfig(
          'numpy', {}, 'train', 8, True, 0),
      partitioner=partitioning.PjitPartitioner(1), model_dir=str(model_dir), total_steps=steps,
      show_progress=False, stats_period=stats_period, **kw)
