"""Reporting: the tables, figures and words of each notebook, made from the typed results its stage
computed (``helpers.stages``). One module per stage; a report module may read its own stage's results and
the shared words (``helpers.stages.words``), never another report module, and computes nothing new."""
