"""t5x/lora"""
