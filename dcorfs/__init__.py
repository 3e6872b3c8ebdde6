"""dcorfs: DCOR as a folder of NumPy files."""
__version__ = "0.1.0"
