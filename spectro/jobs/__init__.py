"""The job layer: command line, job configs, results folders, resume, export, builtin models.

Above the library (systems, engine, analysis), which imports nothing from here
(docs/design.md §1). ``spectro run CONFIG --out DIR`` runs a job of either system; ``spectro
ising ...`` and ``spectro nn ...`` are its aliases.
"""
