"""The encoder: what a model is, read from its files without loading it (``settings``), building and adjusting a
SimCSE model of built-in modules (``build``), and the paper's released models and baselines (``released``). The
public names are re-exported by ``st_simcse`` itself."""
