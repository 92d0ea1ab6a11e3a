"""Evaluation, the layer beside training that imports nothing of it: the paper's STS tasks as data (``sts``), the
user's scored pairs (``pairs``), the sentence-transformers evaluators that judge a model on them (``evaluators``), the
paper's ``simcse`` tool (``tool``), the PNG plots (``plots``) and the ``st-simcse-evaluate`` command (``command``).
The public names are re-exported by ``st_simcse`` itself."""
