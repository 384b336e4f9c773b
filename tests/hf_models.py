"""Random-weight transformers T5 models for parity tests (two variants, two sizes)."""
import numpy as np
import torch
import transformers

# name -> transformers.T5Config kwargs. 'small' keeps the default max distance (128);
# 'medium' lowers it so sequences of 40+ tokens reach the capped log buckets.
SIZES = {
    'small': dict(vocab_size=101, d_model=16, d_kv=4, d_ff=32, num_layers=2,
                  num_decoder_layers=2, num_heads=4),
    'medium': dict(vocab_size=257, d_model=48, d_kv=8, d_ff=96, num_layers=3,
                   num_decoder_layers=2, num_heads=6, relative_attention_max_distance=20),
}
VARIANTS = {
    't5_1_0': dict(feed_forward_proj='relu', tie_word_embeddings=True),
    't5_1_1': dict(feed_forward_proj='gated-gelu', tie_word_embeddings=False),
}


def make(variant: str, size: str, seed: int = 0) -> transformers.T5ForConditionalGeneration:
  """An eval-mode T5 with random weights; T5 1.1's head gets values of its own (untied)."""
  torch.manual_seed(seed)
  config = transformers.T5Config(**SIZES[size], **VARIANTS[variant], dropout_rate=0.0)
  model = transformers.T5ForConditionalGeneration(config)
  if not VARIANTS[variant]['tie_word_embeddings']:
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
  # Layer norms start at 1.0; random scales make the parity test see them.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'layer_norm' in name:
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
  return model.eval()


def padded_batch(vocab: int, seed: int = 0):
  """(encoder ids [3, 41], decoder inputs [3, 37]) with padding tails of different lengths."""
  rng = np.random.RandomState(seed)
  enc = rng.randint(2, vocab, (3, 41)).astype(np.int32)
  enc[0, 30:] = 0
  enc[2, 7:] = 0
  dec = rng.randint(2, vocab, (3, 37)).astype(np.int32)
  dec[:, 0] = 0
  dec[1, 19:] = 0
  return enc, dec


def hf_logits(model, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(input_ids=torch.tensor(enc, dtype=torch.long),
                 attention_mask=torch.tensor(enc != 0, dtype=torch.long),
                 decoder_input_ids=torch.tensor(dec, dtype=torch.long)).logits.numpy()


def state_dict(model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
