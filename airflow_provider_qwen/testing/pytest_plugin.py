"""pytest plugin (entry point ``qwen_emulator``): fixtures that run the AI/ML API emulator."""
