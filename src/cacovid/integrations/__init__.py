"""Bridges from cacovid to other evaluation tools (above `evaluate/`: they reuse its methods).

- `cacovid.integrations.lmms_eval`: cacovid as an lmms-eval model, `--model cacovid` (needs
  `pip install cacovid[eval]`; registered through lmms-eval's `lmms_eval.models` entry points).
"""
