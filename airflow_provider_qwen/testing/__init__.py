"""Test support shipped with the provider: an AI/ML API emulator and a pytest plugin."""
