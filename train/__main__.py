from bst_rt.train.cli import app

app()
