"""One-off diagnostics of particular policies and rewards (see README.md here): each answered one question
while the shipped policies were trained; docs/experiments.md records the answers. Kept runnable as
`.venv/bin/python bench/diagnostics/<script>.py`; they import only the shared helper `benchutil`."""
