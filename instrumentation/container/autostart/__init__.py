"""The directory coldtail-instrument puts first on PYTHONPATH: it holds only sitecustomize.py,
and is a package so that it is installed with coldtail."""
