from bst.train.cli import app

app()
