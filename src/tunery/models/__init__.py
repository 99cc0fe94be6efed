"""Models: where base models come from (packaged default, HF folder or id, GGUF file), aliases, and the `ft:` naming. Imports nothing else of ours."""
