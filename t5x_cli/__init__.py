"""t5x_cli"""
