"""Training data, the layer below training and evaluation: the formats read (``formats``), reading any source
(``readers``), unlabeled corpora (``corpus``), unsupervised pairs (``unsupervised``), labelled pairs and triplets
(``labelled``), the views of the positive (``augmentation``), hard-negative mining (``mining``), the Trainer's collator
(``collator``) and what a corpus holds (``report``). It imports nothing of evaluation or training. The public names are
re-exported by ``st_simcse`` itself."""
