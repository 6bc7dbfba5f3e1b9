from bst.runtime.cli import app

app()
