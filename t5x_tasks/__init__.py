"""SeqIO tasks and mixtures for CoPoet, Tk-Instruct, the New Yorker caption contest and
Deep Haiku. Imports seqio, never t5x, so the same tasks run under upstream T5X."""
