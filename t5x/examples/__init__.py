"""t5x/examples"""
