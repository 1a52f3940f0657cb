"""Tools for the scripts that read run directories: curves and statistics (`curves`), markdown
tables (`tables`), figures (`plots`), results pages (`pages`) and training diagnostics
(`diagnose`). The training package never imports this one, so it needs no plotting library.
"""
