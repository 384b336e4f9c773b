"""t5x/memory"""
