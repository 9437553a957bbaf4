"""GGUF conversion: write merged weights as GGUF and check the result. Knows GGUF, not chat."""
