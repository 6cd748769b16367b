"""`edgedet-train compare`: several detector configs trained, exported and measured side by side.

settings.py loads and aligns the configs, model_run.py trains and exports one model,
measure.py and graph.py / latency.py make its row, page.py renders compare.html, and
command.py is the subcommand.
"""
