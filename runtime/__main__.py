from bst_rt.runtime.cli import app

app()
