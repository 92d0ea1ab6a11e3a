"""The recipes' machinery, the top layer: nothing else in st_simcse imports it. A recipe's options and their checks
(``options``, ``checks``, ``reporting``: no heavy library, so a refusal is fast), its run and output folder (``run``,
``lock``), how its command ends (``command``, ``signals``), the training paths and their callbacks (``paths``,
``callbacks``, ``checkpoints``), model selection and the final report (``selection``, ``reports``), the model card
(``model_card``), the trackers and the hub (``trackers``, ``publish``), several seeds (``seeds``), and the loop that
ties them (``loop``). The recipes themselves are scripts beside the package, in ``recipes/``."""
