"""t5x/serving"""
