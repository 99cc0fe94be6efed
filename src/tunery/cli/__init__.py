"""The `tunery` command. Each sub-module owns one group of commands; main.py assembles them."""
