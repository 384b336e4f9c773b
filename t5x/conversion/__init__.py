"""t5x/conversion"""
