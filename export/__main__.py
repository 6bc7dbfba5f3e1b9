from bst_rt.export.cli import app

app()
