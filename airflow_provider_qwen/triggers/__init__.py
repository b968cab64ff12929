"""The triggers of the deferrable Qwen operators."""
