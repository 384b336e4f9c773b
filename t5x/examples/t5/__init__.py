"""t5x/examples/t5"""
