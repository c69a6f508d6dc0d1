"""Audit tools: replay inputs (a .jsonl file or a journal) and reproduce outputs and state."""
